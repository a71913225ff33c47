"""Data: the sample type, the synthetic shapes task, and loaders for real VQA data.

``load_splits(data_spec) -> {"train": [...], "validation": [...], "test": [...]}`` of
:class:`VQASample` for any data spec (``ShapesData``, ``LlavaJsonData``, ``HFDatasetData``).
"""

from __future__ import annotations

from masters.data.types import VQASample, load_image

__all__ = ["VQASample", "load_image", "load_splits"]


def load_splits(data_spec):  # noqa: D401 - thin re-export, keeps this module import-light
    """Every split of a data spec as lists of :class:`VQASample` (see ``masters.data.loaders``)."""
    from masters.data.loaders import load_splits as _load

    return _load(data_spec)
