"""Built-in maskers, registered through the same hook as any plugin (spec classes only)."""

from __future__ import annotations

from masters.hookspecs import hookimpl
from masters.masking.specs import BUILTIN_MASKER_SPECS


@hookimpl
def masters_register_maskers(register):
    for spec_cls in BUILTIN_MASKER_SPECS:
        register(spec_cls)
