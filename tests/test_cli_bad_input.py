"""Bad input: one short message naming the place and the fix, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from masters.cli import main

GOOD = "teacher: models/t\nstudent: models/s\n"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path, text: str, name: str = "run.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_valid_config(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "validate", "--no-paths", write(tmp_path, GOOD))
    assert code == 0 and "valid" in out and "magnitude" in out


@pytest.mark.parametrize("body,expected", [
    # unknown component name, with did-you-mean
    (GOOD + "masker: magnitud\n", ["masker: unknown masker 'magnitud'. Did you mean: magnitude?"]),
    # misspelt field
    (GOOD + "training: {lerning_rate: 1.0e-5}\n", ["training.lerning_rate: unknown field", "Did you mean: learning_rate?"]),
    # wrong type
    (GOOD + "training: {n_teacher: four}\n", ["training.n_teacher: Input should be a valid integer", "'four'"]),
    # out-of-range value
    (GOOD + "generation: {top_p: 1.5}\n", ["generation.top_p: Input should be less than or equal to 1"]),
    (GOOD + "schedule: {name: staircase, r_max: 0.3, step: 0.07}\n", ["does not divide r_max"]),
    (GOOD + "schedule: {name: staircase, r_max: 0.123456}\n", ["finer than one basis point"]),
    # unknown reward inside a list
    (GOOD + "rewards: [exact_match, numerc]\n", ["rewards: unknown reward 'numerc'. Did you mean: numeric?"]),
])
def test_invalid_fields_exit_2_with_location_and_fix(tmp_path, capsys, body, expected):
    code, out, err = run_cli(capsys, "validate", write(tmp_path, body))
    assert code == 2, (out, err)
    for piece in expected:
        assert piece in err
    assert "fix:" in err and "Traceback" not in err


def test_all_errors_are_reported_at_once(tmp_path, capsys):
    body = GOOD + "masker: nope\ntraining: {beta: -1, n_student: x}\n"
    code, _, err = run_cli(capsys, "validate", write(tmp_path, body))
    assert code == 2 and "3 invalid fields" in err
    assert "masker:" in err and "training.beta:" in err and "training.n_student:" in err


def test_malformed_yaml_names_file_line_and_column(tmp_path, capsys):
    path = write(tmp_path, "teacher: t\nstudent: [s\n")
    code, _, err = run_cli(capsys, "validate", path)
    assert code == 2 and "malformed YAML" in err and f"{path}:3:1" in err and "fix:" in err


def test_missing_config_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "config file not found" in err and "nope.yaml" in err


def test_config_that_is_not_a_mapping(tmp_path, capsys):
    code, _, err = run_cli(capsys, "validate", write(tmp_path, "- a\n- b\n"))
    assert code == 2 and "top level must be a mapping" in err


def test_unknown_names_in_list_and_describe(capsys):
    code, _, err = run_cli(capsys, "list", "maskerz")
    assert code == 2 and "unknown kind 'maskerz'" in err and "Did you mean: masker" in err
    code, _, err = run_cli(capsys, "describe", "exact_matc")
    assert code == 2 and "Did you mean: exact_match?" in err


def test_validate_leaves_the_config_untouched(tmp_path, capsys):
    path = write(tmp_path, GOOD + "masker: nope\n")
    before = open(path, "rb").read()
    run_cli(capsys, "validate", path)
    assert open(path, "rb").read() == before


def test_real_process_prints_no_traceback_and_imports_no_torch(tmp_path):
    path = write(tmp_path, GOOD + "masker: magnitud\n")
    code = ("import sys; from masters.cli import main; rc = main(['validate', sys.argv[1]]); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "unknown masker" in proc.stderr
    assert proc.stdout.strip() == "[]"
