"""``first_word``: an accuracy reward (masters.api.AccuracyReward)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from masters.api import ScoredResponse

_WORD = re.compile(r"[a-z0-9]+")


class FirstWordReward:
    def __init__(self, spec, **context):
        self.spec = spec

    def score(self, items: Sequence[ScoredResponse]) -> list[float | None]:
        out: list[float | None] = []
        for item in items:
            reference = _WORD.findall(item.reference.lower())
            if not reference:
                out.append(None)  # nothing to compare against
                continue
            response = _WORD.findall(item.response.lower())
            out.append(1.0 if response[: len(reference)] == reference else 0.0)
        return out
