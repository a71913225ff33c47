"""Specs of the built-in restore schedules (torch-free)."""

from __future__ import annotations

from typing import ClassVar, Literal

from masters.specs import ScheduleSpec


class StaircaseScheduleSpec(ScheduleSpec):
    """The paper's staircase: M = r_max/step + 1 equal stages from r_max down to 0."""

    implementation: ClassVar[str] = "masters.schedules.shapes:Staircase"
    name: Literal["staircase"] = "staircase"


BUILTIN_SCHEDULE_SPECS: tuple[type[ScheduleSpec], ...] = (StaircaseScheduleSpec,)
