"""Ratios are exact (design decision 1): no float drift, basis-point resolution, clear errors."""

from __future__ import annotations

import pytest

from masters.ratios import Ratio


def test_arithmetic_is_exact_where_floats_drift():
    assert 0.2 - 0.05 != 0.15
    assert Ratio.parse(0.2) - Ratio.parse(0.05) == Ratio.parse(0.15)
    assert Ratio.parse(0.3).bp % Ratio.parse(0.05).bp == 0


@pytest.mark.parametrize("text", [0.2, "0.2", "20%", "2000bp", " 0.20 ", Ratio(2000)])
def test_accepted_spellings(text):
    assert Ratio.parse(text) == Ratio(2000)


@pytest.mark.parametrize("bad,message", [
    (0.12345, "finer than one basis point"),
    (-0.1, "outside"),
    (1.5, "outside"),
    ("abc", "expected a ratio"),
    (True, "expected a ratio"),
    (float("nan"), "finite"),
])
def test_rejected_values_say_why(bad, message):
    with pytest.raises(ValueError, match=message):
        Ratio.parse(bad)


def test_count_is_floor_of_exact_product():
    assert Ratio.parse(0.2).count(10) == 2
    assert Ratio.parse(0.15).count(7) == 1  # 1.05 -> 1
    assert Ratio.parse(0.05).count(45_000_000) == 2_250_000


def test_ratio_is_hashable_ordered_and_immutable():
    levels = {Ratio.parse(0.1): "a", Ratio.parse(0.10): "b"}
    assert len(levels) == 1
    assert sorted([Ratio(500), Ratio(0), Ratio(2000)]) == [Ratio(0), Ratio(500), Ratio(2000)]
    with pytest.raises(AttributeError):
        Ratio(5).bp = 6  # type: ignore[misc]
    assert str(Ratio(1500)) == "0.15" and float(Ratio(1500)) == 0.15 and str(Ratio(0)) == "0"
