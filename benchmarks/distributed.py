"""Memory at scale: per-rank peak RSS and step time of a ~100M-parameter student at 2 ranks.

    .venv/bin/python benchmarks/distributed.py            # writes benchmarks/results/distributed.{json,md}
    .venv/bin/python benchmarks/distributed.py --render   # rewrites the .md from the .json (no measuring)

Each engine (DDP, FSDP2, ZeRO-3) trains the same student for a few optimizer steps with
``accelerate launch --num_processes 2 -m masters.cli train``, each in its own processes; the parent
samples every worker's RSS (design decision 15). The runs use ``teacher_signal: cached`` and
reference log-probs computed beforehand (both built once, by a 2-process launch of their own so
that they cover the 2-rank plan, and copied into every run), so the training processes hold only
the student: what sharding can shrink. One more row per engine trains with the online teacher
(held whole on every rank), reported without a target.

The same settings for every engine, as a user at scale would set them:

- ``training.gradient_checkpointing: true`` (``--no-gradient-checkpointing`` to measure without);
  the micro-batch is already the smallest masters trains (one question's group of 4 responses).
- DDP as masters builds it: ``find_unused_parameters=True, gradient_as_bucket_view=True``
  (gradients live in the all-reduce buckets, not twice).
- FSDP2: the shipped ``configs/accelerate/fsdp2.yaml`` (``reshard_after_forward: true``).
- ZeRO-3: the shipped accelerate settings with a DeepSpeed JSON of the benchmark's own (written
  into the work directory) that sizes ZeRO-3's buckets to the model, as accelerate's ``auto`` does
  (reduce bucket h^2, prefetch 0.9 h^2, persistence 10 h) and bounds what stays gathered
  (``stage3_max_live_parameters`` / ``stage3_max_reuse_distance``: two decoder layers), instead of
  DeepSpeed's defaults (1e9: a 93M student stays gathered whole after the first step).
- glibc's malloc with its mmap threshold fixed at glibc's own starting value, 128 KiB
  (``MALLOC_MMAP_THRESHOLD_``; setting it turns off the dynamic rise), so that freed tensors go
  back to the OS and RSS follows live memory (the dynamic threshold rises to 32 MiB after the
  first large frees and keeps freed tensors in the heap; a GPU's caching allocator reports live
  bytes). The cached rows are also run with a fixed 1 MiB threshold (what this benchmark used
  before: tensors of one activation, ~0.7 MiB here, then stay in the heap) and with glibc's
  default allocator (control rows).

Each rank also logs its RSS and its own high-water mark (``ru_maxrss``) after every phase
(``MASTERS_MEMORY_LOG``: student loaded, reference pass, prepared, each backward and step,
checkpoint, student saved): the phase in which each rank's peak was reached is reported, with the
RSS split into anonymous and file-backed pages and the tensors Python can reach (parameters,
gradients, optimizer state). Each rank's stderr is kept
(``--tee``) so that a failed rank's own traceback is reported.

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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ROOT / "configs" / "accelerate"
ENGINES = {"ddp": "ddp.yaml", "fsdp2": "fsdp2.yaml", "zero3": "deepspeed-zero3.yaml"}
TARGET = 0.65
# ~100M parameters (LLaVA: Llama text model + CLIP vision tower), built from config classes.
STUDENT = {"hidden": 768, "layers": 14, "heads": 12, "intermediate": 2048, "vision_hidden": 256, "vision_layers": 2}
MMAP_THRESHOLD = 128 << 10  # MALLOC_MMAP_THRESHOLD_ of the "fixed" rows: glibc's own starting value
ALLOCATORS = {"fixed": {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)},
              "fixed-1mib": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}, "glibc-default": {}}
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16"}  # training.mixed_precision of each precision's rows
BREAKDOWN = ("anon_mib", "file_mib", "tensors_mib", "params_mib", "grads_mib", "optimizer_mib", "deepspeed_imported")


def zero3_settings(dims: dict) -> dict:
    """ZeRO-3 sized to the student: accelerate's ``auto`` rules from the hidden size h, at most two
    decoder layers' parameters gathered at once (attention 4 h^2 + MLP 3 h x intermediate), and the
    optimizer stepped two layers' worth of the partition at a time (``sub_group_size``; DeepSpeed's
    default, 1e9, steps the whole flat partition as one tensor, and Adam's temporaries are then
    partition-sized)."""
    h, layer = dims["hidden"], 4 * dims["hidden"] ** 2 + 3 * dims["hidden"] * dims["intermediate"]
    return {"reduce_bucket_size": h * h, "stage3_prefetch_bucket_size": int(0.9 * h * h),
            "stage3_param_persistence_threshold": 10 * h,
            "stage3_max_live_parameters": 2 * layer, "stage3_max_reuse_distance": 2 * layer,
            "sub_group_size": 2 * layer}


def engine_config(engine: str, work: Path) -> Path:
    """The accelerate config of an engine: the shipped file; for ZeRO-3 the shipped settings with the
    benchmark's DeepSpeed JSON (:func:`zero3_settings`)."""
    if engine != "zero3":
        return CONFIGS / ENGINES[engine]
    import yaml

    shipped = yaml.safe_load((CONFIGS / ENGINES[engine]).read_text())
    ds = shipped.pop("deepspeed_config")
    assert ds["zero_stage"] == 3 and ds["offload_param_device"] == ds["offload_optimizer_device"] == "none", ds
    ds_json = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
               "gradient_clipping": "auto",  # masters writes these three from the run's training section
               "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "none"}, "offload_param": {"device": "none"},
                                     "stage3_gather_16bit_weights_on_model_save": ds["zero3_save_16bit_model"],
                                     **zero3_settings(STUDENT)}}
    (work / "deepspeed-zero3.json").write_text(json.dumps(ds_json, indent=2) + "\n")
    # (masters sets mixed precision from training.mixed_precision; accelerate refuses the field beside a JSON)
    assert shipped.pop("mixed_precision") == "no"
    shipped["deepspeed_config"] = {"deepspeed_config_file": str(work / "deepspeed-zero3.json"),
                                   "zero3_init_flag": ds["zero3_init_flag"]}
    path = work / "accelerate-zero3.yaml"
    path.write_text(yaml.safe_dump(shipped))
    return path


