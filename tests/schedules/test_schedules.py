"""Restore schedules: exact levels, endpoints, equal stages, no float drift; the teacher chain."""

from __future__ import annotations

from fractions import Fraction

import pytest

from masters.errors import MastersError, SpecError
from masters.plugins import get_components
from masters.ratios import Ratio
from masters.schedules.chain import TeacherChain
from masters.config import validate_component

SCHEDULES = get_components().registry("schedule").names()


def schedule(name="staircase", **fields):
    return validate_component("schedule", {"name": name, **fields}).build()


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_starts_at_its_first_level_and_ends_at_its_last(name):
    s = schedule(name)
    levels = s.levels()
    assert levels and list(levels) == sorted(levels, reverse=True) and len(set(levels)) == len(levels)
    assert s.ratio_at(0) == levels[0]
    assert s.ratio_at_step(999, 1000) == levels[-1]
    assert s.ratio_at(1) == levels[-1]
    visited = [s.ratio_at_step(i, 1000) for i in range(1000)]
    assert all(v in levels for v in visited)
    assert all(a >= b for a, b in zip(visited, visited[1:]))  # restoring never re-masks


@pytest.mark.parametrize("name", [n for n in SCHEDULES if n != "constant"])
def test_levels_end_at_zero(name):
    assert schedule(name).levels()[-1] == Ratio(0)


def test_constant_is_one_fixed_level():
    s = schedule("constant", r_max=0.3)
    assert s.levels() == (Ratio(3000),)
    assert {s.ratio_at_step(i, 10) for i in range(10)} == {Ratio(3000)}


def test_r_max_0_3_step_0_05_gives_exactly_seven_levels_without_float_drift():
    s = schedule(r_max=0.3, step=0.05)
    assert [str(r) for r in s.levels()] == ["0.3", "0.25", "0.2", "0.15", "0.1", "0.05", "0"]
    assert s.levels()[3] == Ratio.parse(0.15)  # 0.3 - 3 * 0.05 is 0.15 exactly here


@pytest.mark.parametrize("total", [5, 7, 100, 1001])
def test_staircase_has_equal_stages_first_r_max_last_zero(total):
    s = schedule()  # paper defaults: 0.2 .. 0 in 5 stages
    steps = [s.ratio_at_step(i, total) for i in range(total)]
    assert steps[0] == Ratio(2000) and steps[-1] == Ratio(0)
    lengths = [steps.count(level) for level in s.levels()]
    assert max(lengths) - min(lengths) <= 1 and sum(lengths) == total
    # the corrected formula k = min(floor(i * M / I), M - 1): the paper's version would reach -0.05
    assert all(s.stage_at(Fraction(i, total)) == min(i * 5 // total, 4) for i in range(total))


def test_continuous_shapes_are_quantised_to_the_step():
    for name in ("linear", "cosine", "exponential"):
        s = schedule(name, r_max=0.3, step=0.1)
        assert {s.ratio_at_step(i, 97) for i in range(97)} <= set(s.levels())
    linear = schedule("linear")
    assert linear.ratio_at(0.5) == Ratio(1000)  # r_max * (1 - p), exactly on the grid


def test_explicit_list_takes_r_max_and_step_from_its_ratios():
    s = schedule("explicit", ratios=[0.33, 0.11, 0])
    assert s.spec.r_max == Ratio(3300) and s.spec.step == Ratio(1100)
    assert [s.ratio_at_step(i, 6) for i in range(6)] == [Ratio(3300)] * 2 + [Ratio(1100)] * 2 + [Ratio(0)] * 2


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "staircase", "r_max": 1.0}, "below 1"),
        ({"name": "staircase", "r_max": 1.5}, "outside"),
        ({"name": "staircase", "r_max": -0.1}, "outside"),
        ({"name": "staircase", "r_max": 0.3, "step": 0.07}, "does not divide"),
        ({"name": "explicit", "ratios": [0.1, 0.2, 0]}, "strictly decreasing"),
        ({"name": "explicit", "ratios": [0.2, 0.1]}, "last ratio must be 0"),
        ({"name": "exponential", "rate": 0}, "greater than 0"),
    ],
)
def test_bad_schedule_specs_are_clear_errors(fields, message):
    with pytest.raises(SpecError, match=message) as info:
        validate_component("schedule", fields)
    assert info.value.problems and info.value.fix


def test_unknown_schedule_suggests_the_name():
    with pytest.raises(MastersError, match="Did you mean: staircase"):
        validate_component("schedule", {"name": "staircas"})


def test_chain_splits_steps_by_share_smallest_first():
    chain = TeacherChain([schedule(r_max=0.3, step=0.1), schedule()], shares=[1, 3], names=["small", "big"])
    assert chain.bounds(100) == [(0, 25), (25, 100)]
    first, last = chain.at(0, 100), chain.at(99, 100)
    assert (first.teacher, first.level) == (0, Ratio(3000))
    assert (last.teacher, last.level) == (1, Ratio(0))
    assert chain.at(25, 100).level == Ratio(2000)  # the next teacher starts at its own r_max
    segments = chain.segments(100)
    assert [s.teacher for s in segments] == [0] * 4 + [1] * 5
    assert sum(s.steps for s in segments) == 100
    assert [s.steps for s in segments if s.teacher == 1] == [15] * 5


def test_chain_with_float_shares_has_no_drift():
    chain = TeacherChain([schedule(), schedule(), schedule()], shares=[0.1, 0.2, 0.7])
    assert chain.bounds(10) == [(0, 1), (1, 3), (3, 10)]


def test_chain_rejects_bad_input():
    with pytest.raises(MastersError):
        TeacherChain([])
    with pytest.raises(MastersError):
        TeacherChain([schedule()], shares=[0])
    with pytest.raises(MastersError):
        TeacherChain([schedule()]).at(10, 10)


def test_chain_from_run_spec_uses_each_teachers_own_schedule(tmp_path):
    from masters.config import validate_run_spec

    spec = validate_run_spec({
        "teachers": [{"path": "t-small", "schedule": {"name": "staircase", "r_max": 0.4, "step": 0.1}, "share": 1},
                     {"path": "t-big", "share": 2}],
        "student": "s",
    })
    chain = TeacherChain.from_run_spec(spec)
    assert chain.levels(0)[0] == Ratio(4000) and chain.levels(1)[0] == Ratio(2000)
    assert chain.names == ["t-small", "t-big"]


def test_a_schedule_without_a_step_validates_whatever_its_r_max():
    """The step must divide r_max only for schedules whose levels are multiples of it."""
    from typing import ClassVar, Literal

    from masters.config import validate_component
    from masters.specs import ScheduleSpec

    class TwoLevels(ScheduleSpec):
        """r_max, then 0 (a plugin's schedule with levels of its own)."""

        uses_step: ClassVar[bool] = False
        name: Literal["two_levels"] = "two_levels"

    assert float(TwoLevels(r_max=0.23).r_max) == 0.23
    assert float(validate_component("schedule", {"name": "constant", "r_max": 0.23}).r_max) == 0.23
    with pytest.raises(Exception, match="does not divide"):
        validate_component("schedule", {"name": "staircase", "r_max": 0.23})
