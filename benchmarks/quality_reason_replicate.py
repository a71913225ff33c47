"""The shapes_reason study's primary comparison rerun with a second teacher and its own bank (issue 13, item 7).

    python -m masters.engine.capacity --out runs/shapes-reason-t2 \\
        --config benchmarks/shapes_reason_teacher2.gap.yaml --roles student,teacher     # ~25 min, deterministic
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality_reason_replicate.py --dry-run   # cells and CPU-hours
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality_reason_replicate.py [--worker 0/2]
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality_reason_replicate.py --worker 1/2   # beside it
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality_reason_replicate.py --report

The main study (``quality_reason.py``, pre-registration ``shapes_reason-r3.md``) shares one teacher and
one bank across its seeds, so its seed-to-seed standard errors cannot see how much the result owes to
that teacher. This reruns the comparisons its verdict rests on with a teacher built from the same
settings but another seed (``benchmarks/shapes_reason_teacher2.gap.yaml``), its own probe (G1-G4, r_max
by the same G2 rule), its own all-levels bank, the same student and the same task, at the settings
the main study chose on its validation split: nothing is chosen here. The arms: SFT, naive KD, fixed
mask, progressive KD, the paper's Masters, the primary bounded objective (asymmetric, delta 0.3),
the random-mask and temperature controls, and the primary's r_max sweep. The verdict's rules are the
main study's, evaluated on this teacher; beside them, each criterion with both teachers.

What it is (``STUDY``) is hashed, like the main study, and must match
``benchmarks/preregistration/shapes_reason_teacher2.md``; how it runs is ``reason_runner.py``, with
its results under ``benchmarks/results/shapes_reason_teacher2_*``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

import quality_reason as main_study  # noqa: E402

ROOT = HERE.parent.parent
LABEL = "shapes_reason_teacher2"
PREREG_FILE = main_study.PREREG / f"{LABEL}.md"
GAP_CONFIG = HERE.parent / "shapes_reason_teacher2.gap.yaml"
MAIN = {"prereg": "shapes_reason-r3.md", "config_hash": "1db5389b2bf22b2f", "report": "shapes_reason_study.json"}

# The main study's choices on its validation split (shapes_reason_study.json, results.selection.chosen),
# carried over as they are.
CHOSEN: dict[str, dict[str, Any]] = {
    "sft": {"lr": 1e-4},
    "naive_kd": {"lr": 1e-4},
    "fixed_mask": {"lr": 1e-4},
    "progressive_kd": {"lr": 1e-4},
    "masters_paper": {"lr": 1e-4},
    "masters_asymmetric": {"lr": 1e-4, "advantage_shift": 0.3},
    "control_random_mask": {"lr": 1e-4},
    "control_temperature": {"lr": 1e-3},
}
# the main study's arms, their own grids left out (the values are CHOSEN's)
ARMS = {arm: {k: v for k, v in main_study.ARMS[arm].items() if k not in ("grid", "needs")} for arm in CHOSEN}
BOUNDED = ["asymmetric"]

REPLICATION = {
    "gates": "G1-G4 by masters probe's rules on this teacher; if any fails, no training cell runs and the failure "
             "is the result",
    "r_max": "this teacher's own, by the G2 rule (the smallest r whose JSD(T_r, T_0) / JSD(T_0, S) is in [0.3, 0.5])",
    "verdict": "the main study's criteria (CRITERIA), evaluated on this teacher's cells alone",
    "per_criterion": "every criterion row with both teachers; a row that held with teacher 1 replicates if it holds "
                     "with teacher 2",
    "replicated": "the main study's outcome replicates if this teacher's outcome is the same one",
}

STUDY: dict[str, Any] = {
    **main_study.STUDY,
    "arms": ARMS, "bounded": BOUNDED, "chosen_from_main": CHOSEN, "main_study": MAIN,
    "delta_grid": [0.3], "tie_grid": [], "mix_sweep": [], "mix_sweep_arms": [], "rmax_sweep_arms": ["PRIMARY"],
    "never_cut": list(CHOSEN),
    "models": f"{GAP_CONFIG.relative_to(ROOT)}: GapSpec defaults, teacher seed 4; the main study's student",
    "gap_spec": "GAP_SPEC",
    # sha256 of model.safetensors, first 16 hex digits; the student is the main study's own
    "models_sha256": {"teacher": "a75d4b02b0fca7af", "student": "f6bbbcfc9ca594fa"},
    "replication": REPLICATION,
    # r2 (shapes_reason_teacher2-r2.md): teacher 2's G2 ratios jump over [0.3, 0.5] between the grid's 0.40
    # (0.247) and 0.45 (0.572), and a staircase with step 0.05 needs r_max on that grid. The replicate then
    # runs at the main study's r_max, the grid level nearest the band, with G2's failure reported beside
    # every result: the verdict cannot be "supported" on a failed gate.
    "r_max_if_only_g2_fails": 0.4,
}


def study_hash() -> str:
    return main_study.config_hash({**STUDY, "gap_spec": main_study.gap_spec(GAP_CONFIG)})


def check_preregistration() -> str:
    current = study_hash()
    found = main_study.registered_hashes(f"{LABEL}*.md")
    for name, value in found.items():
        if value == current:
            return name
    raise SystemExit(f"error: the replicate's config hash is {current}, which no pre-registration records ({found}).\n"
                     f"  fix: restore the registered STUDY, or register the change in a revision beside the others "
                     f"({LABEL}-r<k>.md), never instead of them")


def cells() -> list[dict[str, Any]]:
    out = [{"arm": arm, **choice, "seed": seed, "phase": "grid"} for arm, choice in CHOSEN.items()
           for seed in STUDY["seeds"]]
    out += [{"arm": "PRIMARY", "r_max": r, "seed": seed, "phase": "rmax"}
            for r in STUDY["rmax_sweep"] for seed in STUDY["seeds"]]
    return out


def priority(cell: dict[str, Any]) -> int:
    return list(CHOSEN).index(cell["arm"])


def estimate() -> dict[str, Any]:
    """CPU-hours from the main study's measured cells (same sizes, same student; one training per cell)."""
    from reason_runner import measured_seconds

    ledger = main_study.HERE.parent / "results" / "shapes_reason_cells"
    measured = measured_seconds(ledger)
    main_cells = len(main_study.cells())
    per_train = measured["train_s"] / main_cells
    per_eval = measured["evaluate_s"] / measured["records"]
    n = len(cells())
    grid = sum(1 for c in cells() if c["phase"] == "grid")
    evaluations = n + grid  # every cell on test, the grid cells on validation too
    bank = json.loads((ledger.parent / MAIN["report"]).read_text())["prepared"]["bank_seconds"]
    seconds = n * per_train + evaluations * per_eval + 3 * bank + 600  # 3 banks; probe and references ~10 min
    return {"cells": n, "evaluations": evaluations, "measured_train_s_per_cell": round(per_train, 1),
            "measured_eval_s_per_record": round(per_eval, 1), "bank_s_each": bank, "cpu_hours": round(seconds / 3600, 2)}


