"""The implementation of ``{{component}}``; imported only when a run builds the reward.

This is where heavy imports (torch, a model) would go. It satisfies
:class:`masters.interfaces.AccuracyReward`: ``score`` returns one value in [0, 1] per item, or
``None`` for an item it cannot score (the scoring stage leaves that row unscored).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from masters.api import ScoredResponse

from {{package}}.spec import {{class_prefix}}Spec

_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)


class {{class_prefix}}Reward:
    def __init__(self, spec: {{class_prefix}}Spec, **context: object) -> None:
        self.spec = spec

    def _words(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text)
        if not self.spec.case_sensitive:
            text = text.casefold()
        if self.spec.ignore_punctuation:
            text = _PUNCTUATION.sub(" ", text)
        return text.split()

    def score(self, items: Sequence[ScoredResponse]) -> list[float | None]:
        return [self._score_one(item) for item in items]

    def _score_one(self, item: ScoredResponse) -> float | None:
        reference = self._words(item.reference)
        if not reference:
            return None  # nothing to look for: leave the row unscored rather than guess
        response = self._words(item.response)
        if self.spec.max_words is not None and len(response) > self.spec.max_words:
            return 0.0
        n = len(reference)
        found = any(response[i : i + n] == reference for i in range(len(response) - n + 1))
        return 1.0 if found else 0.0
