"""Which teacher tensors are masked: maskable weights by VLM part, then the spec's scope.

The adapters (``VLMAdapter.maskable_parameters()``) are the authority on parts; until a family
has an adapter, :func:`find_maskable` classifies by module-name rules that cover the common
transformers layouts. Both produce the same ``{part: {name: Parameter}}`` mapping, so the runtime
never depends on where it came from.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from masters.errors import MastersError
from masters.interfaces import VLM_PARTS

# Checked in order: the projector often lives inside the vision tower (Qwen2-VL `visual.merger`).
PART_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("projector", ("*multi_modal_projector*", "*visual.merger*", "*mm_projector*", "*.mlp1.*", "mlp1.*",
                   "*connector*", "*vision_proj*", "*visual_projection*")),
    ("vision", ("*vision_tower*", "*visual*", "*vision_model*", "*vision_encoder*", "*image_encoder*", "*vit.*")),
)


def classify_part(name: str) -> str:
    """VLM part of a parameter from its qualified name; anything not vision or projector is language."""
    for part, patterns in PART_RULES:
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return part
    return "language"


def unwrap_model(model: Any) -> Any:
    """The bare model under DDP / DataParallel / accelerate / torch.compile wrappers."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = getattr(model, "_orig_mod", None)  # torch.compile
        if inner is None and type(model).__name__ in {"DistributedDataParallel", "DataParallel", "FullyShardedDataParallel"}:
            inner = getattr(model, "module", None)
        if inner is None:
            break
        model = inner
    return model


def find_maskable(model: Any) -> dict[str, dict[str, Any]]:
    """The default scope of method.md: 2-D linear weights (and 3-D expert weights), by VLM part.

    Embeddings, norms, biases and the LM head are left alone. A weight shared by several modules
    (tied weights) appears once, under its first name.
    """
    import torch

    model = unwrap_model(model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_weight = getattr(head, "weight", None)
    out: dict[str, dict[str, Any]] = {part: {} for part in VLM_PARTS}
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        candidates = []
        if isinstance(module, torch.nn.Linear):
            candidates.append("weight")
        elif "expert" in type(module).__name__.lower():
            candidates.extend(n for n, p in module.named_parameters(recurse=False) if p.dim() == 3)
        for attr in candidates:
            param = module._parameters.get(attr)
            if param is None or id(param) in seen or param is head_weight:
                continue
            name = f"{mod_name}.{attr}" if mod_name else attr
            if mod_name.split(".")[-1] == "lm_head":
                continue
            seen.add(id(param))
            out[classify_part(name)][name] = param
    return out


def select_scope(maskable: Mapping[str, Mapping[str, Any]], spec: Any) -> dict[str, tuple[str, Any]]:
    """``{name: (part, tensor)}`` in scope for a MaskerSpec, with errors that name the field to fix."""
    explicit_parts = "parts" in spec.model_fields_set
    names_by_part = {part: list(maskable.get(part, {})) for part in VLM_PARTS}
    for part in maskable:
        if part not in VLM_PARTS:
            raise MastersError(f"unknown VLM part {part!r} in the maskable tensors", where="adapter.maskable_parameters",
                               fix=f"use one of {', '.join(VLM_PARTS)}")
    every = [n for names in names_by_part.values() for n in names]
    for i, part in enumerate(spec.parts):
        if explicit_parts and not names_by_part.get(part):
            raise MastersError(
                f"part {part!r} has no maskable tensor in this model",
                where=f"masker.parts[{i}]",
                fix=f"drop it; parts with tensors here: {', '.join(p for p in VLM_PARTS if names_by_part[p]) or '(none)'}",
            )
    chosen = [(n, p) for p in spec.parts for n in names_by_part.get(p, [])]
    for field in ("include", "exclude"):
        for i, pattern in enumerate(getattr(spec, field)):
            if not any(fnmatch.fnmatchcase(n, pattern) for n in every):
                raise MastersError(
                    f"pattern {pattern!r} matches no maskable tensor",
                    where=f"masker.{field}[{i}]",
                    fix=f"patterns are fnmatch over parameter names such as {every[0]!r}" if every else "check the model",
                )
    if spec.include:
        chosen = [(n, p) for n, p in chosen if any(fnmatch.fnmatchcase(n, pat) for pat in spec.include)]
    chosen = [(n, p) for n, p in chosen if not any(fnmatch.fnmatchcase(n, pat) for pat in spec.exclude)]
    if not chosen:
        raise MastersError("the masking scope is empty: no tensor is left to mask", where="masker",
                           fix="widen masker.parts / masker.include or narrow masker.exclude")
    return {n: (p, maskable[p][n]) for n, p in chosen}
