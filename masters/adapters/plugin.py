"""Built-in VLM adapters and their checkpoint claims (by ``model_type``, no transformers import).

Every registered adapter spec, built-in or plugin, already claims the model types its
``model_types`` lists (``masters.adapters.resolve``); this hook answers the same for the built-ins
so that a plugin's own ``masters_claim_checkpoint`` for one of their types is reported as a
conflict by name. The hook is for claims that need more than the model type.
"""

from __future__ import annotations

from typing import Any

from masters.adapters.specs import BUILTIN_ADAPTER_SPECS
from masters.hookspecs import hookimpl


@hookimpl
def masters_register_adapters(register):
    for spec_cls in BUILTIN_ADAPTER_SPECS:
        register(spec_cls)


@hookimpl
def masters_claim_checkpoint(config: dict[str, Any]) -> str | None:
    model_type = config.get("model_type")
    for spec_cls in BUILTIN_ADAPTER_SPECS:
        if model_type in spec_cls.model_types:
            return spec_cls.model_fields["name"].default
    return None
