"""Built-in generation backends, registered through the same hook as any plugin (spec classes only)."""

from __future__ import annotations

from masters.backends.specs import BUILTIN_BACKEND_SPECS
from masters.hookspecs import hookimpl


@hookimpl
def masters_register_backends(register):
    for spec_cls in BUILTIN_BACKEND_SPECS:
        register(spec_cls)
