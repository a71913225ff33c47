"""The public API that plugin packages import from: everything else in masters is internal.

A plugin package (see ``plugins/`` and CONTRIBUTING.md) needs only the names below; a test
(``tests/test_public_api.py``) checks that the first-party plugins import nothing else from masters.
Importing this module stays torch-free: heavy names (the adapter base class, the masked teacher,
result types) are resolved lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from masters.errors import MastersError
from masters.hookspecs import hookimpl
from masters.interfaces import VLM_PARTS, VLMPart
from masters.ratios import Ratio

# name -> module that defines it; imported on first access so `import masters.api` stays light.
_LAZY: dict[str, str] = {
    # spec base classes (pydantic, torch-free)
    "StrictModel": "masters.specs",
    "ComponentSpec": "masters.specs",
    "MaskerSpec": "masters.specs",
    "ScheduleSpec": "masters.specs",
    "RewardSpec": "masters.specs",
    "AdapterSpec": "masters.specs",
    "ObjectiveSpec": "masters.specs",
    "TaskSpec": "masters.specs",
    "BackendSpec": "masters.specs",
    # configs: validate a run or one component, as masters does
    "validate_run_spec": "masters.config",
    "validate_component": "masters.config",
    "load_run_spec": "masters.config",
    "get_components": "masters.plugins",
    "reset_components": "masters.plugins",
    # errors
    "SpecError": "masters.errors",
    "DataError": "masters.errors",
    # masker unit layouts (rows, columns, blocks, N:M groups, or any view + permutation)
    "UnitLayout": "masters.masking.layout",
    "BaseMasker": "masters.masking.maskers",  # scores |w|; a masker subclasses it for units() alone
    "LayoutError": "masters.masking.layout",
    # protocols and the values they exchange
    "Masker": "masters.interfaces",
    "RestoreSchedule": "masters.interfaces",
    "AccuracyReward": "masters.interfaces",
    "DistillationReward": "masters.interfaces",
    "VLMAdapter": "masters.interfaces",
    "ScoredResponse": "masters.interfaces",
    "Objective": "masters.interfaces",
    "ObjectiveNeeds": "masters.interfaces",
    "StepInputs": "masters.interfaces",
    "ObjectiveLoss": "masters.interfaces",
    "SIGNALS": "masters.interfaces",
    "Task": "masters.interfaces",
    "GenerationBackend": "masters.interfaces",
    "GenerationSession": "masters.interfaces",
    "BackendCapabilities": "masters.interfaces",
    "SamplingSettings": "masters.interfaces",
    "GeneratedResponse": "masters.interfaces",
    # objectives: the Masters objective's tensor functions, for objectives that build on it
    "group_advantages": "masters.objectives.losses",
    "MaskedTeacher": "masters.masking.runtime",
    "masters_loss": "masters.objectives.losses",
    "reduce_token_values": "masters.rewards.jsd",
    # data
    "VQASample": "masters.data.types",
    # adapters (torch): the base class whose public family hooks a new VLM family implements
    # (CONTRIBUTING.md, "Adding an adapter for a new VLM family"), its result types and errors
    "HFVLMAdapter": "masters.adapters.base",
    "EncodedBatch": "masters.adapters.base",
    "TeacherForced": "masters.adapters.base",
    "ImageTokenMismatchError": "masters.errors",
    # which adapter a checkpoint directory gets (config.json: model_type claims), and building it
    "read_checkpoint_config": "masters.adapters.resolve",
    "adapter_spec_for": "masters.adapters.resolve",
    "resolve_adapter": "masters.adapters.resolve",
    "check_compatible": "masters.adapters.compat",
    # tiny checkpoints for an adapter's tests: the shared word-level tokenizer of the shapes task
    # (deterministic, every family's special tokens), so teacher and student share a vocabulary
    "build_tokenizer": "masters.models.tiny",
}

__all__ = sorted(["MastersError", "hookimpl", "VLM_PARTS", "VLMPart", "Ratio", *_LAZY])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'masters.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
