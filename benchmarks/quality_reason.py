"""The pre-registered study on shapes_reason (issue 13, items 6-7): arms, grids, criteria, hash lock.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality_reason.py --dry-run      # cells and CPU-hours
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality_reason.py --hash         # the study's config hash
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality_reason.py [--out runs/quality-reason] [--worker 0/2]
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality_reason.py --worker 1/2     # beside it, on a second core
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality_reason.py --report         # the report from the ledger

It needs the capacity models (``python -m masters.engine.capacity --out runs/shapes-reason``, about
40 min on two cores, deterministic) and runs in about 1 h 45 min on two cores (2.5 CPU-h of training,
measured); how it runs is ``reason_runner.py`` and ``reason_study.py`` beside it.

Everything that defines the study (arms, learning-rate grid, seeds, delta and tie-tolerance grids,
sweeps, test size, criteria, the primary bounded objective's selection rule) is the ``STUDY``
mapping below; its canonical hash must appear in a pre-registration file under
``benchmarks/preregistration/`` (``shapes_reason.md``, or a revision ``shapes_reason-r<k>.md``
written *beside* it, never instead of it). The study refuses to run under any other hash.

An arm is an objective x schedule x teacher (x masker, x student where a control says so).
Learning rate, delta and the tie tolerance are chosen per arm on the validation split only
(mean over seeds); test accuracy is then read once, at the chosen values. Differences use Welch
standard errors over seeds; "better" means difference > 2 x SE of the difference; the bounded
objectives other than the primary are compared with Holm's correction.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
PREREG = HERE.parent / "preregistration"
PREREG_STEM = "shapes_reason"

SEEDS = [0, 1, 2, 3, 4]
LR_GRID = [1e-4, 3e-4, 1e-3]
DELTA_GRID = [0.1, 0.3]
TIE_GRID = [0.05, 0.2]
RMAX_SWEEP = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
MIX_SWEEP = [[8, 0], [6, 2], [4, 4], [2, 6], [0, 8]]
BOUNDED = ["topr", "asymmetric", "dr_grpo", "zero", "probability_weighted"]

# objective x schedule x teacher; "R_MAX" is the probe's r_max (G2), fixed before the study runs
ARMS: dict[str, dict[str, Any]] = {
    "sft": {"objective": "sft", "schedule": None, "teacher": None, "protected": True},
    "naive_kd": {"objective": "naive_kd", "schedule": None, "teacher": "teacher", "protected": True},
    "fixed_mask": {"objective": "masters", "schedule": "constant@R_MAX", "teacher": "teacher"},
    "progressive_kd": {"objective": "progressive_kd", "schedule": "staircase@R_MAX", "teacher": "teacher",
                       "protected": True},
    "masters_paper": {"objective": "masters", "schedule": "staircase@R_MAX", "teacher": "teacher", "protected": True},
    "masters_topr": {"objective": {"name": "masters", "negative_advantages": "topr"}, "schedule": "staircase@R_MAX",
                     "teacher": "teacher", "bounded": "topr"},
    "masters_asymmetric": {"objective": {"name": "masters", "advantage_shift": "DELTA"}, "schedule": "staircase@R_MAX",
                           "teacher": "teacher", "bounded": "asymmetric", "grid": {"advantage_shift": DELTA_GRID}},
    "masters_dr_grpo": {"objective": {"name": "masters", "advantage_std": False}, "schedule": "staircase@R_MAX",
                        "teacher": "teacher", "bounded": "dr_grpo"},
    "masters_zero": {"objective": {"name": "masters", "negative_advantages": "zero"}, "schedule": "staircase@R_MAX",
                     "teacher": "teacher", "bounded": "zero"},
    "masters_probability_weighted": {"objective": {"name": "masters", "negative_advantages": "probability_weighted"},
                                     "schedule": "staircase@R_MAX", "teacher": "teacher",
                                     "bounded": "probability_weighted"},
    "masters_tie_tolerance": {"objective": "masters", "schedule": "staircase@R_MAX", "teacher": "teacher",
                              "reward": {"relative_tie_tolerance": "TAU"}, "grid": {"relative_tie_tolerance": TIE_GRID}},
    "masters_primary_faithfulness": {"objective": "PRIMARY", "schedule": "staircase@R_MAX", "teacher": "teacher",
                                     "faithfulness_weight": 1.0},
    # controls
    "control_temperature": {"objective": "masters", "schedule": "staircase@R_MAX", "teacher": "teacher@T(entropy)",
                            "protected": True, "needs": "a per-level teacher temperature (entropy matched to the masked "
                            "teacher at each level, from the probe's G2 table): not in the engine yet"},
    "control_random_mask": {"objective": "masters", "schedule": "staircase@R_MAX", "teacher": "teacher",
                            "masker": "random", "protected": True},
    "control_sft_curriculum": {"objective": "masters", "schedule": "constant@0", "teacher": "teacher passes 2,4,final"},
    "control_fixed_mask_progressive_kd": {"objective": "progressive_kd", "schedule": "constant@R_MAX",
                                          "teacher": "teacher"},
    "control_mid_to_large": {"objective": "masters", "schedule": "staircase@R_MAX", "teacher": "mid,teacher"},
    "control_no_gap_student": {"objective": "masters", "schedule": "staircase@R_MAX", "teacher": "teacher",
                               "student": "mid", "protected": True},
}

CRITERIA = {
    "comparison": "difference of means over seeds > 2 x Welch standard error of the difference",
    "interior_optimum": "an interior r_max (or mix) must beat both ends of its sweep by that margin",
    "holm": "the bounded objectives other than the primary: Holm-corrected at family-wise 0.05 (z = diff / SE)",
    "primary_selection": "the bounded objective with the highest mean validation accuracy at its best learning rate "
                         "(and delta / tie tolerance) over the 5 seeds, chosen before any test run",
    "supported": "primary-bounded Masters > SFT and > naive KD and > progressive KD, and the random-mask and "
                 "temperature controls < primary-bounded Masters, and on the r_max sweep an interior optimum",
    "refuted": "primary-bounded Masters <= progressive KD or <= SFT by the comparison rule (i.e. SFT or progressive "
               "KD better by > 2 SE), or r_max 0 beats every r_max > 0 by > 2 SE",
    "inconclusive": "neither",
}

STUDY: dict[str, Any] = {
    "task": {"name": "shapes_reason", "n_train": 2048, "n_validation": 2048, "n_test": 1024, "seed": 0},
    "distill": {"n_train": 512, "questions_per_step": 4, "n_teacher": 4, "n_student": 4, "bank_levels": "all",
                "bank_r_max": 0.5, "step": 0.05, "responses_per_level": 8, "student_responses": 8},
    "seeds": SEEDS, "lr_grid": LR_GRID, "delta_grid": DELTA_GRID, "tie_grid": TIE_GRID,
    "rmax_sweep": RMAX_SWEEP, "mix_sweep": MIX_SWEEP, "rmax_sweep_arms": ["masters_paper", "PRIMARY"],
    "mix_sweep_arms": ["masters_paper"], "n_validation_eval": 1000,
    "bounded": BOUNDED, "arms": ARMS, "criteria": CRITERIA, "n_test_eval": 1024, "lr_chosen_on": "validation",
    "models": "masters.engine.capacity.GapSpec defaults (teacher 192/3, mid small 128/3, student 32/2)",
    # r2: the models' settings themselves (sizes, seeds, warm-up and passes), so a recalibration changes the hash
    "gap_spec": "GAP_SPEC",
    # r3: the models themselves, weight for weight (sha256 of model.safetensors, first 16 hex digits): a rebuild
    # under later code gave another teacher from the same settings, which a settings hash cannot see
    "models_sha256": {"teacher": "7dc27bdf292b7fc0", "mid": "bb6edfe4d530fd77", "student": "f6bbbcfc9ca594fa",
                      "teacher_pass_2": "c7d56b8752821e0b", "teacher_pass_4": "0b8e8c0f6c66eab3"},
    "never_cut": ["sft", "naive_kd", "progressive_kd", "masters_paper", "PRIMARY", "control_random_mask",
                  "control_temperature", "control_no_gap_student"],
}

# CPU seconds per unit, *estimated* (not yet measured per cell) from the capacity builder's rates on this
# machine (2 shared cores, torch 1 thread: a 192/3 teacher SFT step of 32 questions ~0.9 s, a 32/2 student
# step ~0.25 s): a Masters step of 4 groups x 8 responses with the teacher forward (0.30 s), a student-only
# SFT step (0.08 s), greedy decoding of 1000 questions x 26 tokens by the student (15 s) and by the teacher
# (60 s), teacher generation per banked row (0.06 s). Time one cell before trusting the total.
COSTS = {"step_teacher": 0.30, "step_sft": 0.08, "decode_student_per_1000": 15.0, "decode_teacher_per_1000": 60.0,
         "bank_row": 0.06}


def gap_spec(config: Path | None = None) -> dict[str, Any]:
    """The capacity models' settings (GapSpec defaults, or a YAML GapSpec), where they are cached left out."""
    from masters.config import read_config
    from masters.engine.capacity import GapSpec

    settings = GapSpec.model_validate(read_config(config) if config else {}).model_dump(mode="json")
    settings.pop("cache_dir")
    return settings


