"""Conformance checks for accuracy rewards, for this repository's tests and for plugin authors.

    from masters.rewards.testing import check_accuracy_reward
    check_accuracy_reward(MyRewardSpec(...).build(**context))

Pure Python (no torch, no pytest): failures raise ``AssertionError`` with the reward's name.
"""

from __future__ import annotations

import math
from typing import Any

from masters.interfaces import AccuracyReward, ScoredResponse

__all__ = ["CONFORMANCE_ITEMS", "check_accuracy_reward", "minimal_spec_config"]

CONFORMANCE_ITEMS: tuple[ScoredResponse, ...] = (
    ScoredResponse(question="How many circles?", response="3", reference="3", choices=("1", "2", "3", "4")),
    ScoredResponse(question="How many circles?", response="2", reference="3", choices=("1", "2", "3", "4")),
    ScoredResponse(question="Colour?", response="", reference="red"),
    ScoredResponse(question="Colour?", response="The answer is red.", reference="red", metadata={"id": 1}),
    ScoredResponse(question="Colour?", response="ｒｅｄ \u2212 ünïcödé ✓ " * 50, reference="red"),
    ScoredResponse(question="Which?", response="(B)", reference="B", choices=("red", "blue")),
)


def minimal_spec_config(spec_cls: type) -> dict[str, Any]:
    """Defaults plus the first ``Field(examples=[...])`` of each required field: give every required
    field of a reward spec an example, so tools (and this kit) can build it without a config."""
    config: dict[str, Any] = {}
    for field_name, info in spec_cls.model_fields.items():
        if field_name == "name":
            config["name"] = info.get_default()
        elif info.is_required():
            if not info.examples:
                raise AssertionError(f"{spec_cls.__name__}.{field_name} is required: give it Field(examples=[...])")
            config[field_name] = info.examples[0]
    return config


def check_accuracy_reward(reward: Any, items: tuple[ScoredResponse, ...] = CONFORMANCE_ITEMS) -> list[float | None]:
    """Assert the :class:`~masters.interfaces.AccuracyReward` contract; return the scores.

    One score per item, each ``None`` or a finite float in [0, 1]; ``score([]) == []``; the same
    scores on a second call and in reverse order (an item's score depends only on that item).
    """
    name = getattr(getattr(reward, "spec", None), "name", type(reward).__name__)
    assert isinstance(reward, AccuracyReward), f"{name}: needs a `spec` attribute and `score(items)`"
    assert reward.score([]) == [], f"{name}: score([]) must be []"
    scores = reward.score(list(items))
    assert isinstance(scores, list) and len(scores) == len(items), f"{name}: one score per item"
    for item, value in zip(items, scores):
        ok = value is None or (isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0)
        assert ok, f"{name}: score {value!r} for {item.response[:30]!r} is not None or a float in [0, 1]"
    assert reward.score(list(items)) == scores, f"{name}: scores must be deterministic"
    assert reward.score(list(items)[::-1]) == scores[::-1], f"{name}: an item's score must not depend on its neighbours"
    return scores
