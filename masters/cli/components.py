"""Commands about components and configs: plugins, list, describe, validate, schema, catalog.

None of these may import torch or transformers (``benchmarks/cli_startup.py`` checks it).
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from masters.cli.output import console


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("plugins", help="installed plugins, their versions and what each registers")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_plugins)

    p = subparsers.add_parser("list", help="registered components, all kinds or one")
    p.add_argument("kind", nargs="?", help="a kind: masker, schedule, reward, adapter, objective, task or backend (singular or plural)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)

    p = subparsers.add_parser("describe", help="a component's fields, types, defaults and origin")
    p.add_argument("name", help="component name, e.g. magnitude")
    p.add_argument("--kind", help="disambiguate when several kinds use the name")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_describe)

    p = subparsers.add_parser("validate", help="check a run config; every error with its location")
    p.add_argument("config", help="YAML run config")
    p.add_argument("--print", dest="show", action="store_true", help="print the resolved spec as YAML")
    p.add_argument("--no-paths", action="store_true",
                   help="skip checking that model directories, data files and output directories are usable")
    p.set_defaults(func=cmd_validate)

    p = subparsers.add_parser("schema", help="JSON Schema of the run config or of one kind's components")
    p.add_argument("kind", nargs="?", help="a kind (masker, schedule, reward, adapter, objective, task, backend); omitted: the whole run config")
    p.set_defaults(func=cmd_schema)

    p = subparsers.add_parser("catalog", help="regenerate or check the checked-in registry/ catalogue")
    p.add_argument("--check", action="store_true", help="fail (exit 1) when registry/ is stale")
    p.add_argument("--root", default=None, help="repository root (default: the checkout masters runs from)")
    p.set_defaults(func=cmd_catalog)


def _components() -> Any:
    from masters.plugins import get_components

    return get_components()


def cmd_plugins(args: argparse.Namespace) -> int:
    comps = _components()
    rows = []
    for info in comps.plugins.values():
        registers = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in sorted(info.registers.items()))
        rows.append({
            "plugin": info.name, "distribution": info.distribution, "version": info.version,
            "builtin": info.builtin, "registers": info.registers, "hooks": info.hooks, "summary": registers,
        })
    failures = [f.__dict__ for f in comps.failures]
    if args.json:
        print(json.dumps({"plugins": rows, "failed": failures}, indent=2, default=list))
        return 0
    from rich.table import Table

    table = Table(title="masters plugins", title_justify="left")
    for col in ("plugin", "distribution", "version", "registers", "hooks"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["plugin"], row["distribution"], row["version"], row["summary"] or "-",
                      ", ".join(row["hooks"]))
    console().print(table)
    for failure in comps.failures:
        console().print(f"[yellow]failed:[/] {failure.describe()}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    comps = _components()
    kinds = [comps.registry(args.kind).kind] if args.kind else list(comps.registries)
    entries = [entry for kind in kinds for entry in comps.registry(kind)]
    if args.json:
        print(json.dumps([{"kind": e.kind, "name": e.name, "summary": e.summary,
                           "distribution": e.origin.distribution, "version": e.origin.version} for e in entries],
                         indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"masters components ({len(entries)})", title_justify="left")
    for col in ("kind", "name", "summary", "origin"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(e.kind, e.name, e.summary, f"{e.origin.distribution} {e.origin.version}")
    console().print(table)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from masters.errors import MastersError, UnknownComponentError

    comps = _components()
    if args.kind:
        matches = [comps.registry(args.kind).get(args.name)]
    else:
        matches = comps.find(args.name)
    if not matches:
        every = sorted({e.name for reg in comps.registries.values() for e in reg})
        raise UnknownComponentError("component", args.name, every, hint=comps.failures_hint())
    if len(matches) > 1:
        kinds = ", ".join(e.kind for e in matches)
        raise MastersError(f"{args.name!r} names several kinds of component ({kinds})",
                           fix=f"add --kind, e.g. --kind {matches[0].kind}")
    entry = matches[0]
    info = comps.registry(entry.kind).describe(entry.name)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    from rich.markup import escape
    from rich.table import Table

    out = console()
    out.print(f"[bold]{entry.name}[/] ({entry.kind}) from {escape(str(entry.origin))}")
    if info["description"]:  # unwrap the docstring's hard line breaks; keep its paragraphs
        out.print(escape(re.sub(r"(?<!\n)\n(?!\n)", " ", info["description"])))
    table = Table(title_justify="left")
    for col in ("field", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for row in info["fields"]:
        default = "(required)" if row["required"] else json.dumps(row["default"])
        table.add_row(row["field"], escape(row["type"]), escape(default), escape(row["description"]))
    out.print(table)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from masters.config import load_run_spec

    spec = load_run_spec(args.config)
    if not args.no_paths:
        from masters.config import path_problems
        from masters.errors import MastersError

        problems = path_problems(spec)
        if problems:
            lines = "\n".join(f"  {loc}: {msg}" for loc, msg in problems)
            raise MastersError(f"{len(problems)} unusable path{'s' if len(problems) != 1 else ''}\n{lines}",
                               where=str(args.config),
                               fix="correct the paths listed above (or pass --no-paths to check the fields only)")
    if args.show:
        import yaml

        print(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), end="")
    else:
        teachers = ", ".join(t.path for t in spec.teachers)
        console().print(
            f"[green]valid[/]: {args.config} (teachers: {teachers}; student: {spec.student.path}; "
            f"masker: {spec.masker.name}; schedule: {spec.schedule.name}; "
            f"rewards: {', '.join(r.name for r in spec.rewards)}; objective: {spec.objective.name}; "
            f"task: {spec.task.name}; backend: {spec.backend.name})"
        )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from masters.config import schema_for

    kind = _components().registry(args.kind).kind if args.kind else None
    print(json.dumps(schema_for(kind), indent=2, sort_keys=True))
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    from masters.catalog import check_catalog, write_catalog

    if args.check:
        stale = check_catalog(args.root)
        if stale:
            console(stderr=True).print(
                "[red]registry/ is stale[/]: " + ", ".join(stale) + "\n  fix: run `masters catalog` and commit registry/"
            )
            return 1
        console().print("[green]registry/ is up to date[/]")
        return 0
    written = write_catalog(args.root)
    console().print(f"wrote {len(written)} files under registry/: {', '.join(written)}")
    return 0
