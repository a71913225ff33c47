"""Rewards of trace-style answers (``... answer : X``): the final answer by rule, the trace's faithfulness.

* ``final_answer``: 1 when the response's last ``answer : X`` states the reference's final answer
  (``metadata["answer_text"]`` when the task records it, else the reference's own ``answer : X``,
  else the whole reference), compared exactly after trimming and lower-casing.
* ``trace_faithfulness``: the share of the trace's claims (listed objects, intermediate counts) that
  the scene in the sample's metadata bears out (:func:`masters.tasks.shapes_reason.faithfulness`).
  An item without a recorded scene and question program scores 0 (a rule that finds nothing to
  check gives 0, never ``None``).
"""

from __future__ import annotations

import re
from typing import Any

from masters.interfaces import ScoredResponse
from masters.rewards.rules import RuleReward

__all__ = ["FinalAnswerReward", "TraceFaithfulnessReward", "marked_answer"]


def marked_answer(text: str, marker: str = "answer :") -> str | None:
    """The words after the last ``marker`` up to the end of that sentence, or None."""
    pattern = re.compile(r"(?:^|\s)" + r"\s+".join(re.escape(w) for w in marker.split()) + r"(?=\s|$)")
    found = list(pattern.finditer(text))
    if not found:
        return None
    rest = text[found[-1].end():].strip()
    rest = re.split(r"\s\.(?:\s|$)|\.$", rest)[0].strip()
    return rest or None


class FinalAnswerReward(RuleReward):
    def score_one(self, item: ScoredResponse) -> float:
        marker = self.spec.marker
        reference = item.metadata.get("answer_text") if self.spec.use_metadata else None
        if reference is None:
            reference = marked_answer(item.reference, marker) or item.reference
        stated = marked_answer(item.response, marker)
        if stated is None:
            return 0.0
        norm = (lambda t: " ".join(str(t).split())) if self.spec.case_sensitive else (lambda t: " ".join(str(t).lower().split()))
        return float(norm(stated) == norm(reference))


class TraceFaithfulnessReward(RuleReward):
    def score_one(self, item: ScoredResponse) -> float:
        from masters.tasks.shapes_reason import faithfulness

        metadata: Any = item.metadata
        if "scene" not in metadata or "program" not in metadata:
            return 0.0
        return float(faithfulness(item.response, metadata))
