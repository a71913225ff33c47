"""Strict specs: frozen, no unknown fields, discriminated by name, every error with its location."""

from __future__ import annotations

import pydantic
import pytest

from masters.errors import SpecError
from masters.ratios import Ratio
from masters.config import load_run_spec, validate_component, validate_run_spec

MINIMAL = {"teacher": "models/teacher", "student": "models/student"}


def _problems(data) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        validate_run_spec(data)
    return dict(info.value.problems)


def test_minimal_spec_gets_the_papers_defaults():
    spec = validate_run_spec(MINIMAL)
    assert spec.masker.name == "magnitude"
    assert (spec.schedule.name, spec.schedule.r_max, spec.schedule.step) == ("staircase", Ratio(2000), Ratio(500))
    assert (spec.training.n_teacher, spec.training.n_student, spec.objective.beta) == (4, 4, 0.1)
    assert spec.training.learning_rate == 1e-6
    g = spec.generation
    assert (g.n_teacher_responses, g.temperature, g.top_p, g.top_k, g.repetition_penalty) == (8, 1.0, 0.9, 50, 1.05)
    assert [t.path for t in spec.teachers] == ["models/teacher"]


def test_specs_are_frozen_and_round_trip_through_json():
    spec = validate_run_spec({**MINIMAL, "schedule": {"name": "staircase", "r_max": "30%"}})
    with pytest.raises(pydantic.ValidationError):
        spec.seed = 3
    again = validate_run_spec(spec.model_dump(mode="json"))
    assert again == spec and again.schedule.r_max == Ratio(3000)


def test_name_shorthand_and_teacher_chain():
    spec = validate_run_spec({"teachers": [{"path": "a", "share": 1}, {"path": "b", "share": 2}],
                              "student": {"path": "s", "adapter": "llava"}, "rewards": ["numeric"]})
    assert [t.share for t in spec.teachers] == [1, 2]
    assert spec.student.adapter.name == "llava" and spec.rewards[0].name == "numeric"


def test_every_error_is_collected_with_its_location():
    problems = _problems({
        "teacher": "t", "student": "s", "masker": "magnitud",
        "training": {"lerning_rate": 1e-5, "beta": -1},
        "generation": {"top_p": 2},
    })
    assert "Did you mean: magnitude?" in problems["masker"]
    assert "Did you mean: learning_rate?" in problems["training.lerning_rate"]
    assert "greater than or equal to 0" in problems["training.beta"]
    assert "less than or equal to 1" in problems["generation.top_p"]


def test_component_field_errors_carry_the_component_name_in_the_path():
    problems = _problems({**MINIMAL, "rewards": [{"name": "numeric", "rel_tol": -1}, "regex"]})
    assert "rewards.0.numeric.rel_tol" in problems
    assert "rewards.1.regex.pattern" in problems


def test_schedule_step_must_divide_r_max_exactly():
    problems = _problems({**MINIMAL, "schedule": {"name": "staircase", "r_max": 0.3, "step": 0.07}})
    assert "does not divide r_max" in problems["schedule.staircase"]
    spec = validate_run_spec({**MINIMAL, "schedule": {"name": "staircase", "r_max": 0.3, "step": 0.05}})
    assert spec.schedule.r_max.bp % spec.schedule.step.bp == 0


@pytest.mark.parametrize("r_max", [1.0, "120%"])
def test_r_max_must_be_below_one(r_max):
    problems = _problems({**MINIMAL, "schedule": {"name": "staircase", "r_max": r_max}})
    assert [loc for loc in problems if loc.startswith("schedule")], problems


def test_missing_student_and_both_teacher_forms():
    assert _problems({"teacher": "t"}) == {"student": "required field is missing"}
    problems = _problems({"teacher": "t", "teachers": ["u"], "student": "s"})
    assert "either `teacher` or `teachers`" in next(iter(problems.values()))


def test_validate_component_alone():
    spec = validate_component("reward", {"name": "numeric", "rel_tol": 0.5})
    assert spec.rel_tol == 0.5
    with pytest.raises(SpecError, match="numeric.rel_tol"):
        validate_component("reward", {"name": "numeric", "rel_tol": "x"})


def test_load_from_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("teacher: t\nstudent: s\nschedule: {name: staircase, r_max: 0.4, step: 0.1}\n")
    assert load_run_spec(path).schedule.r_max == Ratio(4000)


def test_specs_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from masters.config import validate_run_spec; "
            "validate_run_spec({'teacher': 't', 'student': 's'}); "
            "print(sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
