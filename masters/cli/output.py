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


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (argparse reports anything else and exits 2)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value
