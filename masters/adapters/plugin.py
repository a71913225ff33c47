"""Built-in VLM adapters and their checkpoint claims (by ``model_type``, no transformers import)."""

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
