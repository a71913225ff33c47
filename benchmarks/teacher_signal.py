"""Teacher signal modes side by side: online (masked teacher in memory) against cached (top-k).

    python benchmarks/teacher_signal.py [--steps 6] [--top-k 8,64]

One bank (a medium LLaVA teacher, a small student, shapes task) is generated once; then each
contender trains the same steps in its own subprocess while the parent samples its RSS with
psutil (design decision 15). Reported: median optimizer-step time, peak RSS, the cost of
building the cache, and the error of the cached JSD against the online one on the same steps.
Writes benchmarks/results/teacher_signal.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from masters.config import validate_run_spec
from masters.engine.trainer import build_teacher_cache, train, training_dir
spec = validate_run_spec(json.loads(sys.argv[1]))
started = time.perf_counter()
if sys.argv[2] == "cache":
    build_teacher_cache(spec)
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - started, "rows": []}))
    raise SystemExit(0)
result = train(spec, progress=False)
rows = [json.loads(l) for l in (training_dir(spec) / "metrics.jsonl").read_text().splitlines()]
print("RESULT " + json.dumps({"seconds": time.perf_counter() - started, "rows": rows}))
"""


def run_child(config: dict, mode: str = "train") -> tuple[dict, int]:
    from _measure import PeakRSS

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(config), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    with PeakRSS(proc.pid) as rss:
        out, err = proc.communicate()
    peak = rss.peak
    if proc.returncode != 0:
        raise SystemExit(f"contender failed:\n{err[-3000:]}")
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[7:]), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per contender")
    parser.add_argument("--top-k", default="8,64", help="cache sizes to compare")
    parser.add_argument("--teacher-hidden", type=int, default=512)
    parser.add_argument("--teacher-layers", type=int, default=8)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from masters.bank.scoring import score_bank
    from masters.bank.store import ResponseBank
    from masters.data import load_splits
    from masters.engine.generation import bank_dir, generate_bank
    from masters.models import build_tiny_model, build_tokenizer
    from masters.config import validate_run_spec

    tmp = Path(tempfile.mkdtemp(prefix="masters-teacher-signal-"))
    try:
        build_tokenizer(tmp / "tok")
        build_tiny_model("llava", "small", tmp / "teacher", tokenizer_dir=tmp / "tok", seed=1,
                         hidden=args.teacher_hidden, layers=args.teacher_layers,
                         intermediate=4 * args.teacher_hidden, heads=8)
        build_tiny_model("llava", "tiny", tmp / "student", tokenizer_dir=tmp / "tok", seed=2)
        teacher_params = sum(p.numel() for p in
                             __import__("transformers").LlavaForConditionalGeneration.from_pretrained(
                                 tmp / "teacher").parameters())
        n_train = args.steps * 2
        base = {
            "teacher": str(tmp / "teacher"), "student": str(tmp / "student"),
            "data": {"source": "shapes", "n_train": n_train, "n_validation": 0, "n_test": 2},
            "generation": {"n_teacher_responses": 4, "n_student_responses": 4, "max_new_tokens": 16,
                           "batch_size": 4, "bank_levels": "all"},
            "training": {"n_teacher": 4, "n_student": 4, "questions_per_step": 2, "learning_rate": 1e-4,
                         "checkpoint_every": 10_000},
        }
        bank_run = tmp / "bank-run"
        spec = validate_run_spec({**base, "output_dir": str(bank_run)})
        generate_bank(spec, progress=False)
        score_bank(ResponseBank(bank_dir(spec)), {s.id: s for s in load_splits(spec.task)["train"]},
                   spec.rewards, progress=False)

        contenders = [("online", {"teacher_signal": "online"})]
        contenders += [(f"cached top-{k}", {"teacher_signal": "cached", "cache_top_k": int(k)})
                       for k in args.top_k.split(",")]
        rows = []
        for label, training in contenders:
            out = tmp / label.replace(" ", "-")
            shutil.copytree(bank_run / "bank", out / "bank")
            config = {**base, "output_dir": str(out), "training": {**base["training"], **training}}
            cache_s = cache_peak = 0.0
            if training["teacher_signal"] == "cached":  # its own process, as `masters train --cache-only`
                cached, cache_peak = run_child(config, "cache")
                cache_s = cached["seconds"]
            result, peak = run_child(config)
            steps = result["rows"]
            step_times = [r["step_seconds"] for r in steps[1:]] or [steps[0]["step_seconds"]]
            rows.append({"contender": label, "median_step_s": statistics.median(step_times),
                         "total_s": result["seconds"], "peak_rss_mib": peak / 2**20,
                         "cache_build_s": cache_s, "cache_build_peak_rss_mib": cache_peak / 2**20,
                         "distill": [r["loss/distill"] for r in steps]})
        online = rows[0]
        for row in rows:
            row["step_ratio"] = row["median_step_s"] / online["median_step_s"]
            row["rss_ratio"] = row["peak_rss_mib"] / online["peak_rss_mib"]
            diffs = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(row["distill"], online["distill"])]
            row["jsd_rel_error_first_step"] = diffs[0]
            row["jsd_rel_error_median"] = statistics.median(diffs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    report = {
        "benchmark": "teacher_signal",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"load average {os.getloadavg()[0]:.1f}",
        "teacher_params": teacher_params, "steps": args.steps, "threads": 1, "rows": rows,
        "note": "Each contender ran in its own subprocess; peak RSS sampled every 20 ms. The cache is built in a "
                "separate process (`masters train --cache-only`), so the training process never loads the teacher. After the first "
                "optimizer step the JSD differs because the students diverge; the first step compares "
                "identical students. The cached JSD is a lower bound of the online one (bucketed tail).",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "teacher_signal.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Teacher signal: online vs cached", "", f"Machine: {report['machine']}. Teacher "
             f"{teacher_params / 1e6:.1f}M parameters, {args.steps} steps, 1 thread.", "",
             "| contender | median step (s) | x online | training process total (s) | training peak RSS (MiB) | "
             "x online | cache build (s, own process) | JSD rel. error, step 0 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['contender']} | {r['median_step_s']:.3f} | {r['step_ratio']:.2f} | {r['total_s']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['rss_ratio']:.2f} | {r['cache_build_s']:.1f} | "
                     f"{r['jsd_rel_error_first_step']:.3f} |")
    lines += ["", report["note"]]
    (RESULTS / "teacher_signal.md").write_text("\n".join(lines) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title="teacher signal: online vs cached")
    for col in ("contender", "step s", "x online", "total s", "peak RSS MiB", "x online", "JSD err step 0"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["contender"], f"{r['median_step_s']:.3f}", f"{r['step_ratio']:.2f}", f"{r['total_s']:.1f}",
                      f"{r['peak_rss_mib']:.0f}", f"{r['rss_ratio']:.2f}", f"{r['jsd_rel_error_first_step']:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