# =============================================================================================
# This teacher's probe
# =============================================================================================


def probe(args: argparse.Namespace, worker0: bool) -> dict[str, Any]:
    """G1-G4 on this teacher (``masters probe``'s defaults), kept as ``<label>_probe.json`` beside its plot."""
    from masters.config import read_config, validate_run_spec
    from masters.engine.probe import plot_report, render_tables, run_probe
    from masters.files import atomic_write_json
    from reason_study import CONFIG, wait_for

    from masters.cli.output import console

    path = Path(args.results) / f"{LABEL}_probe.json"
    teacher_sha = STUDY["models_sha256"]["teacher"]
    if path.exists():
        record = json.loads(path.read_text())
        if record.get("teacher_sha256") == teacher_sha:
            return record
    if not worker0:
        wait_for(path, print)
        return json.loads(path.read_text())
    models = Path(args.models)
    config = {**read_config(CONFIG), "output_dir": str(Path(args.out) / "probe"),
              "teacher": str(models / "teacher"), "student": str(models / "student")}
    spec = validate_run_spec(config, source=f"{LABEL} probe")
    report = run_probe(spec, say=lambda text: console().print(text))
    for table in render_tables(report):
        console().print(table)
    plot_report(report, path.with_suffix(".png"))
    record = {**report.to_json(), "teacher_sha256": teacher_sha, "command": "python benchmarks/quality_reason_replicate.py",
              "date": time.strftime("%Y-%m-%d %H:%M")}
    atomic_write_json(path, record, default=str)
    return record


def probe_r_max(record: dict[str, Any]) -> float:
    """This teacher's r_max: G2's when every gate passes; r2's fixed level when G2 alone fails."""
    fallback = STUDY.get("r_max_if_only_g2_fails")
    if record.get("failed") == ["G2"] and fallback is not None:
        print(f"G2 failed on this teacher; r_max {fallback} as registered in r2 (the result is reported as such)",
              flush=True)
        return float(fallback)
    if record.get("failed"):
        gates = {g["name"]: g for g in record["gates"]}
        detail = "; ".join(f"{n}: {gates[n]['value']} (wanted {gates[n]['threshold']}; fix: {gates[n]['fix']})"
                           for n in record["failed"])
        raise SystemExit(f"error: the second teacher's gates failed, so no training cell runs: {detail}")
    return float(record["r_max"])


# =============================================================================================
# Beside the main study
# =============================================================================================


