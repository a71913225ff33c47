"""The generation stage: the rows the plan needs, per-row seeds, resumable after a kill."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from masters.bank.store import ResponseBank
from masters.engine.generation import bank_dir, generate_bank
from masters.config import validate_run_spec


def config(tiny_pair, out, **overrides) -> dict:
    teacher, student = tiny_pair
    data = {
        "output_dir": str(out), "teacher": str(teacher), "student": str(student),
        "data": {"source": "shapes", "n_train": 6, "n_validation": 0, "n_test": 2},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 5, "batch_size": 2},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def bank_rows(out):
    table = ResponseBank(out / "bank").table()
    return {r["row_id"]: (r["token_ids"], r["seed"]) for r in table.to_pylist()}


def test_scheduled_bank_has_each_question_at_its_stage_and_student_rows(tiny_pair, tmp_path):
    spec = validate_run_spec(config(tiny_pair, tmp_path))
    report = generate_bank(spec, progress=False)
    rows = ResponseBank(bank_dir(spec)).table().to_pylist()
    teacher_rows = [r for r in rows if r["source"] == "teacher"]
    student_rows = [r for r in rows if r["source"] == "student"]
    assert len(student_rows) == 6 * 2 and len(teacher_rows) == 6 * 2  # one pass: each question at one level
    assert {r["level_bp"] for r in teacher_rows} == {2000, 1500, 1000, 500, 0}
    assert all(r["num_tokens"] == len(r["token_ids"]) > 0 for r in rows)
    assert report.rows_written == 24 and report.tokens > 0
    again = generate_bank(spec, progress=False)
    assert again.rows_written == 0 and again.rows_present == 24


def test_all_levels_extends_the_same_bank(tiny_pair, tmp_path):
    generate_bank(validate_run_spec(config(tiny_pair, tmp_path)), progress=False)
    before = bank_rows(tmp_path)
    spec = validate_run_spec(config(tiny_pair, tmp_path, generation={"bank_levels": "all"}))
    report = generate_bank(spec, progress=False)
    after = bank_rows(tmp_path)
    assert report.rows_written == 6 * 2 * 5 - 12  # every level for every question, minus what existed
    assert all(after[k] == v for k, v in before.items())  # existing rows untouched


def test_other_sampling_settings_are_refused(tiny_pair, tmp_path):
    generate_bank(validate_run_spec(config(tiny_pair, tmp_path)), progress=False)
    from masters.errors import MastersError

    with pytest.raises(MastersError, match="other generation settings"):
        generate_bank(validate_run_spec(config(tiny_pair, tmp_path, generation={"temperature": 0.5})), progress=False)


def test_killed_generation_resumes_to_the_uninterrupted_bank(tiny_pair, tmp_path):
    whole = tmp_path / "whole"
    generate_bank(validate_run_spec(config(tiny_pair, whole)), progress=False)
    resumed = tmp_path / "resumed"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config(tiny_pair, resumed)))
    env = {**os.environ, "MASTERS_TEST_KILL_AFTER": "generate:8"}
    cmd = [sys.executable, "-m", "masters.cli", "generate", str(path)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert first.returncode == 137, first.stderr[-2000:]
    assert 0 < len(ResponseBank(resumed / "bank").keys()) < 24
    env.pop("MASTERS_TEST_KILL_AFTER")
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert bank_rows(resumed) == bank_rows(whole)


def test_mismatched_tokenizers_are_refused_before_any_compute(tiny_pair, tmp_path):
    from masters.errors import IncompatibleModelsError
    from masters.models import build_tiny_model

    other = tmp_path / "other"
    build_tiny_model("qwen2_vl", "tiny", other)  # its own tokenizer, not the pair's
    spec = validate_run_spec({**config(tiny_pair, tmp_path / "run"), "teacher": str(other)})
    with pytest.raises(IncompatibleModelsError):
        generate_bank(spec, progress=False)
    bank = tmp_path / "run" / "bank"  # nothing banked: at most the writer's lock and ownership marks
    assert not bank.exists() or {p.name for p in bank.iterdir()} <= {".masters.lock", ".masters-output"}
