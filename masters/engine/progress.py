"""One rich progress display for every long stage (generation, scoring, training, evaluation)."""

from __future__ import annotations

import contextlib
from typing import Any


def progress_bar(enabled: bool = True) -> Any:
    """A context manager yielding a ``rich.progress.Progress`` (or ``None`` when disabled)."""
    if not enabled:
        return contextlib.nullcontext()
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn())
