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
- glibc's malloc with a fixed mmap threshold (``MALLOC_MMAP_THRESHOLD_``, 1 MiB) so that freed
  tensors go back to the OS and RSS follows live memory (glibc's dynamic threshold rises to 32 MiB
  after the first large frees and keeps freed tensors in the heap; a GPU's caching allocator
  reports live bytes). The cached rows are also run with glibc's default allocator (control rows).

Each rank also logs its RSS and its own high-water mark (``ru_maxrss``) after every phase
(``MASTERS_MEMORY_LOG``: student loaded, reference pass, prepared, each step, checkpoint, student
saved): the phase in which each rank's peak was reached is reported. Each rank's stderr is kept
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ROOT / "configs" / "accelerate"
ENGINES = {"ddp": "ddp.yaml", "fsdp2": "fsdp2.yaml", "zero3": "deepspeed-zero3.yaml"}
TARGET = 0.65
# ~100M parameters (LLaVA: Llama text model + CLIP vision tower), built from config classes.
STUDENT = {"hidden": 768, "layers": 14, "heads": 12, "intermediate": 2048, "vision_hidden": 256, "vision_layers": 2}
MMAP_THRESHOLD = 1 << 20  # MALLOC_MMAP_THRESHOLD_ of the "fixed" allocator rows
ALLOCATORS = {"fixed": {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}, "glibc-default": {}}


def zero3_settings(dims: dict) -> dict:
    """ZeRO-3 sized to the student: accelerate's ``auto`` rules from the hidden size h, and at most
    two decoder layers' parameters gathered at once (attention 4 h^2 + MLP 3 h x intermediate)."""
    h, layer = dims["hidden"], 4 * dims["hidden"] ** 2 + 3 * dims["hidden"] * dims["intermediate"]
    return {"reduce_bucket_size": h * h, "stage3_prefetch_bucket_size": int(0.9 * h * h),
            "stage3_param_persistence_threshold": 10 * h,
            "stage3_max_live_parameters": 2 * layer, "stage3_max_reuse_distance": 2 * layer}


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


def config(work: Path, out: Path, *, cached: bool, steps: int, checkpointing: bool) -> dict:
    return {
        "output_dir": str(out), "teacher": str(work / "teacher"), "student": str(work / "student"),
        "task": {"name": "shapes", "n_train": 2 * steps, "n_validation": 0, "n_test": 2},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 8, "batch_size": 8,
                       "bank_levels": "all"},  # generated by one process, trained by 2 ranks: every level
        "training": {"n_teacher": 2, "n_student": 2, "learning_rate": 1e-5, "questions_per_step": 1,
                     "checkpoint_every": 1000, "teacher_signal": "cached" if cached else "online", "cache_top_k": 16,
                     "gradient_checkpointing": checkpointing},
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


def prepare(work: Path, steps: int, env: dict, *, checkpointing: bool) -> dict[bool, Path]:
    """Models, a scored bank, reference log-probs and the teacher cache, each built in its own
    process(es); the cache and the reference by a 2-process launch, so that they hold every row of
    the 2-rank plan (a 1-process plan groups the questions into other steps and levels)."""
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
        ready = work / f"{base.name}{'-gc' if checkpointing else ''}.ready"  # the cache is keyed by the training config
        if not ready.exists():
            base.mkdir(parents=True, exist_ok=True)  # what an interrupted preparation left is resumed
            path = work / f"{base.name}.yaml"  # beside the output directory: masters claims it
            path.write_text(yaml.safe_dump(config(work, base, cached=cached, steps=steps, checkpointing=checkpointing)))
            if not cached:  # the same bank and reference log-probs (keyed by the student alone)
                for name in ("bank", "reference"):
                    shutil.rmtree(base / name, ignore_errors=True)
                    shutil.copytree(work / "base-cached" / name, base / name)
            else:
                run([sys.executable, "-m", "masters.cli", "generate", str(path)], env, 3600)
                run([sys.executable, "-m", "masters.cli", "score", str(path)], env, 1800)
                # the cache and the reference log-probs, by 2 processes of their own (the plan of 2 ranks)
                run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
                     "--num_processes", "2", "--main_process_port", free_port(), "--num_cpu_threads_per_process", "1",
                     "-m", "masters.cli", "train", "--cache-only", str(path)], env, 3600)
            ready.write_text("")
        prepared[cached] = base
    return prepared


