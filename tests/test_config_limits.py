"""What a config never needs is refused before validation: each with one message and its place."""

from __future__ import annotations

import time

import pytest

from masters.config import MAX_CONFIG_BYTES, read_config, validate_run_spec
from masters.errors import ConfigError, SpecError

LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10) if i else ', '.join(['x'] * 10)}]\n"
                 for i in range(7))


@pytest.mark.parametrize("text, where, message", [
    ("teacher: t\ntraining: {learning_rate: 1.0e-4}\ntraining: {beta: 0}\n", ":3:1", "duplicate key 'training'"),
    ("a: " + "[" * 100 + "]" * 100 + "\n", ":1:", "nested deeper than 64 levels"),
    (LAUGHS, "", "more than 10,000 alias expansions"),
])
def test_refused_yaml_names_the_place_quickly(tmp_path, text, where, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    began = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        read_config(path)
    assert time.perf_counter() - began < 1.0
    assert message in caught.value.message and f"{path}{where}" in caught.value.where


def test_a_config_over_one_mebibyte_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        read_config(path)


def test_aliases_that_do_not_multiply_are_fine(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("teacher: &m /models/x\nstudent: *m\n")
    assert read_config(path) == {"teacher": "/models/x", "student": "/models/x"}


@pytest.mark.parametrize("field, value", [("training.learning_rate", float("inf")),
                                          ("training.max_grad_norm", float("nan")),
                                          ("objective.beta", float("inf"))])
def test_non_finite_values_are_refused(field, value):
    section, key = field.split(".")
    with pytest.raises(SpecError) as caught:
        fields = {key: value, **({"name": "masters"} if section == "objective" else {})}
        validate_run_spec({"teacher": "t", "student": "s", section: fields})
    loc, msg = caught.value.problems[0]
    assert loc.endswith(key) and "finite" in msg
