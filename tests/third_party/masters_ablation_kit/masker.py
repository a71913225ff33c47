"""``ablation_columns``: per-column units, scored by |w| or by the signed value (masters.api.Masker).

A column of ``[out, in]`` (one input feature's weights, per expert for 3-D) is strided in flat
order, so ``units()`` returns a ``masters.api.UnitLayout`` rather than ``(U, S)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from masters.api import MastersError, UnitLayout


class AblationColumnMasker:
    scope = "unit"
    needs_calibration = False

    def __init__(self, spec, **context):
        self.spec = spec

    def units(self, name: str, shape: Sequence[int]) -> UnitLayout:
        if len(shape) < 2:
            raise MastersError(f"{name} {tuple(shape)} has no columns", where=f"masker {self.spec.name!r}",
                               fix=f"keep it out of scope, e.g. exclude: [{name!r}]")
        return UnitLayout.columns(shape)  # S = out, ties by row index

    def scores(self, name, values, *, shape, positions, calibration=None):
        # elementwise, so a subset's scores equal the whole tensor's; never permuted here
        values = values.float()
        return values.abs() if self.spec.score == "magnitude" else values.clone()

    def check_levels(self, levels) -> None:
        return None  # every ratio is realisable: floor(r * out) per column
