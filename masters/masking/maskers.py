"""The built-in maskers. Each one says how a tensor splits into units and scores its elements;
the runtime (:mod:`masters.masking.runtime`) does the exact selection, nesting and restoring.

Units are :class:`masters.masking.layout.UnitLayout` s (per tensor, per expert, rows, columns, N:M
groups); a plugin may also return a plain ``(U, S)`` for units that are flat ranges.

Scores are float32 (exact for bf16/fp16 weights, so casting never creates or breaks a tie) and
must be reproducible bit for bit from the same inputs: the stored mode re-scores the stored
values at every level switch instead of keeping an int64 order (8 bytes per masked weight).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch

from masters.errors import MastersError
from masters.masking.layout import UnitLayout
from masters.ratios import BASIS_POINTS, Ratio

Positions = Callable[[], "torch.Tensor | None"]


class BaseMasker:
    """Shared behaviour; a plugin masker may subclass it or implement the protocol directly."""

    scope: ClassVar[Literal["unit", "global"]] = "unit"
    needs_calibration: ClassVar[bool] = False

    def __init__(self, spec: Any, **context: Any):
        self.spec = spec

    def units(self, name: str, shape: torch.Size) -> UnitLayout | tuple[int, int]:
        """Per tensor, or per expert slice for 3-D mixture-of-experts weights ``[E, out, in]``."""
        if len(shape) == 3:
            return UnitLayout.experts(shape)
        return UnitLayout.tensor(shape)

    def scores(
        self, name: str, values: torch.Tensor, *, shape: torch.Size, positions: Positions,
        calibration: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return values.abs().float()

    def check_levels(self, levels: Sequence[Ratio]) -> None:
        """Raise a MastersError for levels this masker cannot realise."""


class MagnitudeMasker(BaseMasker):
    """The paper's masker: smallest ``|w|`` per tensor (per expert slice for 3-D MoE weights)."""


class GlobalMagnitudeMasker(BaseMasker):
    """Smallest ``|w|`` over the whole scope at once (one threshold; ties by tensor, then index)."""

    scope = "global"


class RowMagnitudeMasker(BaseMasker):
    """Smallest ``|w|`` per output row (the last dimension is the input dimension)."""

    def units(self, name: str, shape: torch.Size) -> UnitLayout:
        return UnitLayout.rows(shape)


class ColumnMagnitudeMasker(BaseMasker):
    """Smallest ``|w|`` per input column: each column of ``[out, in]`` masks ``floor(r * out)``
    entries (per expert for 3-D ``[E, out, in]``); ties by row index."""

    def units(self, name: str, shape: torch.Size) -> UnitLayout:
        return UnitLayout.columns(shape)


class NMMasker(BaseMasker):
    """In every group of ``m`` consecutive input weights, the ``ratio * m`` smallest ``|w|``."""

    def units(self, name: str, shape: torch.Size) -> UnitLayout:
        m = self.spec.m
        if shape[-1] % m:
            raise MastersError(
                f"input dimension {shape[-1]} of {name} {tuple(shape)} is not a multiple of m={m}",
                where="masker.nm.m",
                fix=f"choose an m that divides {shape[-1]}, or exclude {name!r} with masker.exclude",
            )
        return UnitLayout.groups(shape, m, dim=-1)

    def check_levels(self, levels: Sequence[Ratio]) -> None:
        m = self.spec.m
        bad = [str(r) for r in levels if (r.bp * m) % BASIS_POINTS]
        if bad:
            raise MastersError(
                f"N:M levels must be multiples of 1/{m}; got {', '.join(bad)}",
                where="schedule (with masker nm)",
                fix=f"use r_max and step that are multiples of 1/{m}, e.g. r_max: {Ratio((BASIS_POINTS // m) * (m // 2))}, "
                f"step: {Ratio(BASIS_POINTS // m)}" if BASIS_POINTS % m == 0 else f"use an m that divides 10000",
            )


class RandomMasker(BaseMasker):
    """A seeded random order per tensor: same seed, same masks, on any machine."""

    def scores(
        self, name: str, values: torch.Tensor, *, shape: torch.Size, positions: Positions,
        calibration: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Regenerated, never stored: a CPU generator keyed by (seed, tensor name) is reproducible.
        generator = torch.Generator().manual_seed((self.spec.seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
        noise = torch.rand(shape.numel(), generator=generator).to(values.device)
        where = positions()
        return noise.view(values.shape) if where is None else noise[where].view(values.shape)


class WandaMasker(BaseMasker):
    """``|W| * ||X||`` per output row, ``||X||`` the L2 norm of each input feature on calibration data."""

    needs_calibration = True

    def units(self, name: str, shape: torch.Size) -> UnitLayout:
        return UnitLayout.rows(shape)

    def scores(
        self, name: str, values: torch.Tensor, *, shape: torch.Size, positions: Positions,
        calibration: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert calibration is not None  # the runtime checks needs_calibration first
        norms = calibration.float().to(values.device)
        where = positions()
        if where is None:  # the whole tensor in flat order, viewed [rows, in]: broadcast each column's norm
            rows = values.view(-1, shape[-1])
            if norms.dim() == 2:  # MoE: one norm vector per expert
                scored = rows.abs().float().view(norms.shape[0], -1, shape[-1]) * norms.unsqueeze(1)
            else:
                scored = rows.abs().float() * norms
            return scored.view(values.shape)
        col = where % shape[-1]
        if norms.dim() == 2:
            per_expert = shape.numel() // shape[0]
            factor = norms[where // per_expert, col]
        else:
            factor = norms[col]
        return values.abs().float() * factor.view(values.shape)