def bench(engine: str, base: Path, runs: Path, env: dict, *, cached: bool, allocator: str) -> dict:
    from _measure import PeakRSS

    import yaml

    signal = "cached" if cached else "online"
    label = {"engine": engine, "teacher_signal": signal, "allocator": allocator, "ranks": 2}
    out = runs / f"{engine}-{signal}-{allocator}"
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
    for line in memory_log.read_text().splitlines() if memory_log.exists() else []:
        entry = json.loads(line)
        phases.setdefault(entry["phase"], {})[entry["rank"]] = entry["rss_mib"]
        highs.setdefault(entry["phase"], {})[entry["rank"]] = entry["peak_mib"]
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
            "peak_reached_in_phase": peak_phase}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/masters-bench-distributed")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--no-online", action="store_true", help="skip the online-teacher rows")
    parser.add_argument("--no-control", action="store_true", help="skip the glibc-default allocator rows")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--render", nargs="?", const=str(RESULTS / "distributed.json"), default=None,
                        help="rewrite distributed.md from a results file, measuring nothing")
    args = parser.parse_args()
    if args.render:
        result = json.loads(Path(args.render).read_text())
        write_markdown(result)
        return 0 if all(c["passed"] for c in result["checks"]) else 1
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    checkpointing = not args.no_gradient_checkpointing
    prepared = prepare(work, args.steps, env, checkpointing=checkpointing)
    import torch

    from masters.adapters.resolve import resolve_adapter

    n_params = sum(p.numel() for p in resolve_adapter(str(work / "student")).model.parameters())
    del torch
    sets = [(True, "fixed")] + ([] if args.no_online else [(False, "fixed")]) + ([] if args.no_control else [(True, "glibc-default")])
    rows = []
    for cached, allocator in sets:
        for engine in args.engines.split(","):
            row = bench(engine, prepared[cached], work / "runs", env, cached=cached, allocator=allocator)
            print(json.dumps(row), flush=True)
            rows.append(row)
    ok = [r for r in rows if not r.get("failed")]

    def ddp_of(r: dict) -> dict | None:
        return next((x for x in ok if x["engine"] == "ddp" and x["teacher_signal"] == r["teacher_signal"]
                     and x["allocator"] == r["allocator"]), None)

    checks = []
    for r in rows:
        ddp = ddp_of(r)
        if not r.get("failed"):
            r["peak_vs_ddp"] = round(r["peak_rss_per_rank_mib"] / ddp["peak_rss_per_rank_mib"], 3) if ddp else None
        if r["teacher_signal"] == "cached" and r["engine"] in ("fsdp2", "zero3"):
            value = r.get("peak_vs_ddp")
            checks.append({"check": f"{r['engine']} per-rank peak <= {TARGET} x DDP's (cached teacher, "
                                    f"{r['allocator']} allocator)",
                           "value": value, "passed": value is not None and value <= TARGET})
    import platform

    result = {"student_parameters": n_params, "student_dims": STUDENT, "steps": args.steps,
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
                         + (" --no-control" if args.no_control else "")
                         + (" --no-gradient-checkpointing" if not checkpointing else "")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result)
    return 0 if all(c["passed"] for c in checks) else 1


def model_state_mib(n_params: int) -> dict[str, float]:
    """fp32 parameters, gradients and Adam's two moments: 16 bytes a parameter (whole), and the
    share of one of 2 ranks."""
    whole = 16 * n_params / 2**20
    return {"whole": round(whole, 1), "half": round(whole / 2, 1)}


