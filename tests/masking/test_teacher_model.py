"""A real (tiny) VLM teacher: scope by part, errors for bad scopes, checkpoint bytes, export command."""

from __future__ import annotations

import json

import pytest
import torch

from masters.errors import MastersError
from masters.masking.export import load_model
from masters.masking.runtime import MaskedTeacher
from masters.masking.scope import find_maskable, select_scope, unwrap_model
from masters.config import validate_component


@pytest.fixture
def teacher_model(tiny_vlm_dir):
    return load_model(tiny_vlm_dir)


def test_default_scope_covers_vision_projector_and_language_linears_only(teacher_model):
    parts = find_maskable(teacher_model)
    assert all(parts[p] for p in ("vision", "projector", "language"))
    names = [n for part in parts.values() for n in part]
    assert all(n.endswith(".weight") for n in names)
    assert not any("embed" in n or "norm" in n or "lm_head" in n for n in names)
    assert all(".merger." in n for n in parts["projector"])
    assert all(t.dim() == 2 for part in parts.values() for t in part.values())


def test_scope_errors_name_the_field_and_the_fix(teacher_model):
    maskable = find_maskable(teacher_model)
    spec = validate_component("masker", {"name": "magnitude", "include": ["*no_such_layer*"]})
    with pytest.raises(MastersError) as info:
        select_scope(maskable, spec)
    assert info.value.where == "masker.include[0]" and info.value.fix
    spec = validate_component("masker", {"name": "magnitude", "exclude": ["*.q_proj.weight", "*nothing*"]})
    with pytest.raises(MastersError, match="matches no maskable tensor") as info:
        select_scope(maskable, spec)
    assert info.value.where == "masker.exclude[1]"
    with pytest.raises(MastersError, match="no maskable tensor") as info:
        select_scope({"language": maskable["language"]}, validate_component("masker", {"name": "magnitude", "parts": ["vision"]}))
    assert info.value.where == "masker.parts[0]"


def test_parts_and_patterns_select_the_scope(teacher_model):
    maskable = find_maskable(teacher_model)
    spec = validate_component("masker", {"name": "magnitude", "parts": ["language"], "exclude": ["*mlp*"]})
    chosen = select_scope(maskable, spec)
    assert chosen and all(part == "language" and "mlp" not in n for n, (part, _) in chosen.items())


def test_masked_then_restored_teacher_saves_the_same_checkpoint_bytes(teacher_model, tmp_path):
    teacher_model.save_pretrained(tmp_path / "before")
    teacher = MaskedTeacher.from_model(teacher_model, validate_component("masker", "magnitude"), ["0.2", "0.1"])
    for level in ("0.2", "0.1", "0.2", "0"):
        teacher.set_level(level)
    teacher_model.save_pretrained(tmp_path / "after")
    before, after = (tmp_path / "before" / "model.safetensors"), (tmp_path / "after" / "model.safetensors")
    assert before.read_bytes() == after.read_bytes()


def test_tied_weights_are_masked_once(teacher_model):
    lin = torch.nn.Linear(16, 16, bias=False)
    tensors = {"a.weight": lin.weight, "b.weight": lin.weight}
    original = lin.weight.detach().clone()
    teacher = MaskedTeacher(tensors, validate_component("masker", "magnitude").build(), ["0.25"])
    teacher.set_level("0.25")
    assert int((lin.weight == 0).sum()) == 64  # 25% of 256, not 25% and then 25% of the rest
    assert teacher.report().tensors[0].aliases == ("b.weight",)
    teacher.restore()
    assert torch.equal(lin.weight, original)


def test_ddp_wrapper_is_unwrapped():
    class DistributedDataParallel(torch.nn.Module):  # stands in for the real wrapper's shape
        def __init__(self, module):
            super().__init__()
            self.module = module

    inner = torch.nn.Sequential(torch.nn.Linear(8, 8))
    assert unwrap_model(DistributedDataParallel(inner)) is inner


def test_on_the_fly_teacher_forward_is_masked_and_weights_untouched(teacher_model):
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        plain = teacher_model(input_ids=ids).logits
    before = {k: v.clone() for k, v in teacher_model.state_dict().items()}
    teacher = MaskedTeacher.from_model(teacher_model, validate_component("masker", "magnitude"), ["0.3"],
                                       memory="on_the_fly")
    teacher.set_level("0.3")
    with torch.no_grad():
        masked = teacher_model(input_ids=ids).logits
    assert not torch.equal(plain, masked)
    assert all(torch.equal(v, before[k]) for k, v in teacher_model.state_dict().items())
    teacher.close()
    with torch.no_grad():
        assert torch.equal(teacher_model(input_ids=ids).logits, plain)


def _config(tmp_path, teacher_dir, extra=""):
    path = tmp_path / "run.yaml"
    path.write_text(f"teacher: {teacher_dir}\nstudent: {teacher_dir}\n{extra}")
    return path


def test_mask_command_writes_a_loadable_checkpoint_and_report(tiny_vlm_dir, tmp_path, capsys):
    from masters.cli import main

    out = tmp_path / "masked"
    assert main(["mask", str(_config(tmp_path, tiny_vlm_dir)), "--level", "0.2", "--out", str(out)]) == 0
    report = json.loads((out / "masking_report.json").read_text())
    assert report["level_bp"] == 2000 and abs(report["ratio"] - 0.2) < 1e-3
    reloaded = load_model(out)
    name = report["tensors"][0]["name"]
    weight = dict(reloaded.named_parameters())[name]
    assert int((weight == 0).sum()) == report["tensors"][0]["masked"]
    assert main(["mask", str(_config(tmp_path, tiny_vlm_dir)), "--level", "0.2", "--out", str(out)]) == 2  # never overwrites


def test_mask_command_rejects_a_bad_level(tiny_vlm_dir, tmp_path, capsys):
    from masters.cli import main

    assert main(["mask", str(_config(tmp_path, tiny_vlm_dir)), "--level", "1.2", "--out", str(tmp_path / "x")]) == 2
    assert "fix:" in capsys.readouterr().err
