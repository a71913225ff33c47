"""VLM adapters: one per model family; everything the engine does with a model goes through one.

Public API (imported lazily, so ``import masters.adapters`` stays torch-free)::

    resolve_adapter(model_spec, **ctx) -> VLMAdapter      # pick by config.json and build
    adapter_spec_for(model_spec) -> AdapterSpec            # pick only
    check_compatible(teacher, student) -> int              # shared vocabulary length
    HFVLMAdapter, EncodedBatch, TeacherForced              # base class and result types
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "resolve_adapter": "masters.adapters.resolve",
    "adapter_spec_for": "masters.adapters.resolve",
    "read_checkpoint_config": "masters.adapters.resolve",
    "check_compatible": "masters.adapters.compat",
    "shared_vocab_size": "masters.adapters.compat",
    "HFVLMAdapter": "masters.adapters.base",
    "EncodedBatch": "masters.adapters.base",
    "TeacherForced": "masters.adapters.base",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'masters.adapters' has no attribute {name!r}")
