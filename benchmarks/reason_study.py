"""Running the pre-registered shapes_reason study (``quality_reason.py`` holds what it is; this, how it runs).

Every cell is a run directory ``OUT/cells/<arm>/<setting>`` (the base config of
``configs/shapes-reason.yaml`` with the arm's objective, schedule, teacher, masker and student):
its bank, score and train stages go through ``masters.engine.pipeline`` (a finished stage is
skipped), then the student is greedy-decoded on the first 1000 validation questions and the result
kept beside it (``eval/validation-1000.json``). The test split is read only for the cells at an
arm's chosen values (``eval/test-1024.json``) and for the sweeps, which choose nothing.

Kill it and rerun it: finished cells are skipped. Two processes can share the cells
(``--worker 0/2`` and ``--worker 1/2``); worker 0 prepares the banks and the temperature table
first and the others wait for it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "shapes-reason.yaml"
MAX_NEW_TOKENS = 26
EVAL_BATCH = 100
ACCURACY = "final_answer"
FAITHFULNESS = "trace_faithfulness"


# =============================================================================================
# Configs
# =============================================================================================


def base_config(study: Mapping[str, Any], out: Path, models: Path, r_max: float) -> dict[str, Any]:
    """The run every cell starts from: the probe's config with the study's sizes and r_max."""
    from masters.config import read_config

    base = dict(read_config(CONFIG))
    d = study["distill"]
    base.update({
        "output_dir": str(out / "base-run"), "bank_dir": str(out / "banks" / "main"),
        "teacher": str(models / "teacher"), "student": str(models / "student"),
        "task": {**study["task"], "n_train": d["n_train"], "n_validation": study["n_validation_eval"],
                 "n_test": study["n_test_eval"]},
        "schedule": {"name": "staircase", "r_max": r_max, "step": d["step"]},
    })
    base["generation"] = {**base["generation"], "n_teacher_responses": d["responses_per_level"],
                          "n_student_responses": d["student_responses"], "bank_levels": "all"}
    base["training"] = {**base["training"], "n_teacher": d["n_teacher"], "n_student": d["n_student"],
                        "questions_per_step": d["questions_per_step"], "checkpoint_every": 10**9}
    return base


def _schedule(text: str | None, r_max: float, step: float) -> dict[str, Any] | None:
    if text is None:
        return None
    name, _, level = text.partition("@")
    value = r_max if level == "R_MAX" else float(level)
    return {"name": name, "r_max": value, "step": step}


def _objective(objective: Any, cell: Mapping[str, Any], primary: Mapping[str, Any] | None) -> dict[str, Any]:
    if objective == "PRIMARY":
        if primary is None:
            raise RuntimeError("the primary bounded objective is not chosen yet (its arms' validation cells first)")
        return copy.deepcopy(primary["objective"])
    if isinstance(objective, str):
        return {"name": objective}
    out = dict(objective)
    for key, value in out.items():
        if value == "DELTA":
            out[key] = cell["advantage_shift"]
    return out


def cell_config(arms: Mapping[str, Any], base: Mapping[str, Any], cell: Mapping[str, Any], out: Path, models: Path,
                *, temperatures: Mapping[str, float] | None = None, primary: Mapping[str, Any] | None = None,
                chosen_lr: float | None = None) -> dict[str, Any]:
    """The run config of one cell (see ``quality_reason.cells``)."""
    arm = arms[cell["arm"]]
    config = copy.deepcopy(dict(base))
    r_max = float(base["schedule"]["r_max"])
    step = float(base["schedule"]["step"])
    bank = "main"
    config["seed"] = int(cell["seed"])
    config["objective"] = _objective(arm["objective"], cell, primary)
    if cell.get("phase") == "rmax":
        config["schedule"] = {"name": "staircase", "r_max": cell["r_max"], "step": step}
    elif arm.get("schedule") is not None:
        config["schedule"] = _schedule(arm["schedule"], r_max, step)
    lr = cell.get("lr", chosen_lr)
    if lr is None:
        raise RuntimeError(f"{cell['arm']}: no learning rate chosen yet (its validation cells first)")
    config["training"]["learning_rate"] = float(lr)
    if cell.get("phase") == "mix":
        config["training"]["n_teacher"], config["training"]["n_student"] = cell["mix"]
    teacher = arm.get("teacher")
    if teacher == "teacher@T(entropy)":
        if temperatures is None:
            raise RuntimeError("the entropy-matched temperatures are not computed yet")
        config["masker"] = {"name": "temperature", "temperatures": dict(temperatures)}
        bank = "temperature"
    elif teacher == "teacher passes 2,4,final":
        passes = (models / "teacher").resolve().parent / "passes"
        config["teachers"] = [str(passes / "pass-2"), str(passes / "pass-4"), str(models / "teacher")]
        config.pop("teacher")
        bank = "curriculum"
    elif teacher == "mid,teacher":
        config["teachers"] = [str(models / "mid"), str(models / "teacher")]
        config.pop("teacher")
        bank = "chain"
    if arm.get("masker"):
        config["masker"] = {"name": arm["masker"]}
        bank = arm["masker"]
    if arm.get("student") == "mid":
        config["student"] = str(models / "mid")
        bank = "no-gap-student"
    rewards = []
    for reward in config["rewards"]:
        reward = {"name": reward} if isinstance(reward, str) else dict(reward)
        if reward["name"] == FAITHFULNESS and arm.get("faithfulness_weight") is not None:
            reward["weight"] = arm["faithfulness_weight"]
        if reward["name"] == "jsd_distill" and "relative_tie_tolerance" in cell:
            reward["relative_tie_tolerance"] = cell["relative_tie_tolerance"]
        rewards.append(reward)
    config["rewards"] = rewards
    if bank != "main":  # a bank of its own, holding only what its cells train on
        config["generation"] = {**config["generation"], "bank_levels": "scheduled"}
    config["bank_dir"] = str(out / "banks" / bank)
    config["output_dir"] = str(cell_dir(out, cell))
    return config


def cell_name(cell: Mapping[str, Any]) -> str:
    parts = []
    if "lr" in cell:
        parts.append(f"lr{cell['lr']:g}")
    if "advantage_shift" in cell:
        parts.append(f"delta{cell['advantage_shift']:g}")
    if "relative_tie_tolerance" in cell:
        parts.append(f"tau{cell['relative_tie_tolerance']:g}")
    if cell.get("phase") == "rmax":
        parts.append(f"rmax{cell['r_max']:g}")
    if cell.get("phase") == "mix":
        parts.append(f"mix{cell['mix'][0]}+{cell['mix'][1]}")
    parts.append(f"seed{cell['seed']}")
    return "-".join(parts)


def cell_dir(out: Path, cell: Mapping[str, Any]) -> Path:
    return out / "cells" / cell["arm"] / cell_name(cell)


def setting_of(cell: Mapping[str, Any]) -> str:
    """The cell's grid point without its seed (what the learning-rate choice ranges over)."""
    return "-".join(p for p in cell_name(cell).split("-") if not p.startswith("seed"))


