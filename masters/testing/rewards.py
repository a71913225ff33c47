"""Conformance checks every reward must pass, accuracy and distillation alike.

``check_reward("my_reward")`` runs the checks of the reward's kind (``signal``);
``run_reward_check(name, check)`` runs one, for a pytest parametrisation over
``registered_rewards()`` x ``reward_checks(name)``. The reward is built from its conformance
example (:mod:`masters.testing.examples`): a reward that needs build context (a judge model, an
encoder) gives it there, as a :class:`~masters.testing.ConformanceExample`.

* accuracy rewards (``ACCURACY_REWARD_CHECKS``): ``protocol`` (``signal`` and the
  :class:`~masters.interfaces.AccuracyReward` methods) and ``score_contract``
  (:func:`masters.rewards.testing.check_accuracy_reward`: one value per item, ``None`` or a float in
  [0, 1], deterministic, an item's score independent of its neighbours);
* distillation rewards (``DISTILLATION_REWARD_CHECKS``): ``protocol``, then
  :func:`masters.rewards.testing.check_distillation_reward` one rule at a time on small random logits:
  ``shape_and_range`` (``[batch]``, finite, in [0, 1]), ``detached``, ``group_local``,
  ``permutation_equivariant``, ``informative`` and ``fast_path`` (``from_token_divergence``, where
  defined, agrees with ``__call__``). Distillation rewards are built with ``vocab_size=VOCAB``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from masters.rewards.testing import DISTILLATION_CHECKS, check_accuracy_reward, check_distillation_reward
from masters.testing.adapters import ConformanceError
from masters.testing.examples import NotApplicable, resolve_spec, spec_label

__all__ = ["ACCURACY_REWARD_CHECKS", "DISTILLATION_REWARD_CHECKS", "RewardConformanceError", "check_reward",
           "registered_rewards", "reward_checks", "run_reward_check"]

ACCURACY_REWARD_CHECKS: tuple[str, ...] = ("protocol", "score_contract")
DISTILLATION_REWARD_CHECKS: tuple[str, ...] = ("protocol", *DISTILLATION_CHECKS)
SIGNALS = ("accuracy", "distillation")
VOCAB = 16


class RewardConformanceError(ConformanceError):
    """A reward broke one of the conformance rules."""


def registered_rewards() -> list[str]:
    from masters.plugins import get_components

    return get_components().registry("reward").names()


def _signal(spec_or_cls: Any) -> str:
    cls = spec_or_cls if isinstance(spec_or_cls, type) else type(spec_or_cls)
    return getattr(cls, "signal", "accuracy")


def reward_checks(reward: Any) -> tuple[str, ...]:
    """The checks of a reward (a registered name, a spec class or a spec): by its ``signal``."""
    if isinstance(reward, str):
        from masters.plugins import get_components

        reward = get_components().registry("reward").get(reward).spec_cls
    elif isinstance(reward, dict):
        return reward_checks(reward["name"])
    return DISTILLATION_REWARD_CHECKS if _signal(reward) == "distillation" else ACCURACY_REWARD_CHECKS


@contextlib.contextmanager
def _built(reward: Any) -> Iterator[tuple[Any, Any]]:
    """The spec and the built reward, inside the temporary directory its example may write to."""
    from masters.errors import MastersError
    from masters.testing.examples import workdir

    with workdir() as tmp:
        spec, context = resolve_spec("reward", reward, tmp)
        if _signal(spec) == "distillation":
            context = {"vocab_size": VOCAB, **context}
        try:
            impl = spec.build(**context)
        except MastersError as exc:
            raise RewardConformanceError(
                f"[build] {spec_label(spec)} cannot be built from its conformance example: {exc}. Give the spec "
                "class a conformance_example returning masters.testing.ConformanceExample(context={...}) with "
                "what build() needs") from None
        yield spec, impl


def _protocol(spec: Any, impl: Any) -> None:
    from masters.interfaces import AccuracyReward, DistillationReward

    signal = _signal(spec)
    if signal not in SIGNALS:
        raise RewardConformanceError(f"[protocol] {spec_label(spec)}: signal is {signal!r}, not one of {SIGNALS}")
    protocol = DistillationReward if signal == "distillation" else AccuracyReward
    if not isinstance(impl, protocol):
        raise RewardConformanceError(
            f"[protocol] {spec_label(spec)}: {type(impl).__name__} is no {protocol.__name__} (needs `spec` and "
            f"{'__call__(teacher_logits, student_logits, response_mask, group_index)' if signal == 'distillation' else 'score(items)'})")
    if not (isinstance(spec.weight, float) and spec.weight >= 0):
        raise RewardConformanceError(f"[protocol] {spec_label(spec)}: weight {spec.weight!r} is not a float >= 0")


def _run(spec: Any, impl: Any, check: str) -> None:
    checks = reward_checks(spec)
    if check not in checks:
        raise NotApplicable(f"{check!r} is not a check of {_signal(spec)} rewards ({', '.join(checks)})")
    try:
        if check == "protocol":
            _protocol(spec, impl)
        elif check == "score_contract":
            check_accuracy_reward(impl)
        else:
            if check == "fast_path" and not hasattr(impl, "from_token_divergence"):
                raise NotApplicable(f"{spec_label(spec)} has no from_token_divergence fast path")
            check_distillation_reward(impl, vocab=VOCAB, checks=(check,))
    except ConformanceError:
        raise
    except AssertionError as exc:
        raise RewardConformanceError(f"[{check}] {spec_label(spec)}: {exc}") from None


def run_reward_check(reward: Any, check: str) -> None:
    """Run one check on a reward (a registered name, a mapping with ``name``, a spec class or a
    spec); raises :class:`RewardConformanceError`, or :class:`NotApplicable`."""
    known = ACCURACY_REWARD_CHECKS + DISTILLATION_REWARD_CHECKS
    if check not in known:
        raise ValueError(f"unknown reward check {check!r}; checks: {', '.join(dict.fromkeys(known))}")
    with _built(reward) as (spec, impl):
        _run(spec, impl, check)


def check_reward(reward: Any, *, checks: Iterable[str] | None = None) -> dict[str, str]:
    """Run the checks of a reward's kind; ``{check: "ok" | "n/a: why"}``; raises on the first failure."""
    report = {}
    with _built(reward) as (spec, impl):
        for check in checks if checks is not None else reward_checks(spec):
            try:
                _run(spec, impl, check)
                report[check] = "ok"
            except NotApplicable as exc:
                report[check] = f"n/a: {exc}"
    return report