def config(work: Path, out: Path, *, cached: bool, steps: int, checkpointing: bool, precision: str) -> dict:
    return {
        "output_dir": str(out), "teacher": str(work / "teacher"), "student": str(work / "student"),
        "task": {"name": "shapes", "n_train": 2 * steps, "n_validation": 0, "n_test": 2},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 8, "batch_size": 8,
                       "bank_levels": "all"},  # generated by one process, trained by 2 ranks: every level
        "training": {"n_teacher": 2, "n_student": 2, "learning_rate": 1e-5, "questions_per_step": 1,
                     "checkpoint_every": 1000, "teacher_signal": "cached" if cached else "online", "cache_top_k": 16,
                     "gradient_checkpointing": checkpointing, "mixed_precision": MIXED_PRECISION[precision]},
    }


def run(cmd: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return proc


def free_port() -> str:
    with socket.socket() as probe:  # a fixed port collides with a concurrent run
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def prepare(work: Path, steps: int, env: dict, *, checkpointing: bool,
            bases: list[tuple[bool, str]]) -> dict[tuple[bool, str], Path]:
    """Models, a scored bank, reference log-probs and the teacher cache, each built in its own
    process(es); the cache and the reference by a 2-process launch, so that they hold every row of
    the 2-rank plan (a 1-process plan groups the questions into other steps and levels). One base
    run directory per (teacher signal, precision): the cache is keyed by the training config, the
    bank and the reference log-probs by the student alone (shared)."""
    import yaml

    if not (work / "student").exists():
        code = ("import sys; from pathlib import Path; from masters.models import build_tiny_model, build_tokenizer\n"
                "w = Path(sys.argv[1]); build_tokenizer(w / 'tokenizer')\n"
                f"build_tiny_model('llava', 'small', w / 'teacher', tokenizer_dir=w / 'tokenizer', seed=1, **{STUDENT!r})\n"
                f"build_tiny_model('llava', 'small', w / 'student', tokenizer_dir=w / 'tokenizer', seed=2, **{STUDENT!r})\n")
        run([sys.executable, "-c", code, str(work)], env, 1800)
    prepared = {}
    first = (True, "fp32")  # base-cached: the bank and the reference log-probs the others copy
    for cached, precision in [first] + sorted(set(bases) - {first}):
        base = work / ("base-" + ("cached" if cached else "online") + ("" if precision == "fp32" else f"-{precision}"))
        ready = work / f"{base.name}{'-gc' if checkpointing else ''}.ready"  # the cache is keyed by the training config
        if not ready.exists():
            base.mkdir(parents=True, exist_ok=True)  # what an interrupted preparation left is resumed
            path = work / f"{base.name}.yaml"  # beside the output directory: masters claims it
            path.write_text(yaml.safe_dump(config(work, base, cached=cached, steps=steps, checkpointing=checkpointing,
                                                  precision=precision)))
            if base.name != "base-cached":  # the same bank and reference log-probs (keyed by the student alone)
                for name in ("bank", "reference"):
                    shutil.rmtree(base / name, ignore_errors=True)
                    shutil.copytree(work / "base-cached" / name, base / name)
            else:
                run([sys.executable, "-m", "masters.cli", "generate", str(path)], env, 3600)
                run([sys.executable, "-m", "masters.cli", "score", str(path)], env, 1800)
            if cached:  # the cache and the reference log-probs, by 2 processes of their own (the plan of 2 ranks)
                run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
                     "--num_processes", "2", "--main_process_port", free_port(), "--num_cpu_threads_per_process", "1",
                     "-m", "masters.cli", "train", "--cache-only", str(path)], env, 3600)
            ready.write_text("")
        prepared[cached, precision] = base
    return prepared


