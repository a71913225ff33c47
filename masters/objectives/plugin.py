"""Built-in objectives, registered through the same hook as any plugin (spec classes only)."""

from __future__ import annotations

from masters.hookspecs import hookimpl
from masters.objectives.specs import BUILTIN_OBJECTIVE_SPECS


@hookimpl
def masters_register_objectives(register):
    for spec_cls in BUILTIN_OBJECTIVE_SPECS:
        register(spec_cls)
