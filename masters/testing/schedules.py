"""Conformance checks every restore schedule must pass (pure Python: no torch).

``check_schedule("my_schedule")`` runs them all; ``run_schedule_check(name, check)`` runs one, for
a pytest parametrisation over ``registered_schedules()`` x ``SCHEDULE_CHECKS``. Each check runs on
the schedule's conformance example (its defaults, see :mod:`masters.testing.examples`) and on the
variants of the shared ``r_max`` / ``step`` fields in ``VARIANTS`` that the spec accepts (a variant
its validators refuse is not tried).

Checks (``SCHEDULE_CHECKS``):

* ``protocol``: the :class:`masters.interfaces.RestoreSchedule` methods; ``levels()`` the same on
  every call; ``stage_at`` gives an ``int`` and ``ratio_at`` a ``Ratio`` for a ``Fraction`` and for
  a float progress, the two agreeing where the float is exact.
* ``levels``: finite (at most one per basis point), every level a :class:`~masters.ratios.Ratio`
  (a whole number of basis points), strictly decreasing from ``r_max``, the last ``0``; a schedule
  that never restores (a constant mask) has exactly one level, ``r_max``. With ``uses_step`` every
  level is a multiple of ``step``.
* ``stages``: ``stage_at`` is an index into ``levels()`` everywhere on ``[0, 1]``: ``0`` at progress
  0, the last index at progress 1 and beyond, and ``ratio_at(p) == levels()[stage_at(p)]``.
* ``monotone``: ``stage_at`` never decreases as progress grows (so the ratio never increases); a
  spec class with ``monotone = False`` declares it may go back up, and the check does not apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from masters.testing.adapters import ConformanceError
from masters.testing.examples import NotApplicable, require, resolve_spec, spec_label, run_checks

__all__ = ["SCHEDULE_CHECKS", "VARIANTS", "ScheduleConformanceError", "check_schedule", "registered_schedules",
           "run_schedule_check"]

SCHEDULE_CHECKS: tuple[str, ...] = ("protocol", "levels", "stages", "monotone")
# r_max / step variants tried besides the example (ScheduleSpec fields; refused ones are skipped).
VARIANTS: tuple[dict[str, Any], ...] = ({"r_max": "3000bp", "step": "500bp"}, {"r_max": "3000bp", "step": "1000bp"},
                                        {"r_max": "0bp"}, {"r_max": "100bp", "step": "1bp"})
# Progress points: a grid, the equal-stage boundaries k/M of a schedule with M levels and the
# points just before them, and past the end.
GRID = 400
EPSILON = Fraction(1, 10**6)
BEYOND: tuple[Fraction, ...] = (Fraction(1), Fraction(1001, 1000), Fraction(3, 2), Fraction(5))


class ScheduleConformanceError(ConformanceError):
    """A restore schedule broke one of the conformance rules."""


def registered_schedules() -> list[str]:
    from masters.plugins import get_components

    return get_components().registry("schedule").names()


class _Case:
    def __init__(self, schedule: Any):
        spec, context = resolve_spec("schedule", schedule)
        self.cases = [(spec, spec.build(**context))]
        for variant in VARIANTS:
            try:
                other = type(spec).model_validate({**spec.model_dump(), **variant})
            except ValueError:  # pydantic's ValidationError: this schedule does not take the variant
                continue
            if other != spec:
                self.cases.append((other, other.build(**context)))


def _label(spec: Any) -> str:
    return f"{spec_label(spec)} (r_max {spec.r_max}, step {spec.step})"


def _fail(check: str, spec: Any, message: str) -> None:
    raise ScheduleConformanceError(f"[{check}] {_label(spec)}: {message}")


def _progress_points(n_levels: int) -> list[Fraction]:
    points = {Fraction(i, GRID) for i in range(GRID + 1)}
    for k in range(1, n_levels):
        points |= {Fraction(k, n_levels), Fraction(k, n_levels) - EPSILON}
    return sorted(points) + list(BEYOND)


def check_protocol(case: _Case) -> None:
    from masters.interfaces import RestoreSchedule
    from masters.ratios import Ratio

    for spec, impl in case.cases:
        require(isinstance(impl, RestoreSchedule), ScheduleConformanceError, "protocol", _label(spec),
                f"{type(impl).__name__} lacks spec, levels(), stage_at() or ratio_at()")
        require(list(impl.levels()) == list(impl.levels()), ScheduleConformanceError, "protocol", _label(spec),
                "levels() differs between two calls")
        for p in (Fraction(0), Fraction(1, 4), Fraction(1, 2), Fraction(3, 4), Fraction(1)):
            stage, ratio = impl.stage_at(p), impl.ratio_at(p)
            require(type(stage) is int, ScheduleConformanceError, "protocol", _label(spec),
                    f"stage_at({p}) is {stage!r}, not an int")
            require(isinstance(ratio, Ratio), ScheduleConformanceError, "protocol", _label(spec),
                    f"ratio_at({p}) is {ratio!r}, not a masters.ratios.Ratio")
            require(impl.stage_at(float(p)) == stage and impl.ratio_at(float(p)) == ratio, ScheduleConformanceError,
                    "protocol", _label(spec), f"progress {float(p)} (a float) and {p} (a Fraction) give different "
                    "stages: convert progress exactly (fractions.Fraction(progress))")


def check_levels(case: _Case) -> None:
    from masters.ratios import BASIS_POINTS, Ratio

    for spec, impl in case.cases:
        levels = impl.levels()
        where = _label(spec)
        require(isinstance(levels, Sequence) and not isinstance(levels, str), ScheduleConformanceError, "levels",
                where, f"levels() is {type(levels).__name__}, not a finite sequence")
        levels = list(levels)
        require(0 < len(levels) <= BASIS_POINTS + 1, ScheduleConformanceError, "levels", where,
                f"{len(levels)} levels: expected between 1 and one per basis point")
        bad = [lvl for lvl in levels if not isinstance(lvl, Ratio)]
        require(not bad, ScheduleConformanceError, "levels", where,
                f"levels {bad[:3]!r} are not masters.ratios.Ratio (exact basis points): never floats")
        bps = [lvl.bp for lvl in levels]
        require(all(a > b for a, b in zip(bps, bps[1:])), ScheduleConformanceError, "levels", where,
                f"levels {[str(lvl) for lvl in levels]} are not strictly decreasing (largest first, no repeats)")
        require(bps[0] == spec.r_max.bp, ScheduleConformanceError, "levels", where,
                f"the first level is {levels[0]}, not r_max {spec.r_max}")
        if bps[-1] != 0:
            require(len(bps) == 1, ScheduleConformanceError, "levels", where,
                    f"levels {[str(lvl) for lvl in levels]} do not end at 0 (only a constant mask, one level "
                    "r_max, may)")
        if getattr(type(spec), "uses_step", True) and spec.step.bp:
            off = [str(lvl) for lvl in levels if lvl.bp % spec.step.bp]
            require(not off, ScheduleConformanceError, "levels", where,
                    f"levels {off} are not multiples of step {spec.step} (set uses_step = False on a spec whose "
                    "levels are its own)")


def check_stages(case: _Case) -> None:
    for spec, impl in case.cases:
        levels = list(impl.levels())
        where = _label(spec)
        for p in _progress_points(len(levels)):
            stage = impl.stage_at(p)
            require(isinstance(stage, int) and 0 <= stage < len(levels), ScheduleConformanceError, "stages", where,
                    f"stage_at({p}) is {stage!r}, outside 0..{len(levels) - 1}")
            require(impl.ratio_at(p) == levels[stage], ScheduleConformanceError, "stages", where,
                    f"ratio_at({p}) is {impl.ratio_at(p)} but levels()[stage_at({p})] is {levels[stage]}")
        require(impl.stage_at(Fraction(0)) == 0, ScheduleConformanceError, "stages", where,
                f"training starts at stage {impl.stage_at(Fraction(0))}, not 0 (r_max)")
        for p in BEYOND:
            require(impl.stage_at(p) == len(levels) - 1, ScheduleConformanceError, "stages", where,
                    f"stage_at({p}) is {impl.stage_at(p)}, not the last stage {len(levels) - 1} (progress 1 or more "
                    "is the end of training)")


def check_monotone(case: _Case) -> None:
    spec0 = case.cases[0][0]
    if not getattr(type(spec0), "monotone", True):
        raise NotApplicable(f"{spec_label(spec0)} declares monotone = False")
    for spec, impl in case.cases:
        previous, at = -1, None
        for p in _progress_points(len(impl.levels())):
            stage = impl.stage_at(p)
            require(stage >= previous, ScheduleConformanceError, "monotone", _label(spec),
                    f"stage_at goes back from {previous} at progress {at} to {stage} at {p}: the mask would grow "
                    "again (declare monotone = False on the spec class if that is the design)")
            previous, at = stage, p


_CHECKS = {"protocol": check_protocol, "levels": check_levels, "stages": check_stages, "monotone": check_monotone}
assert tuple(_CHECKS) == SCHEDULE_CHECKS


def run_schedule_check(schedule: Any, check: str) -> None:
    """Run one check on a schedule (a registered name, a mapping with ``name``, a spec class or a
    spec); raises :class:`ScheduleConformanceError`, or :class:`NotApplicable`."""
    if check not in _CHECKS:
        raise ValueError(f"unknown schedule check {check!r}; checks: {', '.join(SCHEDULE_CHECKS)}")
    _CHECKS[check](_Case(schedule))


def check_schedule(schedule: Any, *, checks: Iterable[str] = SCHEDULE_CHECKS) -> dict[str, str]:
    """Run the checks on a schedule; ``{check: "ok" | "n/a: why"}``; raises on the first failure."""
    case = _Case(schedule)
    return run_checks("schedule", _CHECKS, case, checks)
