"""The built-in restore schedules. Integer-exact: stages come from ``Fraction`` progress and levels
are multiples of ``step`` in basis points, so ``r_max`` 0.3 with step 0.05 gives exactly 7 levels.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from masters.errors import MastersError
from masters.ratios import Ratio

Progress = "float | Fraction"


def as_progress(progress: Any) -> Fraction:
    """``Fraction`` of a progress in [0, 1]; floats convert exactly, 1 or more is the last step."""
    try:
        p = Fraction(progress)
    except (TypeError, ValueError):
        raise MastersError(f"progress {progress!r} is not a number", where="schedule.ratio_at",
                           fix="pass optimizer step / total optimizer steps") from None
    if p < 0:
        raise MastersError(f"progress {progress} is negative", where="schedule.ratio_at",
                           fix="pass optimizer step / total optimizer steps, in [0, 1)")
    return p


class Schedule:
    """Base of the built-ins: ``levels()``, ``stage_at(progress)`` and ``ratio_at(progress)``."""

    def __init__(self, spec: Any, **context: Any):
        self.spec = spec
        self.r_max: Ratio = spec.r_max
        self.step: Ratio = spec.step
        # Number of steps of size `step` in r_max; r_max 0 gives the single level 0.
        self.n_steps = self.r_max.bp // self.step.bp if self.r_max.bp else 0

    def levels(self) -> tuple[Ratio, ...]:
        """Ordered finite levels: largest first, last ``Ratio(0)`` (``constant``: r_max only)."""
        return tuple(Ratio(self.r_max.bp - k * self.step.bp) for k in range(self.n_steps + 1))

    def stage_at(self, progress: Any) -> int:
        """Index into :meth:`levels` in force at ``progress``."""
        raise NotImplementedError

    def ratio_at(self, progress: Any) -> Ratio:
        """The level in force at ``progress`` = optimizer step / total optimizer steps."""
        return self.levels()[self.stage_at(progress)]

    def ratio_at_step(self, step: int, total_steps: int) -> Ratio:
        """The level at 0-based optimizer ``step`` of ``total_steps``, without any float."""
        if total_steps <= 0:
            raise MastersError(f"total_steps is {total_steps}", where="schedule", fix="train at least one step")
        return self.ratio_at(Fraction(step, total_steps))


class Staircase(Schedule):
    """M equal stages; stage ``min(floor(p * M), M - 1)``."""

    def stage_at(self, progress: Any) -> int:
        m = self.n_steps + 1
        return min(math.floor(as_progress(progress) * m), m - 1)


class _Rounded(Schedule):
    """A continuous shape ``f`` (1 at progress 0, 0 at 1) scaled by r_max and rounded to step."""

    def shape(self, p: float) -> float:
        raise NotImplementedError

    def stage_at(self, progress: Any) -> int:
        p = min(as_progress(progress), Fraction(1))
        remaining = math.floor(self.shape(float(p)) * self.n_steps + 0.5)  # steps still masked
        return self.n_steps - max(0, min(self.n_steps, remaining))


class Linear(_Rounded):
    def shape(self, p: float) -> float:
        return 1.0 - p


class Cosine(_Rounded):
    def shape(self, p: float) -> float:
        return (1.0 + math.cos(math.pi * p)) / 2.0


class Exponential(_Rounded):
    def shape(self, p: float) -> float:
        rate = self.spec.rate
        return (math.exp(-rate * p) - math.exp(-rate)) / (1.0 - math.exp(-rate))


class Constant(Schedule):
    """A fixed mask: the single level r_max for all of training (an ablation, never restored)."""

    def levels(self) -> tuple[Ratio, ...]:
        return (self.r_max,)

    def stage_at(self, progress: Any) -> int:
        as_progress(progress)
        return 0


class Explicit(Schedule):
    """The listed ratios in equal stages."""

    def levels(self) -> tuple[Ratio, ...]:
        return tuple(self.spec.ratios)

    def stage_at(self, progress: Any) -> int:
        m = len(self.spec.ratios)
        return min(math.floor(as_progress(progress) * m), m - 1)
