"""`masters run`: the whole chain end to end, stage skipping, and a two-teacher chain."""

from __future__ import annotations

import json

import yaml

from masters.cli import main
from masters.engine.pipeline import StageLog, run_pipeline, stage_identity
from masters.config import validate_run_spec


def two_teacher_config(tiny_pair, tmp_path) -> dict:
    from masters.models import build_tiny_model

    teacher, student = tiny_pair
    mid = tmp_path / "mid-teacher"
    build_tiny_model("llava", "tiny", mid, tokenizer_dir=teacher.parent / "tokenizer", seed=3, hidden=96)
    return {
        "output_dir": str(tmp_path / "run"), "student": str(student),
        "teachers": [{"path": str(mid), "schedule": {"name": "staircase", "r_max": 0.1, "step": 0.05}},
                     {"path": str(teacher), "share": 1}],
        "data": {"source": "shapes", "n_train": 4, "n_validation": 0, "n_test": 3},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 3, "batch_size": 4},
        "training": {"n_teacher": 1, "n_student": 1, "questions_per_step": 1, "learning_rate": 1e-3},
    }


def test_two_teacher_chain_end_to_end_then_everything_is_skipped(tiny_pair, tmp_path, capsys):
    data = two_teacher_config(tiny_pair, tmp_path)
    spec = validate_run_spec(data)
    results = run_pipeline(spec, progress=False)
    assert set(results) == {"generate", "score", "train", "evaluate"}
    (path,) = (tmp_path / "run" / "train").glob("*/metrics.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["teacher"] for r in rows] == [0, 0, 1, 1]  # equal shares of 4 steps, smallest teacher first
    assert [r["level"] for r in rows] == [0.1, 0.05, 0.2, 0.1]  # each teacher its own staircase
    accuracy = json.loads((tmp_path / "run" / "eval" / "student-test.json").read_text())["accuracy"]
    assert set(accuracy) == {"exact_match"}
    again = run_pipeline(spec, progress=False)
    assert set(again.values()) == {"skipped"}
    # a training-only change reruns training and evaluation, not the bank
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**data, "training": {**data["training"], "learning_rate": 2e-3}}))
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "generate: skipped" in out and "score: skipped" in out and "train: running" in out


def test_stage_identities_read_only_their_fields(tiny_pair, tmp_path):
    base = validate_run_spec(two_teacher_config(tiny_pair, tmp_path))
    other_lr = base.model_copy(update={"training": base.training.model_copy(update={"learning_rate": 0.5})})
    assert stage_identity(base, "score") == stage_identity(other_lr, "score")
    assert stage_identity(base, "train") != stage_identity(other_lr, "train")
    assert StageLog(tmp_path / "nowhere").read() == {}
