"""``masters demo``: the README's first command (see masters.demo)."""

from __future__ import annotations

import argparse
from typing import Any

from masters.cli.output import console, positive_int


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="the whole method on the shapes task, on CPU, in minutes")
    p.add_argument("--config", help="demo config (default: the built-in one, as in configs/demo.yaml)")
    p.add_argument("--output", help="run directory (default: the config's output_dir, runs/demo)")
    p.add_argument("--cache", help="where trained teachers and base students are kept (default: OUTPUT/cache)")
    p.add_argument("--threads", type=positive_int, help="torch intra-op threads (default 1: fastest for tiny models)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import os
    import warnings

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads or 1))
    from masters.demo import load_demo_spec, run_demo
    from masters.demo.report import table
    from masters.demo.run import DemoWarning

    spec = load_demo_spec(args.config, output_dir=args.output, cache_dir=args.cache, threads=args.threads)
    out = console()
    out.print(f"[bold]masters demo[/] -> {spec.output_dir}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DemoWarning)  # said live, listed after the table
        result = run_demo(spec, progress=not args.quiet, say=out.print)
    out.print(table(result))
    for message in result.warnings:
        out.print(f"[yellow]warning:[/] {message}")
    out.print(f"plots, report.md and results.json in {spec.output_dir}")
    return 0
