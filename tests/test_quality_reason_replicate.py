"""The shapes_reason replicate with a second teacher: hash-locked, at the main study's chosen settings,
refusing a failed probe, and reporting each criterion with both teachers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def replicate():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("quality_reason_replicate", BENCHMARKS / "quality_reason_replicate.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        import reason_study

        yield module, reason_study
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_its_hash_is_its_own_and_changes_with_the_teachers_settings(replicate, monkeypatch):
    rep, _ = replicate
    assert rep.check_preregistration() == "shapes_reason_teacher2-r2.md"  # the committed revision records its hash
    main = rep.main_study.study_hash()
    assert rep.study_hash() != main and main == rep.MAIN["config_hash"]  # the main study's lock is untouched
    before = rep.study_hash()
    monkeypatch.setitem(rep.STUDY, "models_sha256", {**rep.STUDY["models_sha256"], "teacher": "0" * 16})
    assert rep.study_hash() != before
    with pytest.raises(SystemExit, match="shapes_reason_teacher2"):
        rep.check_preregistration()


def test_the_cells_are_the_main_studys_choices_and_valid_runs(replicate, tmp_path):
    from masters.config import validate_run_spec

    rep, rs = replicate
    main_report = json.loads((BENCHMARKS / "results" / "shapes_reason_study.json").read_text())
    chosen = main_report["results"]["selection"]["chosen"]
    assert {arm: rs.setting_of({**c, "seed": 0}) for arm, c in rep.CHOSEN.items()} == {a: chosen[a] for a in rep.CHOSEN}
    assert main_report["results"]["selection"]["primary"]["arm"] == "masters_asymmetric"
    base = rs.base_config(rep.STUDY, tmp_path, tmp_path / "models", 0.35)
    primary = {"arm": "masters_asymmetric", "objective": {"name": "masters", "advantage_shift": 0.3}}
    dirs = set()
    for cell in rep.cells():
        cell = {**cell, "arm": "masters_asymmetric", "advantage_shift": 0.3} if cell["arm"] == "PRIMARY" else cell
        config = rs.cell_config(rep.ARMS, base, cell, tmp_path, tmp_path / "models", temperatures={"0.05": 1.0},
                                primary=primary, chosen_lr=1e-4)
        validate_run_spec(config)
        dirs.add(config["output_dir"])
    assert len(dirs) == len(rep.cells()) == 70
    assert set(rep.STUDY["never_cut"]) == set(rep.CHOSEN)


def test_a_failed_gate_runs_no_cell_except_g2_alone_under_r2(replicate, monkeypatch):
    rep, _ = replicate
    gates = [{"name": "G1", "value": 0.1, "threshold": ">= 0.15", "fix": "shrink the student"},
             {"name": "G2", "value": 0.01, "threshold": "in [0.3, 0.5]", "fix": "raise r_max"}]
    with pytest.raises(SystemExit, match="G1: 0.1 .*shrink the student"):
        rep.probe_r_max({"failed": ["G1", "G2"], "r_max": None, "gates": gates})
    assert rep.probe_r_max({"failed": ["G2"], "r_max": None, "gates": gates}) == 0.4  # r2's registered level
    assert rep.probe_r_max({"failed": [], "r_max": 0.35}) == 0.35
    monkeypatch.delitem(rep.STUDY, "r_max_if_only_g2_fails")  # the first registration: G2 alone stops it too
    with pytest.raises(SystemExit, match="G2: 0.01 .*raise r_max"):
        rep.probe_r_max({"failed": ["G2"], "r_max": None, "gates": gates})


def test_each_criterion_is_reported_with_both_teachers(replicate, tmp_path):
    rep, rs = replicate
    first = json.loads((BENCHMARKS / "results" / "shapes_reason_study.json").read_text())
    (tmp_path / rep.MAIN["report"]).write_text(json.dumps(first))
    hi, lo = rs.mean_se([0.6, 0.61, 0.62]), rs.mean_se([0.40, 0.41, 0.42])
    test = {arm: lo for arm in rep.CHOSEN} | {"masters_asymmetric": hi}
    verdict = rs.verdict(hi, test, {})
    report = {"results": {"test": test, "verdict": verdict}, "references": {}}
    text = "\n".join(rep.beside_main(report, tmp_path))
    assert "| support: primary > sft | True | True | yes |" in text
    assert "| support: primary > progressive_kd | False | True | - |" in text  # held only with teacher 2
    assert "teacher 1 inconclusive, teacher 2 incomplete; the main study's outcome not yet known" in text
    supported = {**verdict, "outcome": "supported"}
    (tmp_path / f"{rep.LABEL}_probe.json").write_text(json.dumps({"failed": ["G2"], "gates": []}))
    text = "\n".join(rep.beside_main({**report, "results": {"test": test, "verdict": supported}}, tmp_path))
    assert "teacher 2 inconclusive (the criteria hold, but gate G2 failed)" in text  # never "supported" on a failed gate
