"""The temperature control (issue 13): the unmasked teacher's logits divided by T_r at level r,
standing where a masked teacher stands, with entropy-matched temperatures."""

from __future__ import annotations

import pytest
import torch

from masters.config import validate_component, validate_run_spec
from masters.errors import MastersError
from masters.masking.runtime import MaskedTeacher
from masters.ratios import Ratio


def _teacher(path):
    from masters.adapters.resolve import resolve_adapter

    adapter = resolve_adapter(str(path))
    adapter.model.eval()
    return adapter


def _logits(adapter, samples, responses):
    with torch.no_grad():
        return adapter.teacher_force(samples, responses).logits.float()


@pytest.fixture(scope="module")
def samples():
    from masters.data import load_splits

    return list(load_splits(validate_component("task", {"name": "shapes", "n_train": 4, "n_test": 1}))["train"])


def test_levels_divide_the_logits_and_level_0_is_the_teacher_bit_for_bit(tiny_pair, samples):
    teacher = _teacher(tiny_pair[0])
    responses = teacher.response_ids([s.answer for s in samples])
    base = _logits(teacher, samples, responses)
    spec = validate_component("masker", {"name": "temperature", "temperatures": {"0.1": 1.5, "0.2": 2.0}})
    tempered = MaskedTeacher.from_model(teacher.model, spec, ["0.2", "0.1", "0"])
    weights = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    tempered.set_level("0.2")
    assert tempered.temperature == 2.0
    assert torch.allclose(_logits(teacher, samples, responses), base / 2.0, rtol=0, atol=1e-6)
    tempered.set_level("0.1")
    assert torch.allclose(_logits(teacher, samples, responses), base / 1.5, rtol=0, atol=1e-6)
    tempered.set_level(Ratio(0))
    assert torch.equal(_logits(teacher, samples, responses), base)
    # the weights are never touched; close removes the hook
    assert all(torch.equal(v, weights[k]) for k, v in teacher.model.state_dict().items())
    assert tempered.report().masked == 0
    tempered.set_level("0.2")
    tempered.close()
    assert torch.equal(_logits(teacher, samples, responses), base)
    with pytest.raises(MastersError, match="not planned"):
        tempered.set_level("0.3")


def test_a_level_without_a_temperature_and_a_level_0_other_than_1_are_refused(tiny_pair):
    teacher = _teacher(tiny_pair[0])
    spec = validate_component("masker", {"name": "temperature", "temperatures": {"0.1": 1.5}})
    with pytest.raises(MastersError, match="no temperature for level") as info:
        MaskedTeacher.from_model(teacher.model, spec, ["0.2", "0.1", "0"])
    assert info.value.where == "masker.temperatures" and "match_temperatures" in info.value.fix
    with pytest.raises(MastersError, match="teacher itself"):
        validate_component("masker", {"name": "temperature", "temperatures": {"0": 1.2}})


def test_export_refuses_a_logit_perturbation(tiny_pair, tmp_path):
    from masters.masking.export import export_masked_checkpoint

    spec = validate_component("masker", {"name": "temperature", "temperatures": {"0.1": 1.5}})
    with pytest.raises(MastersError, match="not its weights"):
        export_masked_checkpoint(tiny_pair[0], tmp_path / "out", spec, "0.1")
    assert not (tmp_path / "out").exists()


def test_matched_temperatures_reach_the_masked_teachers_entropy(tiny_pair, tmp_path):
    from masters.engine.generation import check_tokenizers
    from masters.engine.probe import _forced, _mean_entropy
    from masters.engine.temperature_match import match_temperatures

    teacher_path, student_path = tiny_pair
    spec = validate_run_spec({"output_dir": str(tmp_path / "run"), "teacher": str(teacher_path),
                              "student": str(student_path), "rewards": ["exact_match"],
                              "task": {"name": "shapes", "n_train": 4, "n_validation": 24, "n_test": 1}})
    table = match_temperatures(spec, [0.2, 0.4], n=24, batch_size=24)
    assert [r["level"] for r in table.rows] == [0.2, 0.4]
    for row in table.rows:
        assert row["entropy_matched"] == pytest.approx(row["entropy"], abs=1e-5)
    # the same temperatures, applied by the temperature masker, give those entropies in a forward pass
    teacher = _teacher(teacher_path)
    from masters.data import load_splits

    validation = list(load_splits(spec.task)["validation"])[:24]
    responses = teacher.response_ids([s.answer for s in validation])
    masker = validate_component("masker", {"name": "temperature", "temperatures": table.temperatures})
    tempered = MaskedTeacher.from_model(teacher.model, masker, ["0.4", "0.2", "0"])
    try:
        for row in table.rows:
            tempered.set_level(row["level"])
            with torch.no_grad():
                logits, mask = _forced(teacher, validation, responses, check_tokenizers(spec), 24)
            assert _mean_entropy(logits, mask) == pytest.approx(row["entropy"], abs=1e-4)
    finally:
        tempered.close()
