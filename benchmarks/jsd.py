"""Chunked JSD (masters.rewards.jsd.token_jsd) against a naive full-softmax JSD.

One command:  python benchmarks/jsd.py            (defaults: 1024 tokens x 152,064 vocabulary, Qwen's)

Each contender x mode (forward; forward+backward) runs in its own subprocess (design decision
15): the parent samples the child's RSS with psutil, the child also reports its kernel high-water
mark (ru_maxrss) and its RSS once the inputs exist (the baseline). "Extra" memory is peak minus
baseline: what the divergence itself costs on top of the logits. The children save their
per-token values and a sample of gradient rows so the parent can check that both agree to 1e-5.
Writes benchmarks/results/jsd.json and jsd.md and prints a rich table with the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONTENDERS = ("naive", "chunked")
MODES = ("forward", "forward+backward")
GRAD_ROWS = (0, 1, 511, 1023)  # rows of the student gradient compared (all of it is ~600 MB)
TOLERANCE = 1e-5


def _worker(args: argparse.Namespace) -> None:
    import psutil
    import resource
    import torch
    from safetensors.torch import save_file

    from masters.rewards.jsd import naive_token_jsd, token_jsd

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    # Correlated teacher and student, as after some training: JSD ~ 0.1-0.3 per token.
    teacher = torch.randn(args.tokens, args.vocab, generator=gen).mul_(4.0)
    student = torch.randn(args.tokens, args.vocab, generator=gen).mul_(2.0).add_(teacher)
    backward = args.mode == "forward+backward"
    student.requires_grad_(backward)

    if args.contender == "naive":
        fn = lambda: naive_token_jsd(teacher, student, vocab_size=args.vocab)  # noqa: E731
    else:
        fn = lambda: token_jsd(teacher, student, vocab_size=args.vocab, chunk_size=args.chunk_size)  # noqa: E731

    baseline = psutil.Process().memory_info().rss
    times, cpu_times = [], []
    for _ in range(args.repeats):
        student.grad = None
        start, cpu_start = time.perf_counter(), time.process_time()
        values = fn()
        if backward:
            # A non-uniform upstream gradient, as a sequence-mean loss would give.
            (values * torch.linspace(0.5, 1.5, args.tokens)).sum().backward()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)  # user + sys of all threads
        values = values.detach()
    peak_kernel = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    tensors = {"values": values.contiguous()}
    if backward:
        rows = [r for r in GRAD_ROWS if r < args.tokens]
        tensors["grad_rows"] = student.grad[rows].contiguous()
    save_file(tensors, os.path.join(args.scratch, f"{args.contender}-{args.mode}.safetensors"))
    print(json.dumps({"times_s": times, "cpu_times_s": cpu_times, "baseline_rss": baseline, "peak_rss_kernel": peak_kernel}), flush=True)


def _run_child(args: argparse.Namespace, contender: str, mode: str, scratch: str) -> dict:
    from _measure import PeakRSS

    cmd = [
        sys.executable, __file__, "--worker", "--contender", contender, "--mode", mode, "--scratch", scratch,
        "--tokens", str(args.tokens), "--vocab", str(args.vocab), "--chunk-size", str(args.chunk_size),
        "--repeats", str(args.repeats), "--threads", str(args.threads),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakRSS(proc.pid, interval=0.002) as rss:
        out, err = proc.communicate()
    sampled = rss.peak
    if proc.returncode != 0:
        raise SystemExit(f"{contender} {mode} failed (exit {proc.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_sampled"] = sampled
    peak = max(sampled, result["peak_rss_kernel"])
    result["peak_rss"] = peak
    result["extra_rss"] = peak - result["baseline_rss"]
    result["median_s"] = statistics.median(result["times_s"])
    result["median_cpu_s"] = statistics.median(result["cpu_times_s"])
    return result


def _agreement(scratch: str, mode: str) -> dict:
    from safetensors.torch import load_file

    naive = load_file(os.path.join(scratch, f"naive-{mode}.safetensors"))
    chunked = load_file(os.path.join(scratch, f"chunked-{mode}.safetensors"))
    out = {"values_max_abs_diff": float((naive["values"] - chunked["values"]).abs().max())}
    if "grad_rows" in naive:
        diff = (naive["grad_rows"] - chunked["grad_rows"]).abs().max()
        out["grad_max_abs_diff"] = float(diff)
        out["grad_max_rel_diff"] = float(diff / naive["grad_rows"].abs().max())
    out["agree_1e-5"] = all(v <= TOLERANCE for k, v in out.items() if k.endswith("abs_diff"))
    out["mean_token_jsd"] = float(naive["values"].mean())
    return out


def _environment(args: argparse.Namespace) -> dict:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit or None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "device": "cpu",
    }


def _grad_diff(agreement: dict) -> str:
    return f"{agreement['grad_max_abs_diff']:.1e}" if "grad_max_abs_diff" in agreement else "-"


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def _markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [
        "# Chunked JSD vs naive full-softmax JSD",
        "",
        f"{cfg['tokens']} tokens x {cfg['vocab']:,} vocabulary, fp32 logits, chunk {cfg['chunk_size']}, "
        f"median of {cfg['repeats']}, {report['environment']['torch_threads']} torch thread(s), torch "
        f"{report['environment']['torch']}, {report['environment']['date']}, commit {report['environment']['git_commit']}.",
        "Each contender in its own subprocess; extra memory = peak RSS minus RSS once the inputs exist. "
        "CPU time is user + sys of the process (less sensitive than wall time to other load on the machine).",
        "",
        "| mode | naive wall (s) | chunked wall (s) | wall ratio naive/chunked | naive CPU (s) | chunked CPU (s) "
        "| CPU ratio | naive extra (MiB) | chunked extra (MiB) | memory ratio naive/chunked "
        "| max abs diff (values) | max abs diff (grad) | agree 1e-5 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        r = report["results"][mode]
        n, c, a = r["naive"], r["chunked"], r["agreement"]
        lines.append(
            f"| {mode} | {n['median_s']:.3f} | {c['median_s']:.3f} | {r['time_ratio']:.2f} "
            f"| {n['median_cpu_s']:.3f} | {c['median_cpu_s']:.3f} | {r['cpu_time_ratio']:.2f} | {_mib(n['extra_rss'])} "
            f"| {_mib(c['extra_rss'])} | {r['memory_ratio']:.1f} | {a['values_max_abs_diff']:.1e} "
            f"| {_grad_diff(a)} | {'yes' if a['agree_1e-5'] else 'NO'} |"
        )
    grad_mib = cfg["tokens"] * cfg["vocab"] * 4 / 2**20
    lines += [
        "",
        f"Notes: forward+backward extra memory includes the student logits' gradient ({grad_mib:,.0f} MiB) in both "
        "contenders; the chunked rest is its reused chunk buffers. The grad difference is over "
        f"rows {list(GRAD_ROWS)} of the student gradient (max relative to its largest entry: "
        f"{report['results']['forward+backward']['agreement'].get('grad_max_rel_diff', float('nan')):.1e}). "
        "On CPU much of the naive time is first-touch page faults of its full-size fp32 temporaries; "
        "a GPU's caching allocator hides that, so expect the memory ratio to carry over, not the time ratio.",
    ]
    lines += ["", "Peak RSS (MiB, kernel high-water / psutil sampled) and baseline:", ""]
    for mode in MODES:
        for name in CONTENDERS:
            x = report["results"][mode][name]
            lines.append(
                f"- {mode}, {name}: peak {_mib(x['peak_rss_kernel'])} / {_mib(x['peak_rss_sampled'])}, "
                f"baseline {_mib(x['baseline_rss'])}, times {', '.join(f'{t:.3f}' for t in x['times_s'])} s"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=152_064)
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    # One thread by default: on a shared CPU, every parallel region of a multi-threaded op waits for
    # a time slice on each core, which penalises many small ops (chunks) and drowns the comparison.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "jsd"), help="path without suffix")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite OUT.md from an existing OUT.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    if args.markdown_only:
        out = Path(args.out)
        out.with_suffix(".md").write_text(_markdown(json.loads(out.with_suffix(".json").read_text())))
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="masters-jsd-") as scratch:
        for mode in MODES:
            results[mode] = {}
            for contender in CONTENDERS:
                with console.status(f"{contender} {mode} ({args.tokens} x {args.vocab:,})"):
                    results[mode][contender] = _run_child(args, contender, mode, scratch)
            n, c = results[mode]["naive"], results[mode]["chunked"]
            results[mode]["time_ratio"] = n["median_s"] / c["median_s"]
            results[mode]["cpu_time_ratio"] = n["median_cpu_s"] / c["median_cpu_s"]
            results[mode]["memory_ratio"] = n["extra_rss"] / max(c["extra_rss"], 1)
            results[mode]["agreement"] = _agreement(scratch, mode)

    report = {
        "benchmark": "jsd",
        "config": {"tokens": args.tokens, "vocab": args.vocab, "chunk_size": args.chunk_size,
                   "repeats": args.repeats, "dtype": "float32", "tolerance": TOLERANCE},
        "environment": _environment(args),
        "results": results,
    }
    table = Table(title=f"JSD, {args.tokens} tokens x {args.vocab:,} vocab (median of {args.repeats})")
    for col in ("mode", "naive s", "chunked s", "wall ratio", "CPU ratio", "naive extra MiB", "chunked extra MiB",
                "memory ratio", "max |diff|", "agree 1e-5"):
        table.add_column(col, justify="right", overflow="fold")
    for mode in MODES:
        r = results[mode]
        a = r["agreement"]
        diff = max(a["values_max_abs_diff"], a.get("grad_max_abs_diff", 0.0))
        table.add_row(mode, f"{r['naive']['median_s']:.3f}", f"{r['chunked']['median_s']:.3f}", f"{r['time_ratio']:.2f}x",
                      f"{r['cpu_time_ratio']:.2f}x", _mib(r["naive"]["extra_rss"]), _mib(r["chunked"]["extra_rss"]), f"{r['memory_ratio']:.1f}x",
                      f"{diff:.1e}", "yes" if a["agree_1e-5"] else "[red]NO[/red]")
    console.print(table)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(report))
    console.print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0 if all(results[m]["agreement"]["agree_1e-5"] for m in MODES) else 1


if __name__ == "__main__":
    sys.exit(main())
