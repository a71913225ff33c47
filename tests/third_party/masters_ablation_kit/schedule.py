"""``two_level``: r_max until ``switch_at`` of training, then 0 (masters.api.RestoreSchedule)."""

from __future__ import annotations

from fractions import Fraction

from masters.api import Ratio


class TwoLevelSchedule:
    def __init__(self, spec, **context):
        self.spec = spec
        zero = Ratio.parse(0)
        r_max = Ratio.parse(spec.r_max)
        self._levels = (r_max, zero) if r_max != zero else (zero,)
        self._switch = Fraction(repr(float(spec.switch_at)))

    def levels(self):
        return self._levels

    def stage_at(self, progress) -> int:
        if len(self._levels) == 1:
            return 0
        return 0 if Fraction(progress) < self._switch else 1

    def ratio_at(self, progress):
        return self._levels[self.stage_at(progress)]
