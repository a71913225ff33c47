"""The ``llava_next`` adapter: :class:`masters.api.HFVLMAdapter` plus LLaVA-NeXT's family hooks.

Everything else (loading from config.json, chat templates, left-padded batches, generation,
teacher forcing, masking parts, saving) is the base class's. What LLaVA-NeXT changes:

* its image-token count follows the image size ("anyres"): a base tile, plus the tiles of the
  ``image_grid_pinpoints`` resolution that fits the image best, with the padding the resize added
  cut off again and one newline token per row of features (:meth:`expected_image_tokens`);
* its processor stacks each image's tiles (``pixel_values`` ``[images, tiles, C, H, W]``), padded
  to the most tiles of the call, and the model reads each image's real tile count off
  ``image_sizes``: samples with different tile counts join zero-padded (:meth:`merge_image_inputs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from masters.api import HFVLMAdapter, MastersError


def _side(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def unpadded_grid(size: tuple[int, int], rows: int, cols: int) -> tuple[int, int]:
    """Feature rows and columns left after cutting the letterbox padding of the resized image
    (as transformers' ``unpad_image``)."""
    height, width = size
    if width / height > cols / rows:
        new_rows = int(round(height * (cols / width), 7))
        rows -= 2 * ((rows - new_rows) // 2)
    else:
        new_cols = int(round(width * (rows / height), 7))
        cols -= 2 * ((cols - new_cols) // 2)
    return rows, cols


def image_tokens(size: tuple[int, int], *, tile: int, patch: int, pinpoints: list[list[int]],
                 keep_cls: bool = False) -> int:
    """Image tokens LLaVA-NeXT produces for one image of ``size`` = (height, width) pixels."""
    from transformers.image_processing_utils import select_best_resolution

    side = tile // patch  # feature rows (and columns) of one tile
    best_h, best_w = select_best_resolution(size, pinpoints)  # the resolution the tiles cover
    rows, cols = unpadded_grid(size, (best_h // tile) * side, (best_w // tile) * side)
    base = side * side + (1 if keep_cls else 0)
    return base + rows * cols + rows  # base tile, the unpadded tile grid, a newline after each row


class LlavaNextAdapter(HFVLMAdapter):
    """LLaVA-NeXT through the public family hooks of :class:`masters.api.HFVLMAdapter`."""

    processor_class = "transformers:LlavaNextProcessor"
    part_prefixes = {
        "vision": ("model.vision_tower.",),
        "projector": ("model.multi_modal_projector.",),
        "language": ("model.language_model.",),
    }

    def expected_image_tokens(self, encoded: Mapping[str, Any]) -> int:
        cfg = self.model.config
        strategy = cfg.vision_feature_select_strategy
        if strategy not in ("default", "full"):
            raise MastersError(f"unknown vision_feature_select_strategy {strategy!r}", where="config.json",
                               fix="use 'default' (drop the CLS feature) or 'full'")
        tile, patch = _side(cfg.vision_config.image_size), _side(cfg.vision_config.patch_size)
        pinpoints = [list(p) for p in cfg.image_grid_pinpoints]
        return sum(image_tokens((int(h), int(w)), tile=tile, patch=patch, pinpoints=pinpoints,
                                keep_cls=strategy == "full")
                   for h, w in encoded["image_sizes"].tolist())

    def merge_image_inputs(self, key: str, values: list[Any]) -> Any:
        if key == "pixel_values":  # [images, tiles, C, H, W]: tile counts differ between samples
            return self.pad_and_concat(values, dim=1)
        return super().merge_image_inputs(key, values)

    @classmethod
    def tiny_checkpoint(cls, out_dir: str | Path) -> Path:
        """A tiny randomly initialised LLaVA-NeXT checkpoint (what the conformance kit runs on)."""
        from masters_llava_next.tiny import build_tiny_llava_next

        out = Path(out_dir)
        if not (out / "config.json").exists():
            build_tiny_llava_next(out)
        return out
