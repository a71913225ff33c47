"""The teacher chain: several teachers of one family, smallest first, each with its own schedule
and share of training. Maps a global optimizer step to (teacher, stage, level), exactly.

With one teacher this is just its schedule. The trainer asks :meth:`TeacherChain.at` at every
optimizer step and calls ``MaskedTeacher.set_level`` (or switches teacher) when the answer changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from masters.errors import MastersError
from masters.ratios import Ratio

if TYPE_CHECKING:
    from masters.specs import RunSpec


@dataclass(frozen=True)
class ChainPosition:
    """Where training is at one optimizer step."""

    teacher: int  # index into the chain (smallest teacher first)
    stage: int  # index into that teacher's schedule levels
    level: Ratio
    teacher_start: int  # first global step of this teacher's share
    teacher_end: int  # one past its last step


@dataclass(frozen=True)
class Segment:
    """A run of consecutive steps with one teacher at one level: ``[start, end)``."""

    teacher: int
    stage: int
    level: Ratio
    start: int
    end: int

    @property
    def steps(self) -> int:
        return self.end - self.start


class TeacherChain:
    """Teachers in order with their schedules and relative shares of the optimizer steps."""

    def __init__(self, schedules: Sequence[Any], shares: Sequence[float] | None = None,
                 names: Sequence[str] | None = None):
        if not schedules:
            raise MastersError("the teacher chain is empty", where="teachers", fix="list at least one teacher")
        shares = list(shares) if shares is not None else [1.0] * len(schedules)
        if len(shares) != len(schedules):
            raise MastersError(f"{len(shares)} shares for {len(schedules)} teachers", where="teachers[*].share",
                               fix="give one share per teacher")
        if any(not (s > 0) for s in shares):
            raise MastersError(f"shares must be positive, got {shares}", where="teachers[*].share", fix="use shares > 0")
        self.schedules = list(schedules)
        # Decimal-exact shares (0.3 is 3/10), so boundaries never depend on float rounding.
        self.shares = [Fraction(repr(float(s))) for s in shares]
        self.names = list(names) if names is not None else [f"teacher {i}" for i in range(len(schedules))]

    @classmethod
    def from_run_spec(cls, spec: RunSpec) -> TeacherChain:
        """One schedule per teacher: its own ``schedule`` or the run's ``schedule``."""
        schedules = [(t.schedule or spec.schedule).build() for t in spec.teachers]
        return cls(schedules, [t.share for t in spec.teachers], [t.path for t in spec.teachers])

    def levels(self, teacher: int) -> tuple[Ratio, ...]:
        """The planned levels of one teacher (rank its MaskedTeacher with exactly these)."""
        return tuple(self.schedules[teacher].levels())

    def bounds(self, total_steps: int) -> list[tuple[int, int]]:
        """``[start, end)`` of each teacher's share of ``total_steps`` (may be empty for tiny runs)."""
        if total_steps <= 0:
            raise MastersError(f"total_steps is {total_steps}", where="teacher chain", fix="train at least one step")
        whole = sum(self.shares)
        cum, out, start = Fraction(0), [], 0
        for share in self.shares:
            cum += share
            end = math.floor(total_steps * cum / whole)
            out.append((start, end))
            start = end
        return out

    def at(self, step: int, total_steps: int) -> ChainPosition:
        """Teacher, stage and level at 0-based global optimizer ``step`` of ``total_steps``."""
        if not 0 <= step < total_steps:
            raise MastersError(f"step {step} is outside [0, {total_steps})", where="teacher chain",
                               fix="pass a 0-based optimizer step below the total")
        for index, (start, end) in enumerate(self.bounds(total_steps)):
            if start <= step < end:
                schedule = self.schedules[index]
                stage = schedule.stage_at(Fraction(step - start, end - start))
                return ChainPosition(index, stage, schedule.levels()[stage], start, end)
        raise AssertionError("bounds cover every step")  # pragma: no cover

    def segments(self, total_steps: int) -> list[Segment]:
        """The whole timeline as runs of equal (teacher, level), in step order."""
        out: list[Segment] = []
        for index, (start, end) in enumerate(self.bounds(total_steps)):
            schedule = self.schedules[index]
            levels = schedule.levels()
            run_start, run_stage = start, None
            for step in range(start, end):
                stage = schedule.stage_at(Fraction(step - start, end - start))
                if stage != run_stage:
                    if run_stage is not None:
                        out.append(Segment(index, run_stage, levels[run_stage], run_start, step))
                    run_start, run_stage = step, stage
            if run_stage is not None:
                out.append(Segment(index, run_stage, levels[run_stage], run_start, end))
        return out


def planned_total_steps(spec: RunSpec) -> int | None:
    """Optimizer steps of a run when the config alone says so (the built-in shapes data), else None."""
    data = spec.task
    n_train = getattr(data, "n_train", None)
    if n_train is None:
        return None
    training = spec.training
    per_step = training.questions_per_step * training.gradient_accumulation_steps
    return math.ceil(n_train * training.passes / per_step)
