"""masters demo --task shapes_reason: its runs are valid configs, and misuse is one clear error (exit 2).
The demo itself builds the testbed's models (about 40 min on two cores): it runs from the README, not here."""

from __future__ import annotations

from pathlib import Path

from masters.config import validate_run_spec
from masters.demo.reason import RUNS, run_config


def test_each_run_is_a_valid_config_sharing_one_bank(tmp_path):
    models = {"teacher": tmp_path / "models" / "teacher", "student": tmp_path / "models" / "student"}
    specs = [validate_run_spec(run_config(tmp_path, models, method, 0.4)) for method in RUNS]
    assert [s.objective.name for s in specs] == ["sft", "masters"]
    assert {str(s.bank_dir) for s in specs} == {str(tmp_path / "bank")}
    assert float(specs[1].schedule.r_max) == 0.4 and specs[1].task.name == "shapes_reason"
    assert len({Path(s.output_dir) for s in specs}) == 2


def test_shapes_demo_options_are_refused_with_the_reasoning_task(capsys):
    from masters.cli import main

    assert main(["demo", "--task", "shapes_reason", "--config", "configs/demo.yaml"]) == 2
    err = capsys.readouterr().err
    assert "--config and --cache belong to the shapes demo" in err and "fix" in err


def test_the_demo_keeps_the_testbed_configs_method_settings(tmp_path):
    """The installed package cannot read configs/, so the demo carries its own copy of
    configs/shapes-reason.yaml's settings; this keeps the two from drifting apart (the demo's own
    choices, its split sizes and learning rate, are left out)."""
    from masters.config import load_run_spec

    shipped = load_run_spec(Path(__file__).resolve().parents[1] / "configs" / "shapes-reason.yaml")
    models = {"teacher": tmp_path / "teacher", "student": tmp_path / "student"}
    demo = validate_run_spec(run_config(tmp_path, models, "masters", float(shipped.schedule.r_max)))
    for field in ("masker", "schedule", "rewards", "objective", "generation"):
        assert getattr(demo, field) == getattr(shipped, field), field
    for field in ("n_teacher", "n_student", "questions_per_step"):
        assert getattr(demo.training, field) == getattr(shipped.training, field), field
    assert demo.task.name == shipped.task.name and demo.task.seed == shipped.task.seed