def notes(result: dict) -> list[str]:
    """What the per-phase log shows, computed from the results (``--render`` rewrites it)."""
    ok = [r for r in result["rows"] if not r.get("failed")]

    def find(engine: str, signal: str = "cached", allocator: str = "fixed") -> dict | None:
        return next((r for r in ok if (r["engine"], r["teacher_signal"], r.get("allocator")) == (engine, signal, allocator)), None)

    def last_step(r: dict) -> str:
        return [p for p in r["rss_after_phase_mib"] if p.startswith("step ")][-1]

    def high(r: dict, phase: str) -> float:
        return max(v for v in r["high_water_after_phase_mib"][phase] if v is not None)

    def after(r: dict, phase: str) -> float:
        return max(v for v in r["rss_after_phase_mib"][phase] if v is not None)

    main = {e: find(e) for e in ENGINES}
    ddp = main.get("ddp")
    if ddp is None or "high_water_after_phase_mib" not in ddp:
        return []
    state = model_state_mib(result["student_parameters"])
    in_steps = {e: high(r, last_step(r)) for e, r in main.items() if r}
    lines = ["", "## What the per-phase log shows", ""]
    peaks = ", ".join(f"{e} {r['peak_rss_per_rank_mib']:.0f} MiB ({r['peak_vs_ddp']}x)" for e, r in main.items() if r)
    steps = ", ".join(f"{e} {v:.0f} ({v / in_steps['ddp']:.2f}x)" for e, v in in_steps.items())
    met = all(c["passed"] for c in result["checks"] if "fixed" in c["check"])
    lines.append(f"- **{'Target met' if met else 'Target not met'}** (cached teacher, fixed allocator). Per-rank peaks: "
                 f"{peaks}. Up to the end of the training steps alone (each rank's high-water mark after the last "
                 f"step, MiB): {steps}.")
    floor = after(ddp, "reference pass")
    ideal = (floor + state["half"]) / (floor + state["whole"])
    zero3 = main.get("zero3")
    lines.append(f"- **The floor.** Before any model state (the student loaded, its reference rows read) every rank "
                 f"holds {floor:.0f} MiB: Python, torch, transformers, accelerate and masters, the run's data and the "
                 f"student's file mapping" + (f"; {after(zero3, 'reference pass'):.0f} MiB with DeepSpeed imported"
                                             if zero3 else "") +
                 f". fp32 parameters, gradients and Adam's two moments are 16 bytes a parameter: {state['whole']:.0f} "
                 f"MiB whole, {state['half']:.0f} MiB per rank sharded over 2. Even with nothing else in memory, "
                 f"sharding at 2 ranks gives (floor + state / 2) / (floor + state) = {ideal:.2f} of DDP: the 0.65x "
                 f"target leaves {0.65 * (floor + state['whole']) - floor - state['half']:.0f} MiB for a sharded "
                 "engine's gathered layers, activations and communication buffers, and DDP's own such transients count "
                 "for it.")
    lines.append(f"- **DDP** holds {after(ddp, last_step(ddp)):.0f} MiB after each step (the floor + {state['whole']:.0f} "
                 f"of model state predicts {floor + state['whole']:.0f}); its high-water mark is {in_steps['ddp']:.0f} "
                 f"in the steps and {ddp['peak_rss_per_rank_mib']:.0f} overall (reached in "
                 f"{' / '.join(map(str, ddp['peak_reached_in_phase']))}). Its gradients are views into the all-reduce "
                 f"buckets; without `gradient_as_bucket_view` they would be held twice (+{state['whole'] / 4:.0f} MiB).")
    fsdp2 = main.get("fsdp2")
    if fsdp2:
        text = (f"- **FSDP2** holds {after(fsdp2, last_step(fsdp2)):.0f} MiB after each step (sharded parameters and "
                f"Adam state) and reaches {in_steps['fsdp2']:.0f} within the steps (a step's gradient shards, the "
                "gathered layers, activations)")
        ckpt = [p for p in fsdp2["high_water_after_phase_mib"] if p.startswith("checkpoint ")]
        if ckpt and high(fsdp2, ckpt[-1]) > in_steps["fsdp2"] + 50:
            rank0 = fsdp2["high_water_after_phase_mib"][ckpt[-1]][0]
            text += (f"; its peak is rank 0 at {ckpt[-1]} ({rank0:.0f} MiB, +{rank0 - in_steps['fsdp2']:.0f}), "
                     "although each rank writes only its own shards (`sharded` checkpoints, "
                     "masters/engine/checkpoint.py): DCP's own buffers")
        elif ckpt:
            text += ("; its checkpoints add no peak: each rank writes only its own shards of the weights and Adam "
                     "moments (`sharded` checkpoints through torch.distributed.checkpoint in safetensors, "
                     "masters/engine/checkpoint.py)")
        saved = high(fsdp2, "student saved") if "student saved" in fsdp2["high_water_after_phase_mib"] else None
        if saved is not None and saved > in_steps["fsdp2"] + 50:
            text += (f"; the final student save gathers the whole weights (not the optimizer state) onto rank 0 "
                     f"({saved:.0f} MiB)")
        lines.append(text + ".")
    if zero3:
        first = zero3["high_water_after_phase_mib"]
        steps_ = [p for p in first if p.startswith("step ")]
        lines.append(f"- **ZeRO-3** (the benchmark's DeepSpeed JSON) holds {after(zero3, 'prepared'):.0f} MiB after "
                     f"`prepare` (partitioned fp32 parameters, the flat gradient-partition buffer, Adam state created "
                     f"at initialisation) and {after(zero3, last_step(zero3)):.0f} after each step; its high-water "
                     f"mark, {zero3['peak_rss_per_rank_mib']:.0f} MiB, is reached in "
                     f"{' / '.join(map(str, zero3['peak_reached_in_phase']))} (after {steps_[0]}: "
                     f"{' / '.join(str(v) for v in first[steps_[0]])} MiB, after {steps_[-1]}: "
                     f"{' / '.join(str(v) for v in first[steps_[-1]])}): a transient of "
                     f"+{high(zero3, steps_[0]) - after(zero3, steps_[0]):.0f} MiB over what the first step leaves, "
                     "which later steps do not repeat. What it holds beyond the floor + "
                     f"{state['half']:.0f} MiB of sharded state is DeepSpeed's own (not broken down here).")
    control = {e: find(e, allocator="glibc-default") for e in ENGINES}
    if all(control.values()):
        lines.append("- **Allocator.** With glibc's default (dynamic) mmap threshold the same runs peak at "
                     + ", ".join(f"{e} {r['peak_rss_per_rank_mib']:.0f} MiB ({r['peak_vs_ddp']}x)" for e, r in control.items())
                     + ": freed tensors below the risen threshold stay in the heap and count as RSS, by amounts "
                     "that depend on which thread freed what (they are not stable from one run to the next).")
    online = {e: find(e, "online") for e in ENGINES}
    if any(online.values()):
        lines.append("- **Online teacher** (held whole on every rank; no target): "
                     + ", ".join(f"{e} {r['peak_rss_per_rank_mib']:.0f} MiB ({r['peak_vs_ddp']}x, "
                                 f"+{r['peak_rss_per_rank_mib'] - main[e]['peak_rss_per_rank_mib']:.0f} over cached)"
                                 for e, r in online.items() if r and main.get(e)) + ".")
    lines.append("- The shipped `configs/accelerate/deepspeed-zero3.yaml` keeps DeepSpeed's defaults for the live "
                 "parameter bounds (sized from the hidden size they moved the ZeRO-3 equality test past its 1e-4 "
                 "tolerance); this benchmark sets them in its own JSON, written beside its runs.")
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
             f"{ALLOCATORS['fixed']['MALLOC_MMAP_THRESHOLD_']}` (freed tensors of 1 MiB and more go back to the OS, "
             "so RSS follows live memory); `glibc-default`: glibc's dynamic threshold (it rises to 32 MiB after the "
             "first large frees, and freed tensors below it stay in the heap).", "",
             "| engine | teacher signal | allocator | peak RSS per rank (MiB) | vs DDP | step time (s, median) | peak reached in (rank 0 / 1) |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        if r.get("failed"):
            lines.append(f"| {r['engine']} | {r['teacher_signal']} | {r.get('allocator', '')} | failed: {r['error']} | | | |")
            continue
        lines.append(f"| {r['engine']} | {r['teacher_signal']} | {r.get('allocator', '')} | {r['peak_rss_per_rank_mib']} | "
                     f"{r['peak_vs_ddp']} | {r['step_seconds_median']} | "
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
            lines.append(f"| {r['engine']} ({r['teacher_signal']}, {r.get('allocator', '')}) | " + " | ".join(cells) + tail)
    lines += ["", "| check | value | passed |", "|---|---:|---|"]
    lines += [f"| {c['check']} | {c['value'] if c['value'] is not None else '-'} | {'yes' if c['passed'] else 'NO'} |"
              for c in checks]
    lines += notes(result)
    lines += ["", f"Host: {result['host']['cpus']} CPUs, Python {result['host']['python']}; {result['host']['note']}."]
    (RESULTS / "distributed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
