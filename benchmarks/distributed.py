"""Memory at scale: per-rank peak RSS and step time of a ~100M-parameter student at 2 ranks.

    .venv/bin/python benchmarks/distributed.py            # writes benchmarks/results/distributed.{json,md}

Each engine (DDP, FSDP2, ZeRO-3; the shipped configs/accelerate files) trains the same student
for a few optimizer steps with ``accelerate launch --num_processes 2 -m masters.cli train``, each
in its own processes; the parent samples every worker's RSS (design decision 15). The runs use
``teacher_signal: cached`` and reference log-probs computed beforehand (both built once, in their
own process, and copied into every run), so the training processes hold only the student: what
sharding can shrink. One more row per engine trains with the online teacher (held whole on every
rank), reported without a target.

Target: ZeRO-3's and FSDP2's per-rank peak <= 0.65 x DDP's (cached teacher signal).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ROOT / "configs" / "accelerate"
ENGINES = {"ddp": "ddp.yaml", "fsdp2": "fsdp2.yaml", "zero3": "deepspeed-zero3.yaml"}
TARGET = 0.65
# ~100M parameters (LLaVA: Llama text model + CLIP vision tower), built from config classes.
STUDENT = {"hidden": 768, "layers": 14, "heads": 12, "intermediate": 2048, "vision_hidden": 256, "vision_layers": 2}


class PerProcessPeak:
    """Peak RSS of every descendant of ``pid`` (the launcher's workers), sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval, self.peaks, self.cmd = pid, interval, {}, {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    def _sample(self):
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            try:
                for child in root.children(recursive=True):
                    try:
                        rss = child.memory_info().rss
                        self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), rss)
                        self.cmd.setdefault(child.pid, " ".join(child.cmdline()))
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            time.sleep(self.interval)

    def workers(self) -> list[int]:
        return [peak for pid, peak in self.peaks.items() if "masters.cli" in self.cmd.get(pid, "")]


def config(work: Path, out: Path, *, cached: bool, steps: int) -> dict:
    return {
        "output_dir": str(out), "teacher": str(work / "teacher"), "student": str(work / "student"),
        "task": {"name": "shapes", "n_train": 2 * steps, "n_validation": 0, "n_test": 2},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 8, "batch_size": 8},
        "training": {"n_teacher": 2, "n_student": 2, "learning_rate": 1e-5, "questions_per_step": 1,
                     "checkpoint_every": 1000, "teacher_signal": "cached" if cached else "online", "cache_top_k": 16},
    }