def bench(engine: str, base: Path, runs: Path, env: dict, *, cached: bool, allocator: str, precision: str) -> dict:
    from _measure import PeakRSS

    import yaml

    signal = "cached" if cached else "online"
    label = {"engine": engine, "teacher_signal": signal, "allocator": allocator, "precision": precision, "ranks": 2}
    out = runs / (f"{engine}-{signal}-{allocator}" + ("" if precision == "fp32" else f"-{precision}"))
    logs = runs / f"{out.name}.logs"
    shutil.rmtree(logs, ignore_errors=True)
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
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(engine_config(engine, runs.parent)),
           "--num_processes", "2", "--main_process_port", free_port(), "--num_cpu_threads_per_process", "1",
           "--tee", "3", "--log_dir", str(logs), "-m", "masters.cli", "train", str(path)]
    memory_log = runs / f"{out.name}.memory.jsonl"
    memory_log.unlink(missing_ok=True)
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**env, **ALLOCATORS[allocator], "MASTERS_MEMORY_LOG": str(memory_log)})
    with PeakRSS(proc.pid, interval=0.05, tree=True) as sampler:
        _, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:  # each rank's own stderr: the launcher's tail names only the rank that exited
        ranks = "\n".join(f"--- {log.relative_to(logs)}\n{log.read_text(errors='replace')[-3000:]}"
                          for log in sorted(logs.rglob("stderr.log")))
        print(f"{engine}: failed\n{err[-2000:]}\n{ranks}", file=sys.stderr, flush=True)
        errors = [line.strip() for log in sorted(logs.rglob("stderr.log"))
                  for line in log.read_text(errors="replace").splitlines() if "Error:" in line]
        return {**label, "failed": True, "error": errors[-1][:300] if errors else f"exit {proc.returncode}"}
    phases: dict[str, dict[int, float]] = {}
    highs: dict[str, dict[int, float]] = {}  # each rank's ru_maxrss after the phase
    breakdown: dict[str, dict[str, Any]] = {}  # rank 0's RSS by kind and its tensors, after the phase
    for line in memory_log.read_text().splitlines() if memory_log.exists() else []:
        entry = json.loads(line)
        phases.setdefault(entry["phase"], {})[entry["rank"]] = entry["rss_mib"]
        highs.setdefault(entry["phase"], {})[entry["rank"]] = entry["peak_mib"]
        if entry["rank"] == 0:
            breakdown[entry["phase"]] = {k: entry[k] for k in BREAKDOWN if k in entry}
    # the phase in which each rank reached its own high-water mark (the first whose ru_maxrss is the last's)
    peak_phase = []
    for rank in (0, 1):
        seq = [(p, h[rank]) for p, h in highs.items() if rank in h]
        peak_phase.append(next((p for p, v in seq if v >= seq[-1][1]), None) if seq else None)
    (metrics,) = out.glob("train/*/metrics.jsonl")
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    # the launcher's rank processes: its other descendants are not ranks (compiler helpers, and a
    # rank's own subprocesses, which show the rank's command line between fork and exec)
    def rank_process(pid: int) -> bool:
        cmd = sampler.cmd.get(pid, "")
        return ("masters.cli" in cmd and "accelerate.commands.launch" not in cmd
                and "masters.cli" not in sampler.cmd.get(sampler.parent.get(pid), ""))

    workers = [peak for pid, peak in sampler.peaks.items() if rank_process(pid)]
    if len(workers) != 2:
        return {**label, "failed": True, "error": f"expected 2 rank processes, saw {len(workers)}"}
    return {**label, "peak_rss_per_rank_mib": round(max(workers) / 2**20, 1),
            "peak_rss_ranks_mib": [round(w / 2**20, 1) for w in sorted(workers)],
            "step_seconds_median": round(statistics.median(r["step_seconds"] for r in rows[1:] or rows), 3),
            "steps": len(rows), "wall_seconds": round(time.perf_counter() - began, 1),
            "rss_after_phase_mib": {phase: [ranks.get(0), ranks.get(1)] for phase, ranks in phases.items()},
            "high_water_after_phase_mib": {phase: [ranks.get(0), ranks.get(1)] for phase, ranks in highs.items()},
            "rank0_breakdown_after_phase": breakdown, "peak_reached_in_phase": peak_phase}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/masters-bench-distributed")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--no-online", action="store_true", help="skip the online-teacher rows")
    parser.add_argument("--no-control", action="store_true", help="skip the control allocator rows")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 mixed-precision rows")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--render", nargs="?", const=str(RESULTS / "distributed.json"), default=None,
                        help="rewrite distributed.md from a results file, measuring nothing")
    args = parser.parse_args()
    if args.render:
        result = json.loads(Path(args.render).read_text())
        write_markdown(result)
        return 0 if all(c["passed"] for c in result["checks"] if c.get("primary", True)) else 1
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    checkpointing = not args.no_gradient_checkpointing
    # (teacher signal cached?, allocator, precision): the target's rows first, then the others
    sets = ([(True, "fixed", "fp32")] + ([] if args.no_online else [(False, "fixed", "fp32")])
            + ([] if args.no_bf16 else [(True, "fixed", "bf16")])
            + ([] if args.no_control else [(True, "fixed-1mib", "fp32"), (True, "glibc-default", "fp32")]))
    prepared = prepare(work, args.steps, env, checkpointing=checkpointing,
                       bases=[(cached, precision) for cached, _, precision in sets])
    import torch

    from masters.adapters.resolve import resolve_adapter

    n_params = sum(p.numel() for p in resolve_adapter(str(work / "student")).model.parameters())
    del torch
    rows = []
    for cached, allocator, precision in sets:
        for engine in args.engines.split(","):
            row = bench(engine, prepared[cached, precision], work / "runs", env, cached=cached, allocator=allocator,
                        precision=precision)
            print(json.dumps(row), flush=True)
            rows.append(row)
    ok = [r for r in rows if not r.get("failed")]

    def ddp_of(r: dict) -> dict | None:
        return next((x for x in ok if x["engine"] == "ddp" and x["teacher_signal"] == r["teacher_signal"]
                     and x["allocator"] == r["allocator"] and precision_of(x) == precision_of(r)), None)

    checks = []
    for r in rows:
        ddp = ddp_of(r)
        if not r.get("failed"):
            r["peak_vs_ddp"] = round(r["peak_rss_per_rank_mib"] / ddp["peak_rss_per_rank_mib"], 3) if ddp else None
        if r["teacher_signal"] == "cached" and r["engine"] in ("fsdp2", "zero3"):
            value = r.get("peak_vs_ddp")
            checks.append({"check": f"{r['engine']} per-rank peak <= {TARGET} x DDP's (cached teacher, "
                                    f"{r['allocator']} allocator, {precision_of(r)})",
                           "value": value, "passed": value is not None and value <= TARGET,
                           # the target's configuration (fixed before the bf16 rows were added); the rest are
                           # reported beside it
                           "primary": r["allocator"] == "fixed" and precision_of(r) == "fp32"})
    import platform

    result = {"student_parameters": n_params, "student_dims": STUDENT, "steps": args.steps,
              "deepspeed_import_mib": deepspeed_import_mib(env),
              "questions_per_step": 2, "rows": rows, "checks": checks,
              "settings": {"gradient_checkpointing": checkpointing, "micro_batch": "1 question x 4 responses per rank",
                           "ddp_kwargs": {"find_unused_parameters": True, "gradient_as_bucket_view": True},
                           "fsdp2": "configs/accelerate/fsdp2.yaml",
                           "zero3_deepspeed": json.loads((work / "deepspeed-zero3.json").read_text())
                           if (work / "deepspeed-zero3.json").exists() else None,
                           "allocators": {k: v or "glibc's defaults (dynamic mmap threshold)" for k, v in ALLOCATORS.items()}},
              "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "note": "CPU only, gloo; 2 cores shared with other work: step times are indicative"},
              "command": "python benchmarks/distributed.py" + (" --no-online" if args.no_online else "")
                         + (" --no-bf16" if args.no_bf16 else "")
                         + (" --no-control" if args.no_control else "")
                         + (" --no-gradient-checkpointing" if not checkpointing else "")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result)
    return 0 if all(c["passed"] for c in checks if c["primary"]) else 1


