"""Specs of the built-in VLM adapters (torch-free)."""

from __future__ import annotations

from typing import ClassVar, Literal

from masters.specs import AdapterSpec


class LlavaAdapterSpec(AdapterSpec):
    """LLaVA: a CLIP-style vision tower, a projector and a Llama or Qwen2 language model."""

    implementation: ClassVar[str] = "masters.adapters.llava:LlavaAdapter"
    model_types: ClassVar[tuple[str, ...]] = ("llava",)
    name: Literal["llava"] = "llava"


BUILTIN_ADAPTER_SPECS: tuple[type[AdapterSpec], ...] = (LlavaAdapterSpec,)