def run(cmd: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return proc


def prepare(work: Path, steps: int, env: dict) -> dict[bool, Path]:
    """Models, a scored bank, reference log-probs and the teacher cache, each built in its own process."""
    import yaml

    if not (work / "student").exists():
        code = ("import sys; from pathlib import Path; from masters.models import build_tiny_model, build_tokenizer\n"
                "w = Path(sys.argv[1]); build_tokenizer(w / 'tokenizer')\n"
                f"build_tiny_model('llava', 'small', w / 'teacher', tokenizer_dir=w / 'tokenizer', seed=1, **{STUDENT!r})\n"
                f"build_tiny_model('llava', 'small', w / 'student', tokenizer_dir=w / 'tokenizer', seed=2, **{STUDENT!r})\n")
        run([sys.executable, "-c", code, str(work)], env, 1800)
    prepared = {}
    for cached in (True, False):
        base = work / ("base-cached" if cached else "base-online")
        if not (work / f"{base.name}.ready").exists():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir(parents=True)
            path = work / f"{base.name}.yaml"  # beside the output directory: masters claims it
            path.write_text(yaml.safe_dump(config(work, base, cached=cached, steps=steps)))
            if cached is False and (work / "base-cached" / "bank").exists():
                shutil.copytree(work / "base-cached" / "bank", base / "bank")
            else:
                run([sys.executable, "-m", "masters.cli", "generate", str(path)], env, 3600)
                run([sys.executable, "-m", "masters.cli", "score", str(path)], env, 1800)
            if cached:  # the cache and the reference log-probs, in a process of their own
                run([sys.executable, "-m", "masters.cli", "train", "--cache-only", str(path)], env, 3600)
            (work / f"{base.name}.ready").write_text("")
        prepared[cached] = base
    return prepared


def bench(engine: str, base: Path, runs: Path, env: dict, *, cached: bool, steps: int) -> dict:
    import yaml

    out = runs / f"{engine}-{'cached' if cached else 'online'}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("ready", "student", "stages.json"))
    for ckpt in out.glob("train/*/checkpoints"):
        shutil.rmtree(ckpt)
    for metrics in out.glob("train/*/metrics.jsonl"):
        metrics.unlink()
    cfg = yaml.safe_load((base.parent / f"{base.name}.yaml").read_text())
    cfg["output_dir"] = str(out)
    path = runs / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / ENGINES[engine]),
           "--num_processes", "2", "--main_process_port", port, "--num_cpu_threads_per_process", "1",
           "-m", "masters.cli", "train", str(path)]
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    with PerProcessPeak(proc.pid) as sampler:
        _, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{engine}: failed\n{err[-4000:]}")
    (metrics,) = out.glob("train/*/metrics.jsonl")
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    workers = sampler.workers()
    if len(workers) != 2:
        raise SystemExit(f"{engine}: expected 2 worker processes, saw {len(workers)}")
    return {"engine": engine, "teacher_signal": "cached" if cached else "online", "ranks": 2,
            "peak_rss_per_rank_mib": round(max(workers) / 2**20, 1),
            "peak_rss_ranks_mib": [round(w / 2**20, 1) for w in sorted(workers)],
            "step_seconds_median": round(statistics.median(r["step_seconds"] for r in rows[1:] or rows), 3),
            "steps": len(rows), "wall_seconds": round(time.perf_counter() - began, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/masters-bench-distributed")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--no-online", action="store_true", help="skip the online-teacher rows")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    prepared = prepare(work, args.steps, env)
    import torch

    from masters.adapters.resolve import resolve_adapter

    n_params = sum(p.numel() for p in resolve_adapter(str(work / "student")).model.parameters())
    del torch
    rows = []
    for cached in (True,) if args.no_online else (True, False):
        for engine in args.engines.split(","):
            row = bench(engine, prepared[cached], work / "runs", env, cached=cached, steps=args.steps)
            print(json.dumps(row), flush=True)
            rows.append(row)
    ddp = next((r for r in rows if r["engine"] == "ddp" and r["teacher_signal"] == "cached"), None)
    checks = []
    for r in rows:
        r["peak_vs_ddp"] = round(r["peak_rss_per_rank_mib"] / next(
            x for x in rows if x["engine"] == "ddp" and x["teacher_signal"] == r["teacher_signal"])["peak_rss_per_rank_mib"], 3) if ddp else None
        if r["teacher_signal"] == "cached" and r["engine"] in ("fsdp2", "zero3") and ddp:
            checks.append({"check": f"{r['engine']} per-rank peak <= {TARGET} x DDP's (cached teacher)",
                           "value": r["peak_vs_ddp"], "passed": r["peak_vs_ddp"] <= TARGET})
    import platform

    result = {"student_parameters": n_params, "student_dims": STUDENT, "steps": args.steps,
              "questions_per_step": 2, "rows": rows, "checks": checks,
              "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "note": "CPU only, gloo; 2 cores shared with other work: step times are indicative"},
              "command": "python benchmarks/distributed.py"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Distributed training memory ({n_params / 1e6:.0f}M-parameter student, 2 ranks, CPU/gloo)", "",
             "`python benchmarks/distributed.py`: each engine in its own processes, per-rank peak RSS sampled by "
             "the parent. Cached teacher signal and precomputed reference log-probs (the training processes hold "
             "only the student); the online rows hold the teacher whole on every rank (no target).", "",
             "| engine | teacher signal | peak RSS per rank (MiB) | vs DDP | step time (s, median) |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['teacher_signal']} | {r['peak_rss_per_rank_mib']} | "
                     f"{r['peak_vs_ddp']} | {r['step_seconds_median']} |")
    lines += ["", "| check | value | passed |", "|---|---:|---|"]
    lines += [f"| {c['check']} | {c['value']} | {'yes' if c['passed'] else 'NO'} |" for c in checks]
    (RESULTS / "distributed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(c["passed"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
