"""The ``idefics2`` adapter: :class:`masters.api.HFVLMAdapter` plus Idefics2's family hooks.

What Idefics2 changes from the base class:

* each image becomes ``perceiver_config.resampler_n_latents`` image tokens (the perceiver
  resampler pools the tower's patches into a fixed number of latents), whatever its size;
* its processor pads images to the largest of the call (``pixel_values`` ``[samples, images, C, H,
  W]``, ``pixel_attention_mask`` ``[samples, images, H, W]``) and the model drops all-zero images
  and masks padded pixels: samples with different image sizes join zero-padded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from masters.api import HFVLMAdapter


class Idefics2Adapter(HFVLMAdapter):
    processor_class = "transformers:Idefics2Processor"
    part_prefixes = {
        "vision": ("model.vision_model.",),
        "projector": ("model.connector.",),
        "language": ("model.text_model.",),
    }

    def expected_image_tokens(self, encoded: Mapping[str, Any]) -> int:
        pixel_values = encoded.get("pixel_values")
        if pixel_values is None:
            return 0
        per_image = pixel_values.reshape(-1, *pixel_values.shape[-3:])
        real = int((per_image != 0).flatten(1).any(dim=1).sum())  # the model skips all-zero images
        return real * int(self.model.config.perceiver_config.resampler_n_latents)

    def merge_image_inputs(self, key: str, values: list[Any]) -> Any:
        if key == "pixel_values":  # [1, images, C, H, W]: image counts and sizes differ
            return self.pad_and_concat(values, dim=4)
        if key == "pixel_attention_mask":  # [1, images, H, W]
            return self.pad_and_concat(values, dim=3)
        return super().merge_image_inputs(key, values)

    @classmethod
    def tiny_checkpoint(cls, out_dir: str | Path) -> Path:
        """A tiny randomly initialised Idefics2 checkpoint (what the conformance kit runs on)."""
        from masters_ablation_kit.tiny import build_tiny_idefics2

        out = Path(out_dir)
        if not (out / "config.json").exists():
            build_tiny_idefics2(out)
        return out
