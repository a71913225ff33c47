"""Specs of the built-in maskers (torch-free)."""

from __future__ import annotations

from typing import ClassVar, Literal

from masters.specs import MaskerSpec


class MagnitudeMaskerSpec(MaskerSpec):
    """Zero the smallest-magnitude weights of each tensor (the paper's masker)."""

    implementation: ClassVar[str] = "masters.masking.maskers:MagnitudeMasker"
    name: Literal["magnitude"] = "magnitude"


BUILTIN_MASKER_SPECS: tuple[type[MaskerSpec], ...] = (MagnitudeMaskerSpec,)
