"""Built-in restore schedules, registered through the same hook as any plugin."""

from __future__ import annotations

from masters.hookspecs import hookimpl
from masters.schedules.specs import BUILTIN_SCHEDULE_SPECS


@hookimpl
def masters_register_schedules(register):
    for spec_cls in BUILTIN_SCHEDULE_SPECS:
        register(spec_cls)
