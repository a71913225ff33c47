"""Pipeline stages as commands: generate and score (train, evaluate and run build on them).

Each command takes the run config, resumes what an earlier (killed) run left, and prints a short
summary table. Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
from typing import Any

from masters.cli.output import console, positive_int


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("generate", help="generate the response bank (resumable)")
    p.add_argument("config", help="YAML run config")
    p.add_argument("--force", action="store_true", help="extend a bank made with other generation settings")
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("score", help="score the bank with the accuracy rewards (resumable)")
    p.add_argument("config", help="YAML run config")
    p.set_defaults(func=cmd_score)

    p = subparsers.add_parser("run", help="generate, score, train and evaluate; skip stages already done")
    p.add_argument("config", help="YAML run config")
    p.add_argument("--stages", help="comma-separated subset of generate,score,train,evaluate")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("ablate", help="run a grid of configs that swap components or values by name")
    p.add_argument("config", help="base YAML run config")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="dotted key and values, e.g. objective=masters,sft (repeatable); keys joined by + move together: training.n_teacher+training.n_student=[8,0],[4,4]")
    p.add_argument("--seeds", help="comma-separated seeds (a grid over `seed`)")
    p.add_argument("--out", help="where the cells and results go (default: output_dir/ablate)")
    p.set_defaults(func=cmd_ablate)

    p = subparsers.add_parser("train", help="train the student (resumes from the last checkpoint)")
    p.add_argument("config", help="YAML run config")
    p.add_argument("--cache-only", action="store_true",
                   help="only write the cached teacher signal (teacher_signal: cached), then stop")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("evaluate", help="score a model's greedy answers on a held-out split")
    p.add_argument("config", help="YAML run config (data and rewards)")
    p.add_argument("--model", help="checkpoint directory (default: the run's trained student)")
    p.add_argument("--split", default="test", choices=["validation", "test", "train"])
    p.add_argument("--max-new-tokens", type=positive_int, default=16)
    p.add_argument("--backend", metavar="NAME",
                   help="decode through this generation backend (e.g. vllm) instead of the adapter's generate")
    p.set_defaults(func=cmd_evaluate)


def cmd_generate(args: argparse.Namespace) -> int:
    from masters.engine.generation import generate_bank
    from masters.config import load_run_spec

    spec = load_run_spec(args.config)
    report = generate_bank(spec, force=args.force)  # under `accelerate launch`: every rank its share
    if not _main_rank():
        return 0  # the launch's total, printed once
    _table("generation", [
        ("rows already banked", f"{report.rows_present}"),
        ("rows written now", f"{report.rows_written}"),
        *((f"  {label}", f"{n}") for label, n in report.per_source.items()),
        ("tokens generated", f"{report.tokens}"),
        ("tokens / s", f"{report.tokens_per_second:.1f}"),
        ("wall time (s)", f"{report.seconds:.1f}"),
    ])
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from masters.bank.scoring import score_bank
    from masters.bank.store import ResponseBank
    from masters.data import load_splits
    from masters.engine.generation import bank_dir
    from masters.config import load_run_spec

    spec = load_run_spec(args.config)
    samples = {s.id: s for s in load_splits(spec.task)["train"]}
    bank = ResponseBank(bank_dir(spec))
    bank.manifest()  # a clear error when the bank does not exist yet
    # The judge defaults to the unmasked teacher: the largest of the chain, which comes last.
    report = score_bank(bank, samples, spec.rewards, context={"default_model_path": spec.teachers[-1].path})
    _table("scoring", [(f"{k}: scored / unscored / mean", f"{report.scored[k]} / {report.unscored[k]} / "
                                                         f"{report.mean[k]:.3f}") for k in report.scored])
    return 0 if not any(report.unscored.values()) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from masters.engine.pipeline import STAGES, run_pipeline
    from masters.errors import MastersError
    from masters.config import load_run_spec

    spec = load_run_spec(args.config)
    stages = None
    if args.stages:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise MastersError(f"unknown stage(s) {', '.join(unknown)}", where="--stages",
                               fix=f"choose from {', '.join(STAGES)}")
    results = run_pipeline(spec, stages=stages,
                           on_stage=lambda stage, state: console().print(f"[bold]{stage}[/]: {state}"))
    _table("run", [(stage, str(summary)) for stage, summary in results.items()])
    return 0 if all(not (isinstance(v, dict) and "unscored" in v) for v in results.values()) else 1


def cmd_ablate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from masters.engine.ablate import parse_grid, run_grid, summarise
    from masters.config import read_config

    base = read_config(args.config)
    grid = parse_grid(args.grid + ([f"seed={args.seeds}"] if args.seeds else []))
    out = Path(args.out or Path(base.get("output_dir", "runs/default")) / "ablate")
    cells = run_grid(base, grid, out, on_cell=lambda cell, state: console().print(f"[bold]{cell.label}[/]: {state}"))
    from rich.table import Table

    rows = summarise(cells)
    metrics = sorted({k[:-5] for r in rows for k in r if k.endswith(".mean")})
    table = Table(title=f"ablation ({len(cells)} cells) -> {out}/results.csv", title_justify="left")
    table.add_column("setting")
    table.add_column("seeds", justify="right")
    for metric in metrics:
        table.add_column(metric.split(".", 1)[1], justify="right")
    for r in rows:
        table.add_row(r["setting"], str(r["seeds"]),
                      *(f"{r[m + '.mean']:.3f} ± {r[m + '.std']:.3f}" for m in metrics))
    console().print(table)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from masters.engine.trainer import build_teacher_cache, train
    from masters.config import load_run_spec

    spec = load_run_spec(args.config)
    if args.cache_only:
        directory = build_teacher_cache(spec)  # under `accelerate launch`: every rank its share
        if _main_rank():
            console().print(f"teacher cache written to {directory}")
        return 0
    result = train(spec)
    last = result.last
    _table("training", [
        ("optimizer steps", f"{result.steps} (resumed at {result.resumed_from})"),
        ("final loss", f"{last.get('loss/total', float('nan')):.4f}"),
        ("student saved to", str(result.student_dir)),
        ("metrics", str(result.metrics_path)),
        ("wall time (s)", f"{result.seconds:.1f}"),
    ])
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from masters.data import load_splits
    from masters.engine.evaluate import evaluate_model, write_result
    from masters.config import load_run_spec

    spec = load_run_spec(args.config)
    model = args.model or str(Path(spec.output_dir) / "student")
    samples = load_splits(spec.task)[args.split]
    from masters.engine.locks import run_outputs

    with run_outputs(spec, "evaluate"):  # one writer per directory (decision 19)
        backend = None
        if args.backend:
            from masters.config import validate_component

            backend = validate_component("backend", {"name": args.backend}, where="--backend")
        result = evaluate_model(model, samples, spec.rewards, split=args.split, max_new_tokens=args.max_new_tokens,
                                context={"default_model_path": spec.teachers[-1].path}, backend=backend)
        write_result(result, Path(spec.output_dir) / "eval" / f"{Path(model).name}-{args.split}.json")
    _table(f"evaluation of {model} on {args.split} ({result.n} samples)",
           [(k, f"{v:.3f}") for k, v in result.accuracy.items()])
    return 0


def _main_rank() -> bool:
    from masters.engine.locks import launch_rank

    return launch_rank() == 0


def _table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for what, value in rows:
        table.add_row(what, value)
    console().print(table)
