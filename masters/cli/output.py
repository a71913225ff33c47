"""Console output shared by every command: one rich console each for stdout and stderr."""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=None)
def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def print_error(exc: Any) -> None:
    """A MastersError as ``error: where: message`` plus its fix; never a traceback."""
    from rich.markup import escape

    console(stderr=True).print(f"[bold red]error:[/] {escape(exc.render())}", soft_wrap=True)


def _whole_number_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        import argparse

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


# argparse types (argparse reports a bad value and exits 2)
positive_int = _whole_number_at_least(1, "at least 1")
non_negative_int = _whole_number_at_least(0, "0 or more")
