"""Every registered accuracy reward, built-in or added later, passes the same basic contract.

The test environment disables plugin autoload, so this runs over the built-ins; a plugin package
runs the same kit on its own reward with ``masters.rewards.testing.check_accuracy_reward``.
"""

from __future__ import annotations

import pytest

from masters.errors import MastersError
from masters.plugins import get_components
from masters.rewards.testing import CONFORMANCE_ITEMS, check_accuracy_reward, minimal_spec_config

ITEMS = list(CONFORMANCE_ITEMS)  # kept for tests/rewards/test_judge.py; prefer check_accuracy_reward


def _accuracy_names() -> list[str]:
    return [e.name for e in get_components().registry("reward") if e.spec_cls.signal == "accuracy"]


class _AgreeingJudge:
    """A judge adapter stand-in: a clear verdict (1 when the quoted response equals the reference)."""

    def generate(self, samples, **_):
        return [[int(_verdict(s.question))] for s in samples]

    def decode(self, responses):
        return [f"Reason. <answer>{r[0]}</answer>" for r in responses]


def _verdict(prompt: str) -> bool:
    fields = dict(line.split(": ", 1) for line in prompt.splitlines() if ": " in line)
    return fields.get("Response", "").strip().lower() == fields.get("Reference answer", "?").strip().lower()


# What a reward needs from the engine to be built (the engine passes the same names).
BUILD_CONTEXT = {"llm_judge": lambda: {"judge_adapter": _AgreeingJudge()}}


def _build(name: str):
    spec_cls = get_components().registry("reward").get(name).spec_cls
    context = BUILD_CONTEXT.get(name, dict)()
    return spec_cls.model_validate(minimal_spec_config(spec_cls)).build(**context)


def test_builtins_are_registered():
    assert {"exact_match", "multiple_choice", "numeric", "regex"} <= set(_accuracy_names())


@pytest.mark.parametrize("name", _accuracy_names())
def test_accuracy_reward_conformance(name):
    try:
        reward = _build(name)
    except MastersError as exc:
        raise AssertionError(f"{name} cannot be built: add what it needs to BUILD_CONTEXT ({exc})") from None
    check_accuracy_reward(reward)


@pytest.mark.parametrize("name", ["exact_match", "multiple_choice", "numeric", "regex"])
def test_rule_rewards_score_the_obvious_cases(name):
    assert _build(name).score(list(CONFORMANCE_ITEMS[:2])) == [1.0, 0.0]


def test_kit_catches_a_broken_reward():
    class Broken:
        spec = None

        def score(self, items):
            return [2.0] * len(items)

    with pytest.raises(AssertionError, match="float in"):
        check_accuracy_reward(Broken())
