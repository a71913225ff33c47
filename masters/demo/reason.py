"""``masters demo --task shapes_reason``: the evidence testbed end to end, one seed (not evidence).

1. models   the capacity-gap teacher and student (``masters.engine.capacity``, cached by their
            settings; about 40 min on two CPU cores the first time, seconds afterwards);
2. probe    the calibration gates G1-G4 on the train and validation splits; a failing gate stops
            the demo with exit 2, its value and its fix; G2 sets r_max;
3. runs     SFT and Masters (the paper's objective, staircase from the probe's r_max) from the
            same student, on the same 512 questions and 128 steps;
4. table    greedy final-answer accuracy and trace faithfulness on the test split: the teacher,
            the student before and after each run.

The pre-registered study over seeds, arms and controls is ``benchmarks/quality_reason.py``; this
demo shows the pipeline on the testbed, with one seed, and says so in its title.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from masters.files import atomic_write_json

TITLE = "shapes_reason pipeline demonstration (1 seed; not evidence)"
N_TRAIN, N_VALIDATION, N_TEST = 512, 2048, 1024
MAX_NEW_TOKENS = 26
RUNS = ("sft", "masters")


def run_config(out: Path, models: dict[str, Path], method: str, r_max: float) -> dict[str, Any]:
    """The run of one method (``configs/shapes-reason.yaml``'s settings, inside the demo's directory)."""
    return {
        "output_dir": str(out / method), "bank_dir": str(out / "bank"), "seed": 0,
        "teacher": str(models["teacher"]), "student": str(models["student"]),
        "task": {"name": "shapes_reason", "n_train": N_TRAIN, "n_validation": N_VALIDATION, "n_test": N_TEST, "seed": 0},
        "masker": "magnitude", "schedule": {"name": "staircase", "r_max": r_max, "step": 0.05},
        "rewards": ["final_answer", {"name": "trace_faithfulness", "weight": 0.0}, "jsd_distill"],
        "objective": method,
        "generation": {"n_teacher_responses": 8, "n_student_responses": 8, "max_new_tokens": MAX_NEW_TOKENS,
                       "temperature": 1.0, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.05, "batch_size": 64},
        "training": {"learning_rate": 3e-4, "n_teacher": 4, "n_student": 4, "questions_per_step": 4,
                     "checkpoint_every": 10**9},
    }


def run_reason_demo(out: Path, *, say: Callable[[str], None], print_table: Callable[[Any], None],
                    progress: bool = True) -> dict[str, Any]:
    from masters.config import validate_run_spec
    from masters.data import load_splits
    from masters.engine.capacity import GapSpec, build_models
    from masters.engine.evaluate import evaluate_model
    from masters.engine.pipeline import needed_stages, run_pipeline
    from masters.engine.probe import failure, render_tables, run_probe

    out.mkdir(parents=True, exist_ok=True)
    say("[bold]1/4 models[/]: the capacity-gap teacher and student (cached by their settings)")
    models = build_models(GapSpec(cache_dir=str(out / "cache")), out, ("teacher", "student"), progress=progress,
                          say=say)
    say("[bold]2/4 probe[/]: gates G1-G4 on the train and validation splits")
    probe_spec = validate_run_spec(run_config(out, models, "masters", 0.2), source="demo shapes_reason")
    report = run_probe(probe_spec, say=say)
    for table in render_tables(report):
        print_table(table)
    atomic_write_json(out / "probe.json", report.to_json(), default=str)
    error = failure(report)
    if error is not None:
        raise error
    r_max = float(report.r_max)
    results: dict[str, Any] = {"title": TITLE, "r_max": r_max, "rows": []}
    test = None
    rewards = None
    say(f"[bold]3/4 runs[/]: SFT and Masters (staircase from r_max {r_max:.2f}), seed 0")
    students = {"teacher": models["teacher"], "student (before)": models["student"]}
    for method in RUNS:
        spec = validate_run_spec(run_config(out, models, method, r_max), source=f"demo shapes_reason {method}")
        run_pipeline(spec, stages=[s for s in needed_stages(spec) if s != "evaluate"], progress=progress,
                     on_stage=lambda stage, state, m=method: say(f"  {m} {stage}: {state}"))
        students[method] = Path(spec.output_dir) / "student"
        if test is None:
            test, rewards = list(load_splits(spec.task)["test"]), spec.rewards
    say(f"[bold]4/4 evaluate[/]: greedy decoding of {len(test)} test questions")
    for name, path in students.items():
        res = evaluate_model(path, test, rewards, batch_size=100, max_new_tokens=MAX_NEW_TOKENS)
        results["rows"].append({"model": name, "final_answer": res.accuracy["final_answer"],
                                "trace_faithfulness": res.accuracy.get("trace_faithfulness"), "n": res.n})
    atomic_write_json(out / "results.json", results)
    return results


def results_table(results: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=results["title"])
    table.add_column("model")
    table.add_column("final answer", justify="right")
    table.add_column("trace faithfulness", justify="right")
    for row in results["rows"]:
        faith = row["trace_faithfulness"]
        table.add_row(row["model"], f"{row['final_answer']:.3f}", "-" if faith is None else f"{faith:.3f}")
    return table
