"""``masters probe CONFIG``: the calibration gates G1-G4, before any training (masters.engine.probe).

Prints the gates and the teacher at each mask level as tables, writes a plot and a JSON report,
and exits 2 naming each failing gate, its value and the fix. Heavy imports happen in the handler.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from masters.cli.output import console
from masters.files import atomic_write_json


def _levels(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"levels must be comma-separated ratios such as 0.1,0.2, got {text!r}") from None
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError("levels must lie strictly between 0 and 1")
    return values


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("probe", help="calibration gates G1-G4 (capacity gap, masking bites, R_distill "
                              "informative, group signal) on the train and validation splits; exit 2 on a failure")
    p.add_argument("config", help="YAML run config (teacher, student, masker, schedule, task, rewards, generation)")
    p.add_argument("--out", help="where the plot and probe.json go (default OUTPUT_DIR/probe)")
    p.add_argument("--min-validation", type=int, default=2000, help="validation questions G1 needs (default 2000)")
    p.add_argument("--n-levels", type=int, default=512, help="validation questions teacher-forced per mask level")
    p.add_argument("--n-level-accuracy", type=int, default=256, help="validation questions decoded per mask level")
    p.add_argument("--groups", type=int, default=64, help="train questions whose groups G3 and G4 sample")
    p.add_argument("--levels", type=_levels, default=None, help="mask levels to probe (default 0.05,0.1,...,0.5)")
    p.add_argument("--curve", help="the student's warm-up curve (JSON: steps, accuracy, n); default: "
                   "plateau.json beside the student")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    from masters.config import load_run_spec
    from masters.engine.probe import DEFAULT_LEVELS, failure, plot_report, render_tables, run_probe

    spec = load_run_spec(args.config)
    curve = json.loads(Path(args.curve).read_text()) if args.curve else None
    out = Path(args.out) if args.out else Path(spec.output_dir) / "probe"
    say = lambda text: console().print(text)  # noqa: E731
    report = run_probe(spec, min_validation=args.min_validation, n_levels=args.n_levels,
                       n_level_accuracy=args.n_level_accuracy, n_groups=args.groups,
                       levels=args.levels or DEFAULT_LEVELS, curve=curve, say=say)
    for table in render_tables(report):
        console().print(table)
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_report(report, out / "probe.png")
    atomic_write_json(out / "probe.json", report.to_json(), default=str)
    console().print(f"plot: {plot}\nreport: {out / 'probe.json'} ({report.seconds:.0f} s)")
    error = failure(report)
    if error is not None:
        raise error
    console().print(f"[green]every gate passes[/]; recommended r_max {report.r_max:.2f}")
    return 0