DEEPSPEED_IMPORT = """
import psutil, torch, transformers.models.llava.modeling_llava, accelerate, masters.engine.trainer
before = psutil.Process().memory_info().rss
import deepspeed
print((psutil.Process().memory_info().rss - before) / 2**20)
"""


def deepspeed_import_mib(env: dict) -> float | None:
    """The RSS that importing deepspeed adds to a process that already has what a rank imports."""
    proc = subprocess.run([sys.executable, "-c", DEEPSPEED_IMPORT], capture_output=True, text=True, timeout=300,
                          env={**env, **ALLOCATORS["fixed"]}, cwd=ROOT)
    return round(float(proc.stdout.split()[-1]), 1) if proc.returncode == 0 and proc.stdout.split() else None


def name_of(row: dict) -> str:
    return f"{row['engine']} ({row['teacher_signal']}, {row.get('allocator', '')}, {precision_of(row)})"


def precision_of(row: dict) -> str:
    return row.get("precision", "fp32")  # (results from before the bf16 rows)


def model_state_mib(n_params: int) -> dict[str, float]:
    """fp32 parameters, gradients and Adam's two moments: 16 bytes a parameter (whole), and the
    share of one of 2 ranks."""
    whole = 16 * n_params / 2**20
    return {"whole": round(whole, 1), "half": round(whole / 2, 1)}


