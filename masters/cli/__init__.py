"""The ``masters`` command line. Sub-commands live in small modules listed in COMMAND_MODULES.

Each module defines ``add_commands(subparsers)``, adding parsers whose ``func`` default is a
handler ``(args) -> int``. Handlers import heavy libraries (torch, transformers) inside their
bodies: ``list``, ``describe``, ``validate`` and ``schema`` must stay light.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "masters.cli.components",
    "masters.cli.pipeline",
    "masters.cli.masking",
    "masters.cli.demo",
    "masters.cli.bank",
)


def build_parser() -> argparse.ArgumentParser:
    from masters import __version__

    parser = argparse.ArgumentParser(
        prog="masters",
        description="Distil vision-language models with Masters (Masking Teacher and Reinforcing Student).",
    )
    parser.add_argument("--version", action="version", version=f"masters {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from masters.cli.output import print_error
    from masters.errors import MastersError
    from masters.plugins import PluginWarning

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("default", PluginWarning)
        warnings.showwarning = _one_line_warning
        try:
            return int(args.func(args) or 0)
        except MastersError as exc:
            print_error(exc)
            return exc.exit_code
        except KeyboardInterrupt:
            print("interrupted: run the same command again to resume", file=sys.stderr)
            return 130


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
