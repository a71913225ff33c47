"""Bank commands: ``masters bank import | inspect | behaviour-logprobs | fingerprint``.

``import`` adds responses generated elsewhere (for example by vLLM from checkpoints exported with
``masters mask``) after validating every row; ``inspect`` shows per teacher and level what the
bank holds and plots the teacher's degradation curve; ``fingerprint`` prints the tokenizer
fingerprint an imported file must carry. Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
from typing import Any

from masters.cli.output import console


def add_commands(subparsers: Any) -> None:
    bank = subparsers.add_parser("bank", help="import responses into the bank, inspect it")
    sub = bank.add_subparsers(dest="bank_command", metavar="SUBCOMMAND")
    bank.set_defaults(func=lambda args: (bank.print_help(), 0)[1])

    p = sub.add_parser("import", help="validate responses generated elsewhere (Parquet or JSONL) and bank them")
    p.add_argument("config", help="YAML run config (the bank is <output_dir>/bank)")
    p.add_argument("files", nargs="+", metavar="FILE", help=".parquet or .jsonl files in the bank schema")
    p.add_argument("--tokenizer-fingerprint", help="fingerprint of the tokenizer the files were made with "
                   "(when they have no tokenizer_fingerprint column or metadata)")
    p.add_argument("--force", action="store_true", help="extend a bank made with other generation settings")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("inspect", help="per teacher and level: accuracy, length, truncation, diversity")
    p.add_argument("config", help="YAML run config")
    p.add_argument("--plot", metavar="PATH", help="write accuracy against mask ratio (PNG) here")
    p.add_argument("--reward", help="plot only this accuracy reward (default: every one)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("behaviour-logprobs", help="fill the behaviour log-probs (mu, for TOPR) of rows that "
                       "lack them, by teacher-forcing each row through the model that generated it")
    p.add_argument("config", help="YAML run config (its bank, teachers, student, masker and sampling settings)")
    p.add_argument("--batch-size", type=int, default=16, help="rows per teacher-forcing pass")
    p.set_defaults(func=cmd_behaviour)

    p = sub.add_parser("repair", help="keep one copy of each banked row and score (after two writers raced)")
    p.add_argument("config", help="YAML run config (the bank is <output_dir>/bank, or bank_dir)")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("fingerprint", help="print the tokenizer fingerprint of the config's student")
    p.add_argument("config", help="YAML run config")
    p.set_defaults(func=cmd_fingerprint)


def cmd_import(args: argparse.Namespace) -> int:
    from masters.bank.importer import import_files
    from masters.config import load_run_spec

    spec = load_run_spec(args.config)
    report = import_files(spec, args.files, force=args.force, tokenizer_fingerprint=args.tokenizer_fingerprint)
    from rich.table import Table

    table = Table(title="bank import", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("files", str(len(report.files)))
    table.add_row("rows read", str(report.rows_read))
    table.add_row("rows written", str(report.rows_written))
    for group, n in report.per_group.items():
        table.add_row(f"  {group}", str(n))
    table.add_row("identical rows skipped", str(report.rows_skipped))
    console().print(table)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from masters.bank.inspect import inspect_bank, plot_degradation, render_table
    from masters.config import load_run_spec

    spec = load_run_spec(args.config)
    stats, summary = inspect_bank(spec)
    console().print(render_table(stats, title=f"response bank ({sum(s.rows for s in stats)} rows)"))
    console().print(f"summary: {summary}")
    if args.plot:
        path = plot_degradation(stats, args.plot, reward=args.reward)
        console().print(f"degradation plot: {path}")
    return 0


def cmd_behaviour(args: argparse.Namespace) -> int:
    from rich.table import Table

    from masters.config import load_run_spec
    from masters.engine.behaviour import fill_behaviour_logprobs

    counts = fill_behaviour_logprobs(load_run_spec(args.config), batch_size=args.batch_size)
    table = Table(title="behaviour log-probs filled", title_justify="left")
    table.add_column("generator")
    table.add_column("rows", justify="right")
    for label, n in counts.items():
        table.add_row(label, str(n))
    if not counts:
        table.add_row("(every row already had them)", "0")
    console().print(table)
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from masters.bank.importer import fingerprint_of, student_tokenizer
    from masters.config import load_run_spec

    print(fingerprint_of(student_tokenizer(load_run_spec(args.config))))
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from masters.bank.store import ResponseBank
    from masters.config import load_run_spec
    from masters.engine.generation import bank_dir

    bank = ResponseBank(bank_dir(load_run_spec(args.config)))
    bank.manifest()  # a clear error when there is no bank
    with bank.writing("bank repair"):
        removed = bank.repair()
        rows = len(bank)
    for folder, n in removed.items():
        console().print(f"{folder}: {n} duplicate cop{'y' if n == 1 else 'ies'} removed")
    console().print(f"bank {bank.directory}: {rows} rows, one copy of each")
    return 0
