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
    p.add_argument("--task", choices=("shapes", "shapes_reason"), default="shapes",
                   help="shapes (default): the demo above; shapes_reason: the evidence testbed's capacity-gap "
                   "models, its gates and SFT vs Masters with one seed (about 45 min the first time)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import os
    import warnings

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads or 1))
    if args.task == "shapes_reason":
        return _demo_reason(args)
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


def _demo_reason(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from masters.demo.reason import TITLE, results_table, run_reason_demo
    from masters.errors import MastersError

    if args.config or args.cache:
        raise MastersError("--config and --cache belong to the shapes demo", where="masters demo --task shapes_reason",
                           fix="leave them out (the testbed's models are cached in OUTPUT/cache)")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the demo's own lines say what is happening
    torch.set_num_threads(args.threads or 1)
    out = console()
    directory = Path(args.output or "runs/demo-reason")
    out.print(f"[bold]masters demo --task shapes_reason[/] -> {directory} ({TITLE})")
    results = run_reason_demo(directory, say=out.print, print_table=out.print, progress=not args.quiet)
    out.print(results_table(results))
    out.print(f"probe.json and results.json in {directory}; the study over seeds and controls: "
              "python benchmarks/quality_reason.py")
    return 0
