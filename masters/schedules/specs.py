"""Specs of the built-in restore schedules (torch-free).

All schedules share ``r_max`` and ``step`` (exact ratios, :mod:`masters.ratios`); the finite set of
levels is ``r_max, r_max - step, ..., 0`` unless a schedule says otherwise (``constant``,
``explicit``). Progress is optimizer step / total optimizer steps (design decision 3).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from masters.ratios import Ratio
from masters.specs import ScheduleSpec


class StaircaseScheduleSpec(ScheduleSpec):
    """The paper's staircase: M = r_max/step + 1 equal stages from r_max down to 0.

    Stage ``k = min(floor(i * M / I), M - 1)`` for 0-based step ``i`` of ``I`` (method.md: the
    paper's printed formula overshoots to ``-step`` at the last iteration).
    """

    implementation: ClassVar[str] = "masters.schedules.shapes:Staircase"
    name: Literal["staircase"] = "staircase"


class LinearScheduleSpec(ScheduleSpec):
    """``r_max * (1 - progress)`` rounded to the nearest multiple of step (half stages at both ends)."""

    implementation: ClassVar[str] = "masters.schedules.shapes:Linear"
    name: Literal["linear"] = "linear"


class CosineScheduleSpec(ScheduleSpec):
    """``r_max * (1 + cos(pi * progress)) / 2`` rounded to the nearest multiple of step."""

    implementation: ClassVar[str] = "masters.schedules.shapes:Cosine"
    name: Literal["cosine"] = "cosine"


class ExponentialScheduleSpec(ScheduleSpec):
    """Exponential decay from r_max to 0, ``(e^(-rate p) - e^(-rate)) / (1 - e^(-rate))``, rounded to step.

    Restores quickly early on; a larger ``rate`` spends longer near 0.
    """

    implementation: ClassVar[str] = "masters.schedules.shapes:Exponential"
    name: Literal["exponential"] = "exponential"
    rate: float = Field(5.0, gt=0, le=50, description="Decay rate; larger restores faster.")


class ConstantScheduleSpec(ScheduleSpec):
    """A fixed mask at r_max for the whole run (ablation): its only level is r_max, never restored.

    ``r_max: 0`` is the unmasked teacher throughout (naive distillation).
    """

    implementation: ClassVar[str] = "masters.schedules.shapes:Constant"
    uses_step: ClassVar[bool] = False  # one level, r_max itself: step plays no part
    name: Literal["constant"] = "constant"


class ExplicitScheduleSpec(ScheduleSpec):
    """An explicit list of levels, strictly decreasing and ending at 0, in equal stages.

    ``r_max`` defaults to the first ratio and ``step`` to the largest step dividing every ratio.
    """

    implementation: ClassVar[str] = "masters.schedules.shapes:Explicit"
    name: Literal["explicit"] = "explicit"
    ratios: tuple[Ratio, ...] = Field(
        # plain numbers (validated into Ratios) so the JSON Schema can show the default
        (0.2, 0.1, 0.0), min_length=1, description="Levels in order, e.g. [0.3, 0.1, 0]."
    )

    @model_validator(mode="before")
    @classmethod
    def _derive_r_max_and_step(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "ratios" not in data:
            return data
        try:
            ratios = [Ratio.parse(r) for r in data["ratios"]]
        except (TypeError, ValueError):
            return data  # the field validator reports it with its location
        if not ratios:
            return data
        data = dict(data)
        data.setdefault("r_max", ratios[0])
        nonzero = [r.bp for r in ratios if r.bp]
        data.setdefault("step", Ratio(math.gcd(*nonzero)) if nonzero else Ratio(500))
        return data

    @model_validator(mode="after")
    def _ordered(self) -> ExplicitScheduleSpec:
        bps = [r.bp for r in self.ratios]
        if any(a <= b for a, b in zip(bps, bps[1:])):
            raise ValueError(f"ratios must be strictly decreasing (restoring), got {[str(r) for r in self.ratios]}")
        if bps[-1] != 0:
            raise ValueError("the last ratio must be 0: training ends on the unmasked teacher")
        if self.ratios[0] != self.r_max:
            raise ValueError(f"r_max {self.r_max} differs from the first ratio {self.ratios[0]}; drop r_max")
        if any(b % self.step.bp for b in bps if b):
            raise ValueError(f"step {self.step} does not divide every ratio")
        return self


BUILTIN_SCHEDULE_SPECS: tuple[type[ScheduleSpec], ...] = (
    StaircaseScheduleSpec,
    LinearScheduleSpec,
    CosineScheduleSpec,
    ExponentialScheduleSpec,
    ConstantScheduleSpec,
    ExplicitScheduleSpec,
)
