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