def notes(result: dict) -> list[str]:
    """What the per-phase log shows, computed from the results (``--render`` rewrites it)."""
    ok = [r for r in result["rows"] if not r.get("failed")]

    def find(engine: str, signal: str = "cached", allocator: str = "fixed", precision: str = "fp32") -> dict | None:
        return next((r for r in ok if (r["engine"], r["teacher_signal"], r.get("allocator"), precision_of(r))
                     == (engine, signal, allocator, precision)), None)

    def last(r: dict, kind: str) -> str:
        return [p for p in r["rss_after_phase_mib"] if p.startswith(kind + " ")][-1]

    def high(r: dict, phase: str) -> float:
        return max(v for v in r["high_water_after_phase_mib"][phase] if v is not None)

    def after(r: dict, phase: str) -> float:
        return max(v for v in r["rss_after_phase_mib"][phase] if v is not None)

    def part(r: dict, phase: str, key: str) -> float:  # rank 0's breakdown
        return r.get("rank0_breakdown_after_phase", {}).get(phase, {}).get(key) or 0.0

    def peaks(rows: dict) -> str:
        return ", ".join(f"{e} {r['peak_rss_per_rank_mib']:.0f} MiB ({r['peak_vs_ddp']}x)" for e, r in rows.items() if r)

    main = {e: find(e) for e in ENGINES}
    ddp = main.get("ddp")
    if ddp is None or "rank0_breakdown_after_phase" not in ddp:  # (results from before the breakdown)
        return []
    state = model_state_mib(result["student_parameters"])
    met = all(c["passed"] for c in result["checks"] if c.get("primary", "fixed allocator" in c["check"]))
    lines = ["", "## What the per-phase log shows", "",
             f"- **{'Target met' if met else 'Target not met'}** (cached teacher, fixed allocator, fp32). Per-rank "
             f"peaks: {peaks(main)}."]
    bf16 = {e: find(e, precision="bf16") for e in ENGINES}
    if any(bf16.values()):
        passed = [c for c in result["checks"] if c["check"].endswith("bf16)")]
        ddp16 = bf16.get("ddp")
        cache = (f" DDP's bf16 peak is {ddp16['peak_rss_per_rank_mib'] - ddp['peak_rss_per_rank_mib']:+.0f} MiB on its fp32 "
                 f"one: {ddp16['peak_rss_per_rank_mib'] - after(ddp16, last(ddp16, 'backward')):.0f} MiB above the end of a "
                 "backward (fp32: "
                 f"{ddp['peak_rss_per_rank_mib'] - after(ddp, last(ddp, 'backward')):.0f}), the bf16 copies of the weights "
                 "that autocast caches until a forward ends (the parameters stay fp32); FSDP2 casts a layer at a time "
                 "as it gathers it." if ddp16 else "")
        lines.append(f"- **bf16 mixed precision** (`training.mixed_precision: bf16`, every engine; reported beside the "
                     f"target's fp32 rows, not instead of them): {peaks(bf16)}; the 0.65x bound "
                     + ("holds for " + " and ".join(c["check"].split()[0] for c in passed if c["passed"])
                        if any(c["passed"] for c in passed) else "holds for neither")
                     + (", not for " + " and ".join(c["check"].split()[0] for c in passed if not c["passed"])
                        if any(c["passed"] for c in passed) and not all(c["passed"] for c in passed) else "") + "."
                     + cache)
    imported = {e: r["rank0_breakdown_after_phase"][last(r, "step")].get("deepspeed_imported")
                for e, r in main.items() if r}
    floor = after(ddp, "reference pass")
    ideal = (floor + state["half"]) / (floor + state["whole"])
    lines.append(f"- **The floor.** Before any model state (the student loaded, its reference rows read) a rank holds "
                 f"{floor:.0f} MiB: Python, torch, transformers (importing a model's modeling code alone imports some "
                 "1,500 modules), accelerate and masters, and the run's data; the student's weights are still pages "
                 "of its mapped safetensors file, not yet read. fp32 parameters, gradients and Adam's two moments are "
                 f"16 bytes a parameter: {state['whole']:.0f} MiB whole, {state['half']:.0f} MiB per rank sharded "
                 f"over 2. With nothing else in memory, sharding at 2 ranks gives (floor + state / 2) / (floor + "
                 f"state) = {ideal:.2f} of DDP: the 0.65x target leaves "
                 f"{0.65 * (floor + state['whole']) - floor - state['half']:.0f} MiB for a sharded engine's gathered "
                 "layers, activations and communication buffers.")
    lines.append("- **DeepSpeed imported** after the last step (rank 0): "
                 + ", ".join(f"{e} {'yes' if v else 'no'}" for e, v in imported.items())
                 + ". accelerate imports deepspeed, whenever it is installed, to test whether a model is a "
                 "`DeepSpeedEngine`; masters makes that test ask whether deepspeed is imported "
                 "(`masters/engine/distributed.py`). Importing it costs "
                 + (f"{result['deepspeed_import_mib']:.0f} MiB of RSS" if result.get("deepspeed_import_mib") else "RSS")
                 + " in a process that has imported torch, transformers' LLaVA, accelerate and masters (measured by "
                 "this benchmark in a process of its own).")
    step, back = last(ddp, "step"), last(ddp, "backward")
    lines.append(f"- **DDP** holds {after(ddp, step):.0f} MiB after each step: the floor and {part(ddp, step, 'tensors_mib'):.0f} "
                 f"MiB of tensors (parameters {part(ddp, step, 'params_mib'):.0f}, Adam {part(ddp, step, 'optimizer_mib'):.0f}, "
                 f"the all-reduce buckets that hold the gradients); its high-water mark, "
                 f"{ddp['peak_rss_per_rank_mib']:.0f} MiB, is reached in {' / '.join(map(str, ddp['peak_reached_in_phase']))}. "
                 f"Without `gradient_as_bucket_view` the gradients would be held twice (+{state['whole'] / 4:.0f} MiB).")
    fsdp2 = main.get("fsdp2")
    if fsdp2:
        step, back = last(fsdp2, "step"), last(fsdp2, "backward")
        held = after(fsdp2, step)
        at_backward = after(fsdp2, back)
        lines.append(f"- **FSDP2** holds {held:.0f} MiB after each step (parameter shards "
                     f"{part(fsdp2, step, 'params_mib'):.0f} MiB and Adam's {part(fsdp2, step, 'optimizer_mib'):.0f}: "
                     f"the floor and the sharded state, nothing more); after each backward it holds {at_backward:.0f} "
                     f"(+ the gradient shards, {part(fsdp2, back, 'grads_mib'):.0f} MiB), and its high-water mark, "
                     f"{fsdp2['peak_rss_per_rank_mib']:.0f} MiB, is reached inside a backward "
                     f"({' / '.join(map(str, fsdp2['peak_reached_in_phase']))}): "
                     f"+{fsdp2['peak_rss_per_rank_mib'] - at_backward:.0f} MiB over the end of the backward for the "
                     "layer being gathered, the next one prefetched, its unsharded gradients and the reduce-scatter "
                     f"buffer (one decoder layer is {4 * result['student_parameters'] / STUDENT['layers'] / 2**20:.0f} MiB "
                     f"of fp32 parameters). Without that transient its peak would be the end of a backward, "
                     f"{at_backward / ddp['peak_rss_per_rank_mib']:.3f}x DDP's peak. Its checkpoints add no peak: each rank writes "
                     "only its own shards (torch.distributed.checkpoint in safetensors, masters/engine/checkpoint.py).")
    zero3 = main.get("zero3")
    if zero3:
        step = last(zero3, "step")
        tensors = part(zero3, step, "tensors_mib")
        own = tensors - part(zero3, step, "params_mib") - part(zero3, step, "optimizer_mib")
        lines.append(f"- **ZeRO-3** (the benchmark's DeepSpeed JSON) holds {after(zero3, step):.0f} MiB after each "
                     f"step; its tensors are {tensors:.0f} MiB: the parameter partitions "
                     f"{part(zero3, step, 'params_mib'):.0f}, Adam {part(zero3, step, 'optimizer_mib'):.0f}, and "
                     f"{own:.0f} of DeepSpeed's own, an fp32 copy of the partition that its optimizer steps (kept even "
                     "when the parameters are fp32) and the gradient partition, which it keeps between steps: 20 "
                     f"bytes a parameter, {20 * result['student_parameters'] / 2 / 2**20:.0f} MiB a rank, where "
                     f"FSDP2 keeps 12 (its shards and Adam's moments). Its floor is {after(zero3, 'reference pass'):.0f} MiB "
                     "(deepspeed imported). Its high-water mark within the steps is "
                     f"{high(zero3, step):.0f} MiB (accelerate's DeepSpeed backward also steps the optimizer): "
                     f"+{high(zero3, step) - after(zero3, step):.0f} over what a step leaves; the peak, "
                     f"{zero3['peak_rss_per_rank_mib']:.0f} MiB, is reached in "
                     f"{' / '.join(map(str, zero3['peak_reached_in_phase']))}"
                     + (" (the final save gathers the whole student onto rank 0, after Adam's moments are dropped)"
                        if "student saved" in zero3["peak_reached_in_phase"] else
                        " (the final save, which gathers the whole student onto rank 0, stays below it: Adam's "
                        "moments are dropped first)")
                     + ". Even with no transient, ZeRO-3 in fp32 "
                     f"at 2 ranks would be {after(zero3, step) / ddp['peak_rss_per_rank_mib']:.2f}x DDP's peak.")
    def own_high(r: dict) -> float:  # each rank's own high-water mark, the largest of the ranks
        return max(high(r, p) for p in r["high_water_after_phase_mib"])

    missed = max(own_high(r) - r["peak_rss_per_rank_mib"] for r in ok if r.get("high_water_after_phase_mib"))
    lines.append(f"- **Sampling.** The parent samples RSS every 50 ms; each rank's own high-water mark (`ru_maxrss`, "
                 f"exact) is at most {missed:.0f} MiB above the sampled peak in any row. From `ru_maxrss` the target's "
                 "ratios are " + ", ".join(f"{e} {own_high(r) / own_high(ddp):.3f}x" for e, r in main.items()
                                           if r and e != "ddp") + ".")
    control = {a: {e: find(e, allocator=a) for e in ENGINES} for a in ("fixed-1mib", "glibc-default")}
    if all(control["fixed-1mib"].values()):
        lines.append(f"- **Allocator, 1 MiB threshold** (what this benchmark used before): {peaks(control['fixed-1mib'])}. "
                     "Tensors of one activation (4 responses x their tokens x the hidden size in fp32, ~0.7 MiB here) "
                     "then come from the heap, which fragments and keeps freed ones resident.")
    if all(control["glibc-default"].values()):
        lines.append(f"- **Allocator, glibc's default** (dynamic threshold): {peaks(control['glibc-default'])}: freed "
                     "tensors below the risen threshold stay in the heap and count as RSS, by amounts that depend on "
                     "which thread freed what (they are not stable from one run to the next).")
    online = {e: find(e, "online") for e in ENGINES}
    if any(online.values()):
        lines.append("- **Online teacher** (held whole on every rank; no target): "
                     + ", ".join(f"{e} {r['peak_rss_per_rank_mib']:.0f} MiB ({r['peak_vs_ddp']}x, "
                                 f"+{r['peak_rss_per_rank_mib'] - main[e]['peak_rss_per_rank_mib']:.0f} over cached)"
                                 for e, r in online.items() if r and main.get(e)) + ".")
    lines.append("- The shipped `configs/accelerate/deepspeed-zero3.yaml` keeps DeepSpeed's defaults for the live "
                 "parameter bounds (sized from the hidden size they moved the ZeRO-3 equality test past its 1e-4 "
                 "tolerance); this benchmark sets them, and `sub_group_size`, in its own JSON, written beside its runs.")
    return lines