# =============================================================================================
# Running cells
# =============================================================================================


def _retry_locked(work: Callable[[], Any], what: str, say: Callable[[str], None]) -> Any:
    """A shared bank is locked while another worker's cell scores it: wait for it, then go on."""
    from masters.engine.locks import LockedError

    for attempt in range(240):
        try:
            return work()
        except LockedError:
            if attempt == 0:
                say(f"  {what}: a shared directory is locked by the other worker; waiting")
            time.sleep(5)
    raise RuntimeError(f"{what}: still locked after 20 minutes")


def run_cell(config: Mapping[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    """Bank (shared), score and train one cell; skipped stages cost nothing."""
    from masters.config import validate_run_spec
    from masters.engine.pipeline import needed_stages, run_pipeline

    spec = validate_run_spec(dict(config), source=f"study cell {config['output_dir']}")
    stages = [s for s in needed_stages(spec) if s != "evaluate"]
    began = time.perf_counter()
    _retry_locked(lambda: run_pipeline(spec, stages=stages, progress=False), Path(config["output_dir"]).name, say)
    return {"seconds": time.perf_counter() - began}


def ledger_path(ledger: Path, cell: Mapping[str, Any], split: str, n: int) -> Path:
    """Where a cell's evaluation is kept: in the committed ledger, so that a study spanning sessions
    (and fresh checkouts) resumes from what earlier sessions measured."""
    return ledger / cell["arm"] / f"{cell_name(cell)}-{split}-{n}.json"


def evaluate_cell(config: Mapping[str, Any], split: str, samples: Sequence[Any], path: Path) -> dict[str, Any]:
    """Greedy accuracy of the cell's student on ``samples`` of ``split``, kept at ``path``."""
    from masters.config import validate_run_spec
    from masters.engine.evaluate import evaluate_model
    from masters.files import atomic_write_json

    if path.exists():
        return json.loads(path.read_text())
    spec = validate_run_spec(dict(config))
    res = evaluate_model(Path(config["output_dir"]) / "student", samples, spec.rewards, batch_size=EVAL_BATCH,
                         max_new_tokens=MAX_NEW_TOKENS, split=split)
    record = {"split": split, "n": res.n, "accuracy": res.accuracy, "seconds": res.seconds,
              "train_seconds": train_seconds(config)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return record


def train_seconds(config: Mapping[str, Any]) -> float | None:
    stages = Path(config["output_dir"]) / "stages.json"
    if not stages.exists():
        return None
    data = json.loads(stages.read_text())
    return (data.get("train") or {}).get("seconds")


# =============================================================================================
# Selection on validation, and the comparisons
# =============================================================================================


def mean_se(values: Sequence[float]) -> dict[str, Any]:
    n = len(values)
    mean = statistics.fmean(values) if n else math.nan
    sd = statistics.stdev(values) if n > 1 else math.nan
    return {"mean": mean, "sd": sd, "se": sd / math.sqrt(n) if n > 1 else math.nan, "n": n, "values": list(values)}


def welch(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[float, float]:
    """Difference of means a - b and the Welch standard error of the difference."""
    diff = a["mean"] - b["mean"]
    se = math.sqrt(a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"]) if a["n"] > 1 and b["n"] > 1 else math.nan
    return diff, se


def beats(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool | None:
    """The pre-registered rule: a - b > 2 x the Welch SE of the difference (None: not measured)."""
    if not a or not b or a["n"] < 2 or b["n"] < 2:
        return None
    diff, se = welch(a, b)
    return diff > 2 * se


def choose(validation: Mapping[str, Mapping[str, Any]], n_seeds: int) -> str | None:
    """The arm's setting with the highest mean validation accuracy; None until every setting has every seed."""
    if not validation or any(v["n"] < n_seeds for v in validation.values()):
        return None
    return max(sorted(validation), key=lambda s: validation[s]["mean"])


def holm(pvalues: Mapping[str, float], alpha: float = 0.05) -> dict[str, bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise ``alpha``."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    rejected, still = {}, True
    for i, key in enumerate(order):
        still = still and pvalues[key] <= alpha / (len(order) - i)
        rejected[key] = still
    return rejected


def two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def interior_optimum(points: Mapping[float, Mapping[str, Any]]) -> bool | None:
    """An interior point of the sweep that beats both ends by the comparison rule."""
    if len(points) < 3 or any(p["n"] < 2 for p in points.values()):
        return None
    keys = sorted(points)
    best = max(keys[1:-1], key=lambda k: points[k]["mean"])
    return bool(beats(points[best], points[keys[0]]) and beats(points[best], points[keys[-1]]))


def verdict(primary: Mapping[str, Any] | None, table: Mapping[str, Mapping[str, Any]],
            rmax: Mapping[float, Mapping[str, Any]]) -> dict[str, Any]:
    """The pre-registered criteria (``CRITERIA``), evaluated as they fall; None where a cell is missing."""
    p = primary
    checks = {
        "primary > sft": beats(p, table.get("sft")),
        "primary > naive_kd": beats(p, table.get("naive_kd")),
        "primary > progressive_kd": beats(p, table.get("progressive_kd")),
        "primary > control_random_mask": beats(p, table.get("control_random_mask")),
        "primary > control_temperature": beats(p, table.get("control_temperature")),
        "primary r_max sweep: interior optimum": interior_optimum(rmax),
    }
    refute = {
        "sft > primary": beats(table.get("sft"), p),
        "progressive_kd > primary": beats(table.get("progressive_kd"), p),
        "r_max 0 > every r_max > 0": (None if not rmax or 0.0 not in rmax else
                                      all(beats(rmax[0.0], v) for k, v in rmax.items() if k > 0)),
    }
    if any(v is True for v in refute.values()):
        outcome = "refuted"
    elif all(v is True for v in checks.values()):
        outcome = "supported"
    elif any(v is None for v in [*checks.values(), *refute.values()]):
        outcome = "incomplete"
    else:
        outcome = "inconclusive"
    return {"outcome": outcome, "support": checks, "refute": refute}


def wait_for(path: Path, say: Callable[[str], None], timeout_s: float = 6 * 3600) -> None:
    began = time.time()
    if not path.exists():
        say(f"waiting for worker 0 to write {path.name}")
    while not path.exists():
        if time.time() - began > timeout_s:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(10)


def worker_share(items: Sequence[Any], worker: str) -> list[Any]:
    k, n = (int(x) for x in worker.split("/"))
    if not 0 <= k < n:
        raise ValueError(f"--worker {worker}: want K/N with 0 <= K < N")
    return [item for i, item in enumerate(items) if i % n == k]


def sha256_16(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def model_files(models: Path) -> dict[str, Path]:
    """The study's models: the three capacity models and the teacher's SFT checkpoints the curriculum uses."""
    passes = (models / "teacher").resolve().parent / "passes"
    return {"teacher": models / "teacher", "mid": models / "mid", "student": models / "student",
            "teacher_pass_2": passes / "pass-2", "teacher_pass_4": passes / "pass-4"}


def check_models(models: Path, expected: Mapping[str, str]) -> None:
    """The models must be the pre-registered ones, weight for weight (a settings hash cannot tell
    two builds apart when one ran under other code)."""
    problems = []
    files = model_files(models)
    for role in expected:
        weights = files[role] / "model.safetensors"
        got = sha256_16(weights) if weights.exists() else "missing"
        if got != expected.get(role):
            problems.append(f"{role} ({weights}): {got}, registered {expected.get(role)}")
    if problems:
        raise SystemExit("error: the models are not the pre-registered ones: " + "; ".join(problems) + "\n"
                         "  fix: build them with python -m masters.engine.capacity --out runs/shapes-reason (the "
                         "build is deterministic on CPU), or revise the pre-registration beside the others")


def threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("MASTERS_STUDY_THREADS", "1")))
