"""Built-in tasks, registered through the same hook as any plugin (spec classes only)."""

from __future__ import annotations

from masters.hookspecs import hookimpl
from masters.tasks.specs import BUILTIN_TASK_SPECS


@hookimpl
def masters_register_tasks(register):
    for spec_cls in BUILTIN_TASK_SPECS:
        register(spec_cls)