def write_markdown(result: dict) -> None:
    rows, checks, n_params = result["rows"], result["checks"], result["student_parameters"]
    settings = result.get("settings", {})
    ok = [r for r in rows if not r.get("failed")]
    zero3 = settings.get("zero3_deepspeed") or {}
    zo = {k: v for k, v in zero3.get("zero_optimization", {}).items() if k.startswith(("stage3_", "reduce")) and type(v) is int}
    lines = [f"# Distributed training memory ({n_params / 1e6:.0f}M-parameter student, 2 ranks, CPU/gloo)", "",
             f"`{result['command']}`: each engine in its own processes, per-rank peak RSS sampled by the parent. "
             "Cached teacher signal and precomputed reference log-probs (the training processes hold only the "
             "student); the online rows hold the teacher whole on every rank (no target). "
             f"{result['steps']} optimizer steps of 2 questions (one per rank, 4 responses each).", "",
             "The same settings for every engine:", "",
             f"- gradient checkpointing: {'on' if settings.get('gradient_checkpointing') else 'off'}; micro-batch "
             f"{settings.get('micro_batch', '?')} (the smallest masters trains);",
             "- DDP: `find_unused_parameters=True, gradient_as_bucket_view=True` (masters' defaults: gradients live "
             "in the all-reduce buckets, not twice); FSDP2: `configs/accelerate/fsdp2.yaml`;",
             "- ZeRO-3: the shipped `deepspeed-zero3.yaml` settings with the benchmark's DeepSpeed JSON: "
             + ", ".join(f"`{k}` {v:,}" for k, v in zo.items()) + " (accelerate's `auto` sizes from the hidden size, "
             "at most two decoder layers gathered);",
             "- allocator `fixed`: glibc malloc with `MALLOC_MMAP_THRESHOLD_="
             f"{ALLOCATORS['fixed']['MALLOC_MMAP_THRESHOLD_']}`, glibc's own starting value held fixed (setting it "
             "turns off its dynamic rise): freed tensors of 128 KiB and more go back to the OS, so RSS follows live "
             "memory; control rows: `fixed-1mib` (a 1 MiB threshold) and `glibc-default` (the dynamic threshold: it "
             "rises to 32 MiB after the first large frees, and freed tensors below it stay in the heap);",
             "- precision `fp32` (the target's rows) and `bf16` (`training.mixed_precision: bf16`: autocast under "
             "DDP, FSDP2's bf16 parameter policy, DeepSpeed's bf16 mode).", "",
             "| engine | teacher signal | allocator | precision | peak RSS per rank (MiB) | vs DDP | step time (s, median) | peak reached in (rank 0 / 1) |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        head = f"| {r['engine']} | {r['teacher_signal']} | {r.get('allocator', '')} | {precision_of(r)} |"
        if r.get("failed"):
            lines.append(f"{head} failed: {r['error']} | | | |")
            continue
        lines.append(f"{head} {r['peak_rss_per_rank_mib']} | {r['peak_vs_ddp']} | {r['step_seconds_median']} | "
                     f"{' / '.join(str(p) for p in r.get('peak_reached_in_phase', []))} |")
    for key, title in (("rss_after_phase_mib", "RSS after each phase (MiB, rank 0 / rank 1; `MASTERS_MEMORY_LOG`), "
                                                "and the sampled peaks (ascending):"),
                       ("high_water_after_phase_mib", "Each rank's own high-water mark (`ru_maxrss`, MiB) after each "
                                                      "phase: where it rises is where the peak was reached:")):
        phases = list(dict.fromkeys(p for r in ok for p in r.get(key, {})))
        if not phases:
            continue
        lines += ["", title, "", "| run | " + " | ".join(phases) + (" | peak |" if key == "rss_after_phase_mib" else " |"),
                  "|---|" + "---:|" * (len(phases) + (key == "rss_after_phase_mib"))]
        for r in ok:
            got = r.get(key, {})
            cells = [" / ".join(str(v) for v in got[p]) if p in got else "" for p in phases]
            tail = f" | {' / '.join(str(v) for v in r['peak_rss_ranks_mib'])} |" if key == "rss_after_phase_mib" else " |"
            lines.append(f"| {name_of(r)} | " + " | ".join(cells) + tail)
    breakdown = [r for r in ok if r.get("rank0_breakdown_after_phase") and r.get("allocator") == "fixed"
                 and r["teacher_signal"] == "cached"]
    if breakdown:
        lines += ["", "Rank 0 after selected phases (MiB): RSS in anonymous and file-backed pages, and the tensors "
                  "Python can reach (each storage once; buffers held only by C++, such as DDP's buckets before the "
                  "first backward, are not among them):", "",
                  "| run | phase | RSS | anonymous | file | tensors | parameters | gradients | optimizer | deepspeed imported |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in breakdown:
            got = r["rank0_breakdown_after_phase"]
            backs = [p for p in got if p.startswith("backward ")]
            steps_ = [p for p in got if p.startswith("step ")]
            for phase in ["reference pass", "prepared"] + backs[-1:] + steps_[-1:]:
                if phase not in got:
                    continue
                b = got[phase]
                cells = [b.get(k, "") for k in BREAKDOWN[:-1]]
                lines.append(f"| {name_of(r)} | {phase} | {r['rss_after_phase_mib'][phase][0]} | "
                             + " | ".join(str(c) for c in cells)
                             + f" | {'yes' if b.get('deepspeed_imported') else 'no'} |")
    lines += ["", "| check | value | passed |", "|---|---:|---|"]
    lines += [f"| {c['check']} | {c['value'] if c['value'] is not None else '-'} | {'yes' if c['passed'] else 'NO'} |"
              for c in checks]
    lines += notes(result)
    lines += ["", f"Host: {result['host']['cpus']} CPUs, Python {result['host']['python']}; {result['host']['note']}."]
    (RESULTS / "distributed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
