"""Every registered accuracy reward, built-in or added later, passes the same basic contract.

The test environment disables plugin autoload, so this runs over the built-ins; a plugin package
can run the same checks on its own reward with :func:`check_accuracy_reward`.
"""

from __future__ import annotations

import math

import pytest

from masters.interfaces import AccuracyReward, ScoredResponse
from masters.plugins import get_components


def _accuracy_names() -> list[str]:
    return [e.name for e in get_components().registry("reward") if getattr(e.spec_cls, "signal", "accuracy") == "accuracy"]


def _minimal_config(spec_cls) -> dict:
    """Defaults, plus the first documented example of every required field (``Field(examples=...)``)."""
    config = {"name": None}
    for field_name, info in spec_cls.model_fields.items():
        if field_name != "name" and info.is_required():
            assert info.examples, f"{spec_cls.__name__}.{field_name} is required: give it Field(examples=[...])"
            config[field_name] = info.examples[0]
    return config


ITEMS = [
    ScoredResponse(question="How many circles?", response="3", reference="3", choices=("1", "2", "3", "4")),
    ScoredResponse(question="How many circles?", response="2", reference="3", choices=("1", "2", "3", "4")),
    ScoredResponse(question="Colour?", response="", reference="red"),
    ScoredResponse(question="Colour?", response="The answer is red.", reference="red", metadata={"id": 1}),
    ScoredResponse(question="Colour?", response="ｒｅｄ \u2212 ünïcödé ✓ " * 50, reference="red"),
    ScoredResponse(question="Which?", response="(B)", reference="B", choices=("red", "blue")),
]


def check_accuracy_reward(name: str) -> None:
    entry = get_components().registry("reward").get(name)
    config = _minimal_config(entry.spec_cls)
    config["name"] = name
    spec = entry.spec_cls.model_validate(config)
    reward = spec.build()
    assert isinstance(reward, AccuracyReward), f"{name}: no score(items) / spec"
    assert reward.score([]) == []
    scores = reward.score(ITEMS)
    assert isinstance(scores, list) and len(scores) == len(ITEMS), f"{name}: one score per item"
    for item, value in zip(ITEMS, scores):
        assert value is None or (isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0), (
            f"{name}: score {value!r} for {item.response[:30]!r} is not None or a float in [0, 1]"
        )
    assert reward.score(ITEMS) == scores, f"{name}: scores must be deterministic"
    assert reward.score(ITEMS[::-1]) == scores[::-1], f"{name}: an item's score must not depend on its neighbours"


def test_builtins_are_registered():
    assert {"exact_match", "multiple_choice", "numeric", "regex"} <= set(_accuracy_names())


@pytest.mark.parametrize("name", _accuracy_names())
def test_accuracy_reward_conformance(name):
    check_accuracy_reward(name)


@pytest.mark.parametrize("name", ["exact_match", "multiple_choice", "numeric", "regex"])
def test_rule_rewards_score_the_obvious_cases(name):
    entry = get_components().registry("reward").get(name)
    config = _minimal_config(entry.spec_cls)
    config["name"] = name
    scores = entry.spec_cls.model_validate(config).build().score(ITEMS[:2])
    assert scores == [1.0, 0.0]
