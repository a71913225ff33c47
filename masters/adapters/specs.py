"""Specs of the built-in VLM adapters (torch-free: listing and validating import no transformers).

Each spec names the ``model_type`` values (from a checkpoint's config.json) it claims, and the
implementation class, imported only when the adapter is built.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from masters.specs import AdapterSpec


class LlavaAdapterSpec(AdapterSpec):
    """LLaVA: a CLIP-style vision tower, an MLP projector and a Llama or Qwen2 language model."""

    implementation: ClassVar[str] = "masters.adapters.families:LlavaAdapter"
    model_types: ClassVar[tuple[str, ...]] = ("llava",)
    name: Literal["llava"] = "llava"


class Qwen2VLAdapterSpec(AdapterSpec):
    """Qwen2-VL: native-resolution vision tower with a patch merger, Qwen2 language model, M-RoPE."""

    implementation: ClassVar[str] = "masters.adapters.families:QwenVLAdapter"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl",)
    name: Literal["qwen2_vl"] = "qwen2_vl"


class Qwen2_5_VLAdapterSpec(AdapterSpec):
    """Qwen2.5-VL: windowed-attention vision tower with a patch merger, Qwen2.5 language model."""

    implementation: ClassVar[str] = "masters.adapters.families:Qwen2_5_VLAdapter"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
    name: Literal["qwen2_5_vl"] = "qwen2_5_vl"


class Qwen3VLAdapterSpec(AdapterSpec):
    """Qwen3-VL: vision tower with deepstack mergers, Qwen3 language model, interleaved M-RoPE."""

    implementation: ClassVar[str] = "masters.adapters.families:Qwen3VLAdapter"
    model_types: ClassVar[tuple[str, ...]] = ("qwen3_vl",)
    name: Literal["qwen3_vl"] = "qwen3_vl"


class InternVLAdapterSpec(AdapterSpec):
    """InternVL (transformers-native checkpoints, ``InternVLForConditionalGeneration``)."""

    implementation: ClassVar[str] = "masters.adapters.families:InternVLAdapter"
    model_types: ClassVar[tuple[str, ...]] = ("internvl",)
    name: Literal["internvl"] = "internvl"


class Idefics3AdapterSpec(AdapterSpec):
    """Idefics3 and SmolVLM: SigLIP vision tower, pixel-shuffle connector, Llama-style text model."""

    implementation: ClassVar[str] = "masters.adapters.families:Idefics3Adapter"
    model_types: ClassVar[tuple[str, ...]] = ("idefics3", "smolvlm")
    name: Literal["idefics3"] = "idefics3"


class Gemma3AdapterSpec(AdapterSpec):
    """Gemma 3 (multimodal): SigLIP vision tower, pooled projection, Gemma 3 language model."""

    implementation: ClassVar[str] = "masters.adapters.families:Gemma3Adapter"
    model_types: ClassVar[tuple[str, ...]] = ("gemma3",)
    name: Literal["gemma3"] = "gemma3"


BUILTIN_ADAPTER_SPECS: tuple[type[AdapterSpec], ...] = (
    LlavaAdapterSpec,
    Qwen2VLAdapterSpec,
    Qwen2_5_VLAdapterSpec,
    Qwen3VLAdapterSpec,
    InternVLAdapterSpec,
    Idefics3AdapterSpec,
    Gemma3AdapterSpec,
)
