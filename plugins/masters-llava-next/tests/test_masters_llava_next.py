"""masters-llava-next: found as an installed plugin, claimed by model_type, conformant, and usable in
a ``masters run`` whose images have different sizes (so different image-token counts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from masters.testing import CHECKS, run_check

DISTRIBUTION = "masters-llava-next"
ENTRY_POINT = "llava_next"
ADAPTER = "llava_next"


# -- found and loaded like any installed plugin --------------------------------------------------


def test_entry_point_comes_from_installed_metadata(distribution):
    from importlib import metadata

    (ep,) = [ep for ep in metadata.entry_points(group="masters") if ep.name == ENTRY_POINT]
    assert ep.value == "masters_llava_next.hooks"
    assert ep.dist.metadata["Name"] == DISTRIBUTION


def test_allow_listing_registers_the_adapter_from_its_distribution(components, distribution):
    origin = components.registry("adapter").origin(ADAPTER)
    assert (origin.plugin, origin.distribution, origin.version) == (ENTRY_POINT, DISTRIBUTION, distribution.version)
    assert components.plugins[ENTRY_POINT].registers == {"adapter": [ADAPTER]}
    assert not components.failures


def test_listing_imports_no_torch_and_the_package_imports_only_masters_api(distribution):
    code = textwrap.dedent("""
        import sys
        import masters_llava_next.hooks, masters_llava_next.spec
        from masters.testing import allow_plugins
        with allow_plugins("llava_next") as c:
            assert "llava_next" in c.registry("adapter").names()
        assert "torch" not in sys.modules and "transformers" not in sys.modules, "torch imported"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    import ast
    from pathlib import Path

    import masters_llava_next

    for path in Path(masters_llava_next.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        used = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert {m for m in used if m.split(".")[0] == "masters"} <= {"masters.api"}, path.name


def test_checkpoint_is_claimed_by_model_types_alone(components, tiny_pair):
    from masters.api import adapter_spec_for, resolve_adapter

    import masters_llava_next.hooks as hooks

    assert not hasattr(hooks, "masters_claim_checkpoint")  # the spec's model_types is the whole claim
    teacher, student = tiny_pair
    assert adapter_spec_for(teacher).name == ADAPTER
    adapter = resolve_adapter(student)
    assert type(adapter).__name__ == "LlavaNextAdapter"


def test_the_family_overrides_no_private_method():
    from masters.api import HFVLMAdapter

    from masters_llava_next.adapter import LlavaNextAdapter

    own = [n for n in vars(LlavaNextAdapter) if n.startswith("_") and not n.startswith("__")]
    assert own == [] and issubclass(LlavaNextAdapter, HFVLMAdapter)


# -- the conformance kit -------------------------------------------------------------------------


@pytest.mark.parametrize("check", CHECKS)
def test_conformance(components, check):
    run_check(ADAPTER, check)  # on LlavaNextAdapter.tiny_checkpoint(), built once per process


# -- anyres: the image-token count follows the image size ------------------------------------------


# (width, height) -> image tokens, worked out by hand for 32 px tiles of 8 px patches (4 x 4 features
# per tile) and pinpoints 32x64, 64x32, 64x64: the base tile (16) + the best grid's features after
# cutting the letterbox padding + one newline per feature row.
HAND_COUNTS = {(32, 32): 16 + 4 * 4 + 4, (64, 32): 16 + 4 * 8 + 4, (48, 48): 16 + 8 * 8 + 8}


def _sample(width: int, height: int, sample_id: str = "s"):
    from PIL import Image

    from masters.api import VQASample

    return VQASample(f"{sample_id}-{width}x{height}", (Image.new("RGB", (width, height), (200, 30, 30)),),
                     "what color is the circle ?", "red")


def test_image_tokens_follow_the_image_size(components, tiny_pair):
    from masters.api import resolve_adapter

    from masters_llava_next.adapter import image_tokens

    adapter = resolve_adapter(tiny_pair[1])
    samples = [_sample(w, h) for w, h in HAND_COUNTS]
    batch = adapter.encode(samples)
    counts = (batch.inputs["input_ids"] == adapter.image_token_id()).sum(1).tolist()
    assert counts == list(HAND_COUNTS.values())
    assert [image_tokens((h, w), tile=32, patch=8, pinpoints=[[32, 64], [64, 32], [64, 64]])
            for w, h in HAND_COUNTS] == counts


def test_processor_that_tiles_differently_from_the_model_fails_fast(components, tiny_pair):
    from masters.api import ImageTokenMismatchError, resolve_adapter

    adapter = resolve_adapter(tiny_pair[1])
    # the processor now puts a 48 px square on 2 tiles (36 tokens); the model still picks 4 (88)
    adapter.processor.image_processor.image_grid_pinpoints = [[32, 64]]
    with pytest.raises(ImageTokenMismatchError) as err:
        adapter.teacher_force([_sample(48, 48, "square")], [[5, adapter.eos_token_ids[0]]])
    assert "square-48x48" in str(err.value) and "36 image tokens" in str(err.value) and "88" in str(err.value)


# -- a tiny `masters run` with teacher and student both LLaVA-NeXT -------------------------------


def test_masters_run_distils_llava_next_on_images_of_different_sizes(tiny_pair, tmp_path, distribution):
    from PIL import Image

    teacher, student = tiny_pair
    sizes = [(32, 32), (64, 32), (40, 56), (48, 48), (56, 40), (32, 64), (64, 64), (44, 36)]
    colors = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30)}
    records = []
    for i, (w, h) in enumerate(sizes):
        color = list(colors)[i % 3]
        Image.new("RGB", (w, h), colors[color]).save(tmp_path / f"{i}.png")
        records.append({"id": f"r{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat color is the circle ?"}, {"from": "gpt", "value": color}]})
    (tmp_path / "data.json").write_text(json.dumps(records))
    out = tmp_path / "run"
    config = {
        "output_dir": str(out), "teacher": str(teacher), "student": str(student),
        "schedule": {"name": "staircase", "r_max": 0.1, "step": 0.05},
        "task": {"name": "llava_json", "path": str(tmp_path / "data.json"), "image_root": str(tmp_path),
                 "validation_fraction": 0, "test_fraction": 0.3},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 3, "batch_size": 4},
        "training": {"n_teacher": 1, "n_student": 1, "questions_per_step": 1, "learning_rate": 1e-3},
    }
    (tmp_path / "run.json").write_text(json.dumps(config))  # YAML is a superset of JSON
    env = {**os.environ, "MASTERS_DISABLE_PLUGIN_AUTOLOAD": "1", "MASTERS_PLUGINS": ENTRY_POINT,
           "MASTERS_STRICT_PLUGINS": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "masters.cli", "run", str(tmp_path / "run.json")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((out / "student" / "masters_adapter.json").read_text()) == {"adapter": ADAPTER}
    record = json.loads((out / "student" / "masters_run.json").read_text())
    assert record["provenance"]["plugins"][DISTRIBUTION] == distribution.version
    assert record["steps"] > 0
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) == {"generate", "score", "train", "evaluate"}
    assert stages["generate"]["summary"]["rows_written"] > 0
