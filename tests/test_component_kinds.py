"""Objectives, tasks and backends are components; older config forms map to them and say so."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from masters.config import validate_run_spec
from masters.errors import ConfigNote, SpecError
from masters.plugins import get_components
from masters.registry import KINDS

MODELS = {"teacher": "/models/teacher", "student": "/models/student"}


def notes_of(config: dict) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = validate_run_spec(config)
    return spec, [str(w.message) for w in caught if issubclass(w.category, ConfigNote)]


def test_seven_kinds_each_with_its_builtins():
    comps = get_components()
    assert KINDS == ("masker", "schedule", "reward", "adapter", "objective", "task", "backend")
    assert {"masters", "progressive_kd", "naive_kd", "sft"} <= set(comps.registry("objective").names())
    assert {"shapes", "llava_json", "hf_datasets"} <= set(comps.registry("task").names())
    assert "hf" in comps.registry("backend").names()


def test_the_new_form_defaults_to_the_papers_objective_the_shapes_task_and_the_hf_backend():
    spec, notes = notes_of(MODELS)
    assert (spec.objective.name, spec.task.name, spec.backend.name) == ("masters", "shapes", "hf")
    assert [r.name for r in spec.rewards] == ["exact_match", "jsd_distill"]  # the task's default + distillation
    assert notes == []


@pytest.mark.parametrize("method", ["masters", "sft", "naive_kd", "progressive_kd"])
def test_training_method_is_shorthand_for_the_objective_and_prints_the_new_form(method):
    spec, notes = notes_of({**MODELS, "training": {"method": method, "learning_rate": 1e-4}})
    assert spec.objective.name == method and spec.training.learning_rate == 1e-4
    assert len(notes) == 1 and f"training.method: {method}" in notes[0] and f"name: {method}" in notes[0]


def test_fixed_mask_is_masters_with_a_constant_schedule_at_r_max():
    spec, notes = notes_of({**MODELS, "schedule": {"name": "staircase", "r_max": 0.3, "step": 0.1},
                            "training": {"method": "fixed_mask", "beta": 0.05}})
    assert spec.objective.name == "masters" and spec.objective.beta == 0.05
    assert spec.schedule.name == "constant" and float(spec.schedule.r_max) == 0.3
    assert "name: constant" in notes[0]


def test_masters_no_distill_reward_drops_the_distillation_rewards():
    spec, notes = notes_of({**MODELS, "training": {"method": "masters_no_distill_reward"}})
    assert spec.objective.name == "masters" and [r.name for r in spec.rewards] == ["exact_match"]
    assert "rewards:" in notes[0]


def test_objective_fields_written_under_training_move_and_errors_name_where_they_were_written():
    spec, _ = notes_of({**MODELS, "training": {"negative_advantages": "zero", "distill_loss_weight": 0.5}})
    assert (spec.objective.negative_advantages, spec.objective.distill_loss_weight) == ("zero", 0.5)
    with pytest.raises(SpecError) as caught:
        validate_run_spec({**MODELS, "training": {"beta": -1}}, notes=False)
    assert [loc for loc, _ in caught.value.problems] == ["training.beta"]


def test_a_field_the_objective_lacks_is_dropped_with_a_note():
    spec, notes = notes_of({**MODELS, "training": {"method": "sft", "beta": 0.3}})
    assert spec.objective.name == "sft" and "training.beta dropped" in notes[0]


def test_data_source_is_shorthand_for_the_task():
    spec, notes = notes_of({**MODELS, "data": {"source": "shapes", "n_train": 7}})
    assert spec.task.name == "shapes" and spec.task.n_train == 7
    assert "task:" in notes[0] and "name: shapes" in notes[0]


@pytest.mark.parametrize("config, where", [
    ({"training": {"method": "sft"}, "objective": "sft"}, "training.method"),
    ({"data": {"source": "shapes"}, "task": "shapes"}, "data"),
    ({"training": {"method": "sfft"}}, "training.method"),
])
def test_both_forms_at_once_or_an_unknown_method_is_refused_at_its_place(config, where):
    with pytest.raises(SpecError) as caught:
        validate_run_spec({**MODELS, **config}, notes=False)
    assert caught.value.problems[0][0] == where


def test_unknown_objective_task_or_backend_gets_did_you_mean():
    for field, typo, right in (("objective", "naive_k", "naive_kd"), ("task", "shape", "shapes"), ("backend", "hff", "hf")):
        with pytest.raises(SpecError) as caught:
            validate_run_spec({**MODELS, field: typo})
        assert f"Did you mean: {right}?" in caught.value.problems[0][1]


def test_objectives_declare_what_they_need():
    by_name = {n: get_components().registry("objective").get(n).spec_cls() for n in ("masters", "sft", "naive_kd")}
    masters, sft, naive = (by_name[n].requirements() for n in ("masters", "sft", "naive_kd"))
    assert masters.responses == "bank" and masters.teacher == "schedule"
    assert {"accuracy_rewards", "distillation_reward", "reference_logprobs", "group_index"} <= masters.signals
    assert sft.teacher == "none" and sft.signals == {"student_logprobs"}
    assert naive.responses == "reference" and naive.teacher == "unmasked"
    no_kl = type(by_name["masters"])(beta=0).requirements()
    assert "reference_logprobs" not in no_kl.signals  # beta 0: no reference pass at all


# The demo's stage identities before objectives, tasks and backends became components (computed on
# the commit before that change): finished demo stages and cached models must stay valid.
DEMO_IDENTITIES = {
    "masters": {"generate": "0867b5236f5dc736", "score": "55a390f45c8f40e5", "train": "13f86528f48f292b",
                "evaluate": "fbdd99aec9e91a8b"},
    "sft": {"generate": "3dbad430387330fc", "score": "ab78a021d54c9f5c", "train": "127d150774039bbb",
            "evaluate": "760760238fe29617"},
    "naive_kd": {"generate": "ece68c1a2e62c86a", "score": "e8abad8dfc2ec5cb", "train": "763dee9526ebc972",
                 "evaluate": "9660fc9611cb1adc"},
}
DEMO_MODEL_KEYS = {"teacher": "dbe4365d3004", "student": "712b138ec609"}


def test_the_demos_stage_identities_do_not_change():
    from masters.demo import run as demo
    from masters.demo.spec import DemoSpec
    from masters.engine.pipeline import stage_identity

    spec = DemoSpec()
    for method, expected in DEMO_IDENTITIES.items():
        run = demo._distill_spec(spec, method, Path("/cache/teacher/model"), Path("/cache/student/model"))
        assert {stage: stage_identity(run, stage) for stage in expected} == expected, method
    assert {role: demo.model_key(spec, role, getattr(spec, role)) for role in DEMO_MODEL_KEYS} == DEMO_MODEL_KEYS


def test_older_and_newer_forms_of_one_run_have_one_identity():
    from masters.engine.pipeline import stage_identity

    old = validate_run_spec({**MODELS, "data": {"source": "shapes", "n_train": 9},
                             "training": {"method": "naive_kd", "distill_loss_weight": 0.5}}, notes=False)
    new = validate_run_spec({**MODELS, "task": {"name": "shapes", "n_train": 9},
                             "objective": {"name": "naive_kd", "distill_loss_weight": 0.5}})
    assert all(stage_identity(old, s) == stage_identity(new, s) for s in ("generate", "score", "train", "evaluate"))


def test_sft_never_loads_a_teacher(tiny_pair, tmp_path, monkeypatch):
    """The teacher path does not even exist: SFT must train without touching it."""
    import masters.adapters.resolve as resolve
    from masters.engine.trainer import train

    _, student = tiny_pair
    loaded: list[str] = []
    real = resolve.resolve_adapter

    def spy(model, *args, **kwargs):
        loaded.append(str(getattr(model, "path", model)))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(resolve, "resolve_adapter", spy)
    spec = validate_run_spec({
        "output_dir": str(tmp_path), "teacher": str(tmp_path / "no-such-teacher"), "student": str(student),
        "task": {"name": "shapes", "n_train": 4, "n_validation": 0, "n_test": 2}, "objective": "sft",
        "training": {"learning_rate": 1e-3, "questions_per_step": 2, "checkpoint_every": 10}})
    result = train(spec, progress=False)
    assert loaded == [str(student)] and result.steps == 2
    components = json.loads((result.student_dir / "masters_run.json").read_text())["components"]
    assert components["objective"] == "sft" and components["adapters"] == {"student": "llava"}
