"""The built-in VLM families: what differs between them, and nothing else.

Each class names its processor, the parameter-name prefixes of its VLM parts, and how many image
tokens its vision tower produces for the processed pixels (checked against the prompt before any
forward pass, so a processor/model mismatch fails with a message instead of NaN or a shape error).
They use only the public family hooks of :class:`HFVLMAdapter` (no ``_private`` override), the
same ones a plugin adapter uses (``plugins/masters-llava-next`` is one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from masters.adapters.base import HFVLMAdapter


def _side(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


class LlavaAdapter(HFVLMAdapter):
    """LLaVA 1.5 style: CLIP vision tower, MLP projector, Llama or Qwen2 language model."""

    processor_class = "transformers:LlavaProcessor"
    part_prefixes = {
        "vision": ("model.vision_tower.",),
        "projector": ("model.multi_modal_projector.",),
        "language": ("model.language_model.",),
    }

    def expected_image_tokens(self, encoded: Mapping[str, torch.Tensor]) -> int:
        cfg = self.model.config
        pixels = encoded["pixel_values"]
        patch = _side(cfg.vision_config.patch_size)
        per_image = (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch)
        per_image += 1 if cfg.vision_feature_select_strategy == "full" else 0  # the CLS token
        return int(pixels.shape[0]) * per_image


class QwenVLAdapter(HFVLMAdapter):
    """Qwen2-VL, Qwen2.5-VL and Qwen3-VL: native-resolution vision tower whose merger (and
    Qwen3-VL's deepstack mergers) is the projector; multimodal RoPE computed by the model."""

    processor_class = "masters.adapters.processors:Qwen2VLImageProcessor"
    part_prefixes = {
        "vision": ("model.visual.",),
        "projector": ("model.visual.merger.", "model.visual.deepstack_merger_list."),
        "language": ("model.language_model.",),
    }
    position_ids_from_mask = False  # 3-D positions come from get_rope_index(attention_mask, grids)
    image_kwargs_from_spec = True  # the image processor takes min_pixels / max_pixels itself

    def processor_kwargs(self) -> dict[str, Any]:
        lo, hi = self.spec.min_pixels, self.spec.max_pixels
        if lo is None and hi is None:
            return {}
        size = dict(getattr(self.processor.image_processor, "size", None) or {})
        if lo is not None:
            size["shortest_edge"] = lo  # Qwen-VL reads these two as min / max pixel counts
        if hi is not None:
            size["longest_edge"] = hi
        return {"size": size}

    def expected_image_tokens(self, encoded: Mapping[str, torch.Tensor]) -> int:
        merge = int(self.model.config.vision_config.spatial_merge_size)
        return int(encoded["image_grid_thw"].prod(-1).sum()) // (merge * merge)


class Qwen2_5_VLAdapter(QwenVLAdapter):
    processor_class = "masters.adapters.processors:Qwen2_5_VLImageProcessor"


class Qwen3VLAdapter(QwenVLAdapter):
    processor_class = "masters.adapters.processors:Qwen3VLImageProcessor"


class InternVLAdapter(HFVLMAdapter):
    """InternVL (transformers-native ``InternVLForConditionalGeneration``); tiles count separately."""

    processor_class = "masters.adapters.processors:InternVLImageProcessor"
    part_prefixes = LlavaAdapter.part_prefixes

    def expected_image_tokens(self, encoded: Mapping[str, torch.Tensor]) -> int:
        cfg = self.model.config
        side = _side(cfg.vision_config.image_size) // _side(cfg.vision_config.patch_size)
        per_tile = int(side * side * cfg.downsample_ratio**2)
        return int(encoded["pixel_values"].shape[0]) * per_tile


class Idefics3Adapter(HFVLMAdapter):
    """Idefics3 and SmolVLM: SigLIP tower, pixel-shuffle connector, Llama/SmolLM text model."""

    part_prefixes = {
        "vision": ("model.vision_model.",),
        "projector": ("model.connector.",),
        "language": ("model.text_model.",),
    }

    processor_class = "transformers:Idefics3Processor"

    def processor_class_for(self, config: Mapping[str, Any]) -> str:
        if config.get("model_type") == "smolvlm":
            return "masters.adapters.processors:SmolVLMImageProcessor"
        return self.processor_class

    def format_images(self, images):
        return [images]  # these processors want images nested per sample

    def expected_image_tokens(self, encoded: Mapping[str, torch.Tensor]) -> int:
        cfg = self.model.config
        pixels = encoded["pixel_values"]  # [1, n_images, C, H, W]; all-zero images are padding
        real = int((pixels.flatten(2).abs().sum(-1) > 0).sum())
        patch = _side(cfg.vision_config.patch_size)
        per_image = (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch) // (cfg.scale_factor**2)
        return real * per_image

    def merge_image_inputs(self, key: str, values: list[torch.Tensor]) -> torch.Tensor:
        # Samples may hold different numbers of images: pad dim 1 with all-zero images, which the
        # model recognises as padding and drops.
        return self.pad_and_concat(values, dim=1)


class Gemma3Adapter(HFVLMAdapter):
    """Gemma 3: SigLIP tower, pooled projection (a raw 2-D parameter), Gemma 3 text model."""

    processor_class = "transformers:Gemma3Processor"
    part_prefixes = LlavaAdapter.part_prefixes
    extra_linear_weights = {"model.multi_modal_projector.mm_input_projection_weight": "projector"}

    def format_images(self, images):
        return [images]

    def expected_image_tokens(self, encoded: Mapping[str, torch.Tensor]) -> int:
        return int(encoded["pixel_values"].shape[0]) * int(self.model.config.mm_tokens_per_image)