def config_hash(study: dict[str, Any]) -> str:
    """The first 16 hex digits of the sha256 of the study's canonical JSON."""
    payload = json.dumps(study, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def study_hash() -> str:
    return config_hash({**STUDY, "gap_spec": gap_spec()})


def registered_hashes(pattern: str = f"{PREREG_STEM}*.md") -> dict[str, str]:
    """Pre-registration file -> the config hash it records (``Config hash: `...```)."""
    import re

    out = {}
    for path in sorted(PREREG.glob(pattern)):
        m = re.search(r"[Cc]onfig hash:\s*`([0-9a-f]{16})`", path.read_text(encoding="utf-8"))
        if m:
            out[path.name] = m.group(1)
    return out


def check_preregistration() -> str:
    current = study_hash()
    found = registered_hashes()
    for name, value in found.items():
        if value == current:
            return name
    listed = ", ".join(f"{n}: {h}" for n, h in found.items()) or "none"
    raise SystemExit(f"error: the study's config hash is {current}, which no pre-registration records ({listed}).\n"
                     f"  fix: restore the pre-registered STUDY, or commit a revised pre-registration beside the first "
                     f"({PREREG}/{PREREG_STEM}-r2.md) recording `Config hash: {current}` (never replace the first)")


def cells() -> list[dict[str, Any]]:
    """Every training cell: arm x learning rate x seed (x delta / tie tolerance), then the sweeps."""
    out = []
    for arm, d in ARMS.items():
        extra = [{}]
        for field, values in d.get("grid", {}).items():
            extra = [{**e, field: v} for e in extra for v in values]
        for e in extra:
            for lr in LR_GRID:
                for seed in SEEDS:
                    out.append({"arm": arm, "lr": lr, "seed": seed, **e, "phase": "grid"})
    for arm in STUDY["rmax_sweep_arms"]:
        for r in RMAX_SWEEP:
            for seed in SEEDS:
                out.append({"arm": arm, "r_max": r, "seed": seed, "phase": "rmax"})
    for arm in STUDY["mix_sweep_arms"]:
        for mix in MIX_SWEEP:
            if mix == [4, 4]:
                continue  # the grid's cell at the chosen learning rate
            for seed in SEEDS:
                out.append({"arm": arm, "mix": mix, "seed": seed, "phase": "mix"})
    return out


def estimate(costs: dict[str, float] = COSTS) -> dict[str, Any]:
    d = STUDY["distill"]
    steps = -(-d["n_train"] // d["questions_per_step"])
    n_val, n_test = STUDY["n_validation_eval"], STUDY["n_test_eval"]
    per_cell = {}
    seconds = 0.0
    for c in cells():
        arm = ARMS.get(c["arm"], ARMS["masters_paper"])
        step = costs["step_sft"] if arm["objective"] == "sft" else costs["step_teacher"]
        if arm.get("teacher", "").startswith("mid,") if isinstance(arm.get("teacher"), str) else False:
            step *= 1.1
        train = steps * step
        evaluate = (n_val + (n_test if c["phase"] != "grid" else 0)) / 1000 * costs["decode_student_per_1000"]
        per_cell[c["arm"]] = per_cell.get(c["arm"], 0.0) + train + evaluate
        seconds += train + evaluate
    # test evaluation of each grid arm at its chosen values (5 seeds)
    test = len(ARMS) * len(SEEDS) * n_test / 1000 * costs["decode_student_per_1000"]
    levels = int(round(d["bank_r_max"] / d["step"])) + 1
    bank_rows = d["n_train"] * (levels * d["responses_per_level"] + d["student_responses"])
    bank_rows += d["n_train"] * d["responses_per_level"] * 6  # mid teacher (chain control) and the no-gap student
    bank = bank_rows * costs["bank_row"]
    teacher_levels = levels * 2 * n_val / 1000 * costs["decode_teacher_per_1000"]
    total = seconds + test + bank + teacher_levels
    return {"cells": len(cells()), "steps_per_cell": steps, "train_and_validation_s": round(seconds),
            "test_s": round(test), "bank_rows": bank_rows, "bank_s": round(bank), "teacher_levels_s": round(teacher_levels),
            "cpu_hours": round(total / 3600, 2), "per_arm_hours": {k: round(v / 3600, 2) for k, v in per_cell.items()}}


def priority(cell: dict[str, Any]) -> int:
    """Never-cut arms first (a study cut short keeps them), then the bounded objectives (the primary's
    choice needs them), then the other controls; grid order within an arm."""
    order = [a for a in STUDY["never_cut"] if a in ARMS] + [a for a, d in ARMS.items() if d.get("bounded")]
    order += [a for a in ARMS if a not in order]
    return order.index(cell["arm"])


def probe_r_max() -> float:
    path = HERE.parent / "results" / "shapes_reason_probe.json"
    data = json.loads(path.read_text())
    if data.get("failed"):
        raise SystemExit(f"error: the probe's gates {data['failed']} failed ({path}); the study does not run.\n"
                         "  fix: recalibrate the task's preconditions and revise the pre-registration beside the first")
    return float(data["r_max"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="list the cells and estimate CPU-hours; run nothing")
    p.add_argument("--hash", action="store_true", help="print the study's config hash")
    p.add_argument("--out", default="runs/quality-reason", help="work directory (resumable)")
    p.add_argument("--models", default="runs/shapes-reason/models",
                   help="the capacity models (python -m masters.engine.capacity --out runs/shapes-reason)")
    p.add_argument("--worker", default="0/1", help="K/N: this process runs every N-th cell from the K-th "
                   "(worker 0 also prepares the banks and writes the report)")
    p.add_argument("--hours", type=float, default=None, help="start no cell after this many hours (rerun to go on)")
    p.add_argument("--report", action="store_true", help="only write the report from the finished cells")
    p.add_argument("--results", default=str(HERE.parent / "results"))
    args = p.parse_args(argv)
    if args.hash:
        print(study_hash())
        return 0
    if args.dry_run:
        est = estimate()
        print(json.dumps({"config_hash": study_hash(), "registered": registered_hashes(), **est}, indent=2))
        if est["cpu_hours"] > 8:
            print(f"over the 8 CPU-hour budget by {est['cpu_hours'] - 8:.2f} h; cut only arms outside "
                  f"{', '.join(STUDY['never_cut'])}", file=sys.stderr)
        return 0
    name = check_preregistration()
    print(f"pre-registration {name} matches config hash {study_hash()}", flush=True)
    from reason_runner import run_study

    return run_study(args, study=STUDY, arms=ARMS, cells=cells(), bounded=BOUNDED, priority=priority,
                     r_max=probe_r_max(), prereg=name, config_hash=study_hash())


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main())
