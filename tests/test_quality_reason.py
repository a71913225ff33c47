"""The shapes_reason study script: hash-locked to its pre-registration, and under 8 CPU-hours."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_reason.py"


@pytest.fixture
def study():
    spec = importlib.util.spec_from_file_location("quality_reason", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_preregistration_records_the_studys_hash(study):
    assert study.study_hash() in study.registered_hashes().values()
    assert study.check_preregistration().startswith("shapes_reason")


def test_any_other_hash_is_refused(study, monkeypatch):
    monkeypatch.setitem(study.STUDY, "seeds", [0, 1])
    with pytest.raises(SystemExit, match="no pre-registration records"):
        study.check_preregistration()


def test_dry_run_fits_the_budget_and_keeps_the_protected_arms(study):
    est = study.estimate()
    assert est["cpu_hours"] <= 8
    arms = {c["arm"] for c in study.cells()}
    assert {"sft", "naive_kd", "progressive_kd", "masters_paper", "control_random_mask", "control_temperature",
            "control_no_gap_student", "PRIMARY"} <= arms
    lr_counts = {a: len({c["lr"] for c in study.cells() if c["arm"] == a and c["phase"] == "grid"}) for a in study.ARMS}
    assert set(lr_counts.values()) == {len(study.LR_GRID)}  # the same learning-rate grid for every arm
