"""Exact mask ratios (design decision 1).

A ratio is stored as an integer number of basis points (2000 = 0.20) so that ``0.2 - 0.05`` is
``0.15`` exactly, levels can be dictionary keys, and divisibility (``step`` divides ``r_max``) is an
integer test. Users write plain decimals (``0.2``), percentages (``"20%"``) or basis points
(``"2000bp"``); specs serialise a ratio back to the shortest decimal that parses to it.
"""

from __future__ import annotations

import functools
from decimal import Decimal, InvalidOperation
from typing import Any

BASIS_POINTS = 10_000


@functools.total_ordering
class Ratio:
    """A fraction in ``[0, 1]`` with a resolution of one basis point (0.0001)."""

    __slots__ = ("bp",)

    def __init__(self, bp: int):
        if isinstance(bp, bool) or not isinstance(bp, int):
            raise TypeError(f"Ratio takes integer basis points, got {bp!r}; use Ratio.parse for decimals")
        if not 0 <= bp <= BASIS_POINTS:
            raise ValueError(f"ratio {bp / BASIS_POINTS} is outside [0, 1]")
        object.__setattr__(self, "bp", bp)

    def __setattr__(self, key: str, value: Any) -> None:  # immutable: ratios are used as keys
        raise AttributeError("Ratio is immutable")

    @classmethod
    def parse(cls, value: Any) -> Ratio:
        """Read ``0.2``, ``"0.2"``, ``"20%"``, ``"2000bp"`` or a ``Ratio``; reject anything inexact."""
        if isinstance(value, Ratio):
            return value
        if isinstance(value, bool):
            raise ValueError(f"expected a ratio such as 0.2, got {value!r}")
        scale = Decimal(1)
        text = value
        if isinstance(value, str):
            text = value.strip().lower()
            if text.endswith("bp"):
                text, scale = text[:-2], Decimal(1) / BASIS_POINTS
            elif text.endswith("%"):
                text, scale = text[:-1], Decimal("0.01")
        elif isinstance(value, float):
            text = repr(value)  # shortest repr: 0.15 -> "0.15", never 0.1499999...
        elif not isinstance(value, (int, Decimal)):
            raise ValueError(f"expected a ratio such as 0.2, got {type(value).__name__} {value!r}")
        try:
            exact = Decimal(text) * scale
        except (InvalidOperation, ValueError):
            raise ValueError(f"expected a ratio such as 0.2, '20%' or '2000bp', got {value!r}") from None
        if not exact.is_finite():
            raise ValueError(f"ratio must be finite, got {value!r}")
        bp = exact * BASIS_POINTS
        if bp != bp.to_integral_value():
            raise ValueError(f"ratio {value!r} is finer than one basis point (0.0001); round it")
        if not 0 <= bp <= BASIS_POINTS:
            raise ValueError(f"ratio {value!r} is outside [0, 1]")
        return cls(int(bp))

    def __copy__(self) -> Ratio:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Ratio:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Ratio, (self.bp,))

    def __float__(self) -> float:
        return self.bp / BASIS_POINTS

    def as_decimal(self) -> Decimal:
        return Decimal(self.bp) / BASIS_POINTS

    def __str__(self) -> str:
        text = format(self.as_decimal().normalize(), "f")
        return text if "." in text or text != "1" else "1"

    def __repr__(self) -> str:
        return f"Ratio({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ratio) and other.bp == self.bp

    def __lt__(self, other: Ratio) -> bool:
        if not isinstance(other, Ratio):
            return NotImplemented
        return self.bp < other.bp

    def __hash__(self) -> int:
        return hash(("Ratio", self.bp))

    def __add__(self, other: Ratio) -> Ratio:
        return Ratio(self.bp + other.bp)

    def __sub__(self, other: Ratio) -> Ratio:
        return Ratio(self.bp - other.bp)

    def count(self, numel: int) -> int:
        """How many of ``numel`` elements this ratio covers: ``floor(r * numel)``, exactly."""
        return (self.bp * numel) // BASIS_POINTS

    # pydantic v2 integration: validate from any accepted form, serialise as a plain number.
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(float, when_used="always"),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.0001},
                {"type": "string", "pattern": r"^\s*[0-9.]+\s*(%|bp)?\s*$"},
            ],
            "description": "A ratio in [0, 1] with basis-point resolution: 0.2, '20%' or '2000bp'.",
        }


ZERO = Ratio(0)