def beside_main(report: dict[str, Any], results: Path) -> list[str]:
    """The replicate's sections after the runner's: its gates, and each arm and criterion with both teachers
    (this teacher's probe and the main study's report read from ``results``)."""
    from reason_runner import _fmt

    lines = ["## This teacher's gates (the probe, train and validation splits only)", "",
             "| gate | value | wanted | result | detail |", "|---|---|---|---|---|"]
    probe_path = results / f"{LABEL}_probe.json"
    record = json.loads(probe_path.read_text()) if probe_path.exists() else {"gates": []}
    for g in record["gates"]:
        value = "n/a" if g["value"] is None else f"{g['value']:.3f}"
        lines.append(f"| {g['name']} {g['title']} | {value} | {g['threshold']} | "
                     f"{'pass' if g['passed'] else 'FAIL'} | {g['detail']} |")
    main_path = results / MAIN["report"]
    if not main_path.exists():
        return lines
    first = json.loads(main_path.read_text())
    t1, t2 = first["results"], report["results"]
    lines += ["", f"## Teacher 1 (main study, `{MAIN['prereg']}`) and teacher 2 (this run), test final answer", "",
              "| arm | teacher 1 | teacher 2 |", "|---|---:|---:|"]
    for role in ("teacher", "student"):
        a, b = first.get("references", {}).get(role), report.get("references", {}).get(role)
        name = "the teacher, unmasked" if role == "teacher" else "the base student"
        lines.append(f"| {name} | {a['final_answer']:.3f} | {b['final_answer']:.3f} |" if a and b else f"| {name} | - | - |")
    for arm in CHOSEN:
        lines.append(f"| {arm} | {_fmt(t1['test'].get(arm))} | {_fmt(t2['test'].get(arm))} |")
    lines += ["", "| criterion | teacher 1 | teacher 2 | replicates |", "|---|---|---|---|"]
    for kind in ("support", "refute"):
        for key, held in t1["verdict"][kind].items():
            now = t2["verdict"][kind].get(key)
            again = "-" if held is not True else ("not measured yet" if now is None else ("yes" if now else "no"))
            lines.append(f"| {kind}: {key} | {held} | {'not measured yet' if now is None else now} | {again} |")
    a, b = t1["verdict"]["outcome"], t2["verdict"]["outcome"]
    failed = record.get("failed")
    if failed and b == "supported":
        b = f"inconclusive (the criteria hold, but gate {', '.join(failed)} failed)"
    same = "not yet known" if b == "incomplete" else ("replicates" if a == b else "does not replicate")
    lines += ["", f"**Outcome: teacher 1 {a}, teacher 2 {b}; the main study's outcome {same}.**"]
    if failed:
        lines += ["", f"Gate {', '.join(failed)} failed on teacher 2; under r2 the cells ran at r_max "
                  f"{STUDY.get('r_max_if_only_g2_fails')}, the main study's. The mechanism cannot be supported on "
                  "this teacher; the comparisons still show how much the main study's owe to its teacher."]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="list the cells and estimate CPU-hours; run nothing")
    p.add_argument("--hash", action="store_true", help="print the replicate's config hash")
    p.add_argument("--out", default="runs/quality-reason-teacher2", help="work directory (resumable)")
    p.add_argument("--models", default="runs/shapes-reason-t2/models", help="teacher 2 and the student "
                   f"(python -m masters.engine.capacity --out runs/shapes-reason-t2 --config {GAP_CONFIG.relative_to(ROOT)})")
    p.add_argument("--worker", default="0/1", help="K/N: this process runs every N-th cell from the K-th "
                   "(worker 0 also runs the probe, prepares the banks and writes the report)")
    p.add_argument("--hours", type=float, default=None, help="start no cell after this many hours (rerun to go on)")
    p.add_argument("--report", action="store_true", help="only write the report from the finished cells")
    p.add_argument("--results", default=str(HERE.parent / "results"))
    p.set_defaults(label=LABEL, title="The shapes_reason study with a second teacher and bank (issue 13, item 7)",
                   command="python benchmarks/quality_reason_replicate.py")
    args = p.parse_args(argv)
    if args.hash:
        print(study_hash())
        return 0
    if args.dry_run:
        print(json.dumps({"config_hash": study_hash(), "registered": main_study.registered_hashes(PREREG_FILE.name),
                          **estimate()}, indent=2))
        return 0
    name = check_preregistration()
    print(f"pre-registration {name} matches config hash {study_hash()}", flush=True)
    import reason_study as rs
    from reason_runner import run_study

    worker0 = args.worker.split("/")[0] == "0"
    if args.report:
        record = json.loads((Path(args.results) / f"{LABEL}_probe.json").read_text())
    else:
        rs.check_models(Path(args.models), STUDY["models_sha256"])
        rs.threads()
        record = probe(args, worker0)
    r_max = probe_r_max(record)
    if record.get("failed"):
        args.r_max_source = f"not G2's: gate {', '.join(record['failed'])} failed; r2's fixed level"
    return run_study(args, study=STUDY, arms=ARMS, cells=cells(), bounded=BOUNDED, priority=priority,
                     r_max=r_max, prereg=name, config_hash=study_hash(),
                     extend=lambda report: beside_main(report, Path(args.results)))


if __name__ == "__main__":
    sys.exit(main())
