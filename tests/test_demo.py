"""`masters demo` end to end on a seconds-sized config, and the demo spec's validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from masters.demo.spec import DemoSpec, load_demo_spec
from masters.errors import MastersError, SpecError

ROOT = Path(__file__).resolve().parents[1]

# Every phase, with a few steps each: this checks the plumbing, not the numbers.
QUICK = """
data: {forms: [open], question_types: [color, count, size, position]}
n_test: 24
teacher: {size: small, n_train: 64, passes: 1, batch_size: 32, seed: 1}
student: {size: tiny, n_train: 32, passes: 1, batch_size: 32, seed: 2}
distill: {n_train: 8, questions_per_step: 4, n_teacher_responses: 4, n_student_responses: 4}
"""
ROWS = ["teacher @ mask 0.20", "teacher @ mask 0.15", "teacher @ mask 0.10", "teacher @ mask 0.05",
        "teacher @ mask 0.00", "base student", "SFT", "naive KD", "Masters"]


def test_demo_end_to_end_then_reuses_the_cached_teacher(tmp_path, capsys):
    from masters.cli import main

    config = tmp_path / "quick.yaml"
    config.write_text(QUICK)
    out = tmp_path / "run"
    assert main(["demo", "--config", str(config), "--output", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    for label in ROWS + ["phase data", "phase teacher", "phase student", "phase masters", "phase baselines",
                         "phase evaluate", "total"]:
        assert label in printed, label
    assert "below 0.8" in printed  # a few steps make a weak teacher, and the demo says so

    results = json.loads((out / "results.json").read_text())
    from masters.demo.report import row_label

    assert [row_label(r) for r in results["rows"]] == ROWS
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n"] == 24 for r in results["rows"])
    assert [p["phase"] for p in results["phases"]] == ["data", "teacher", "student", "masters", "baselines",
                                                       "evaluate"]
    assert not results["teacher_cached"]
    for name in ("mask_schedule.png", "rewards.png", "losses.png", "accuracy.png"):
        assert (out / name).stat().st_size > 1000, name
    report = (out / "report.md").read_text()
    assert all(f"| {label} |" in report for label in ROWS)
    # the Masters run logged the staircase, both rewards and every loss term
    metrics = [json.loads(line) for line in Path(results["metrics"]["masters"]).read_text().splitlines()]
    assert [m["level"] for m in metrics] == sorted((m["level"] for m in metrics), reverse=True)
    assert {"reward/exact_match/raw", "reward/jsd_distill/raw", "loss/policy", "loss/kl", "loss/distill"} <= set(
        metrics[0])

    # a second run reuses the trained teacher and base student, and trains the students afresh
    assert main(["demo", "--config", str(config), "--output", str(out), "--quiet"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["teacher_cached"] and again["student_cached"]
    assert [r["accuracy"] for r in again["rows"]][:6] == [r["accuracy"] for r in results["rows"]][:6]


def test_the_shipped_demo_config_is_the_default():
    assert load_demo_spec(ROOT / "configs" / "demo.yaml") == DemoSpec()


def test_bad_demo_config_names_the_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("teacher: {lerning_rate: 0.1}\n")
    with pytest.raises(SpecError) as info:
        load_demo_spec(config)
    assert "teacher.lerning_rate" in str(info.value) and "learning_rate" in str(info.value)
    config.write_text("distill: {r_max: 0.2, step: 0.15}\n")
    with pytest.raises(SpecError, match="does not divide"):
        load_demo_spec(config)


def test_demo_never_clears_a_directory_it_did_not_write(tmp_path):
    from masters.demo.run import _clear

    (tmp_path / "masters").mkdir()
    (tmp_path / "masters" / "precious.txt").write_text("keep me")
    with pytest.raises(MastersError):
        _clear(tmp_path / "masters")
    assert (tmp_path / "masters" / "precious.txt").exists()
