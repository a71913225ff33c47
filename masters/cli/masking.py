"""``masters timeline`` and ``masters mask``: plan the restore schedule, export a masked teacher."""

from __future__ import annotations

import argparse
from typing import Any

from masters.cli.output import non_negative_int, positive_int


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("timeline", help="print (and plot) the planned teacher and mask level per step",
                              description="Print the planned teacher and mask level per step of a run, before training.")
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("--steps", type=positive_int, help="total optimizer steps (default: derived from the config when possible)")
    p.add_argument("--plot", metavar="PATH", help="also write the timeline as a PNG")
    p.set_defaults(func=timeline)

    p = subparsers.add_parser("mask", help="write a masked teacher checkpoint and its sparsity report",
                              description="Mask a teacher of a config at one level and save_pretrained it.")
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("--level", required=True, help="mask ratio, e.g. 0.2, '20%%' or 2000bp")
    p.add_argument("--out", required=True, help="output directory (must be new or empty)")
    p.add_argument("--teacher", type=non_negative_int, default=0, help="index of the teacher in the chain (default 0)")
    p.set_defaults(func=mask)


def timeline(args: argparse.Namespace) -> int:
    from rich.table import Table

    from masters.cli.output import console
    from masters.errors import MastersError
    from masters.schedules.chain import TeacherChain, planned_total_steps
    from masters.schedules.timeline import plot_timeline, timeline_rows
    from masters.config import load_run_spec

    spec = load_run_spec(args.config)
    total = args.steps or planned_total_steps(spec)
    if not total or total <= 0:
        raise MastersError("cannot tell the number of optimizer steps from this config", where=args.config,
                           fix="pass --steps N")
    chain = TeacherChain.from_run_spec(spec)
    table = Table(title=f"planned timeline: {total} optimizer steps")
    for col in ("teacher", "stage", "level", "steps", "from", "to"):
        table.add_column(col, justify="right" if col in ("stage", "level", "steps", "from", "to") else "left")
    for row in timeline_rows(chain, total):
        table.add_row(f"{row['teacher']}: {row['path']}", str(row["stage"]), row["level"], str(row["steps"]),
                      str(row["start"]), str(row["end"] - 1))
    out = console()
    out.print(table)
    for i in range(len(chain.schedules)):
        out.print(f"teacher {i} levels: {', '.join(str(r) for r in chain.levels(i))}")
    if args.plot:
        path = plot_timeline(chain, total, args.plot)
        out.print(f"plot: {path}")
    return 0


def mask(args: argparse.Namespace) -> int:
    from masters.cli.output import console
    from masters.errors import MastersError
    from masters.masking.export import export_masked_checkpoint
    from masters.config import load_run_spec

    spec = load_run_spec(args.config)
    if not 0 <= args.teacher < len(spec.teachers):
        raise MastersError(f"there is no teacher {args.teacher}", where="--teacher",
                           fix=f"use 0..{len(spec.teachers) - 1}")
    report = export_masked_checkpoint(spec.teachers[args.teacher].path, args.out, spec.masker, args.level)
    out = console()
    out.print(f"masked {report.masked:,} of {report.numel:,} weights ({report.ratio:.4f}) at level {report.level} "
              f"with {report.masker!r}")
    for part, row in report.by_part().items():
        out.print(f"  {part}: {row['masked']:,} / {row['numel']:,} ({row['ratio']:.4f})")
    out.print(f"wrote {args.out} (save_pretrained) and masking_report.json")
    return 0
