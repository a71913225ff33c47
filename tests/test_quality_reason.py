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


@pytest.fixture
def runner(study):
    import sys

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import reason_runner
        import reason_study
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return reason_study, reason_runner


def test_every_cell_is_a_valid_run_in_a_directory_of_its_own(study, runner, tmp_path):
    from masters.config import validate_run_spec

    rs, _ = runner
    base = rs.base_config(study.STUDY, tmp_path, tmp_path / "models", 0.45)
    temperatures = {f"{0.05 * k:.2f}": 1.0 + 0.1 * k for k in range(1, 10)}
    primary = {"arm": "masters_topr", "bounded": "topr", "objective": {"name": "masters", "negative_advantages": "topr"}}
    dirs, specs = set(), {}
    for cell in study.cells():
        cell = {**cell, "arm": "masters_topr" if cell["arm"] == "PRIMARY" else cell["arm"]}
        config = rs.cell_config(study.ARMS, base, cell, tmp_path, tmp_path / "models", temperatures=temperatures,
                                primary=primary, chosen_lr=3e-4)
        spec = validate_run_spec(config)
        dirs.add(config["output_dir"])
        specs.setdefault(cell["arm"], spec)
    assert len(dirs) == len(study.cells())  # no two cells share a run directory
    assert specs["control_temperature"].masker.name == "temperature"
    assert specs["control_random_mask"].masker.name == "random"
    assert [float(t.path.endswith("mid")) for t in specs["control_mid_to_large"].teachers] == [1.0, 0.0]
    assert specs["control_no_gap_student"].student.path.endswith("mid")
    assert specs["masters_dr_grpo"].objective.advantage_std is False
    assert specs["fixed_mask"].schedule.name == "constant" and float(specs["fixed_mask"].schedule.r_max) == 0.45
    faithful = {r.name: r.weight for r in specs["masters_primary_faithfulness"].rewards}
    assert faithful["trace_faithfulness"] == 1.0 and specs["masters_primary_faithfulness"].objective.negative_advantages == "topr"
    tie = next(r for r in specs["masters_tie_tolerance"].rewards if r.name == "jsd_distill")
    assert tie.relative_tie_tolerance == 0.05


def test_the_comparison_rule_selection_and_verdict(runner):
    rs, _ = runner
    a, b = rs.mean_se([0.60, 0.61, 0.62, 0.61, 0.60]), rs.mean_se([0.50, 0.52, 0.51, 0.50, 0.52])
    assert rs.beats(a, b) is True and rs.beats(b, a) is False and rs.beats(a, rs.mean_se([0.6])) is None
    assert rs.choose({"lr0.001": a, "lr0.0001": b}, 5) == "lr0.001"
    assert rs.choose({"lr0.001": a, "lr0.0001": rs.mean_se([0.5])}, 5) is None  # a seed missing: no choice yet
    assert rs.holm({"x": 0.001, "y": 0.04, "z": 0.5}) == {"x": True, "y": False, "z": False}
    sweep = {0.0: b, 0.2: a, 0.5: b}
    assert rs.interior_optimum(sweep) is True and rs.interior_optimum({0.0: a, 0.2: b, 0.5: b}) is False
    table = {k: b for k in ("sft", "naive_kd", "progressive_kd", "control_random_mask", "control_temperature")}
    assert rs.verdict(a, table, sweep)["outcome"] == "supported"
    assert rs.verdict(b, {**table, "sft": a}, sweep)["outcome"] == "refuted"
    assert rs.verdict(a, {"sft": b}, sweep)["outcome"] == "incomplete"
    assert rs.verdict(b, table, {0.0: b, 0.2: b, 0.5: b})["outcome"] == "inconclusive"
