"""Data: the sample type every component exchanges, and the splits of a run's task.

``load_splits(task_spec) -> {"train": [...], "validation": [...], "test": [...]}`` of
:class:`VQASample` for any registered task (``masters list tasks``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from masters.data.types import VQASample, load_image

if TYPE_CHECKING:
    from masters.specs import TaskSpec

__all__ = ["SPLITS", "VQASample", "load_image", "load_splits"]

SPLITS: tuple[str, ...] = ("train", "validation", "test")


def load_splits(task_spec: TaskSpec) -> dict[str, list[VQASample]]:
    """Every split of a task spec, built by the task's implementation; an empty train split is an error."""
    from masters.errors import DataError

    built = task_spec.build().splits()
    splits = {name: list(built.get(name, ())) for name in SPLITS}
    if not splits["train"]:
        raise DataError(f"task {task_spec.name!r} gave an empty train split", where="task",
                        fix="check the task's fields (more training questions, the right path or split)")
    return splits
