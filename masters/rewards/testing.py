"""Conformance checks on built rewards, for this repository's tests and for plugin authors.

    from masters.rewards.testing import check_accuracy_reward, check_distillation_reward
    check_accuracy_reward(MyRewardSpec(...).build(**context))
    check_distillation_reward(MyDistillSpec().build(vocab_size=16))

No pytest; ``check_accuracy_reward`` is pure Python, ``check_distillation_reward`` imports torch
when called. Failures raise ``AssertionError`` with the reward's name. The registry-level kit
(``masters.testing.rewards``: by name, every check, the pytest plugin) calls these.
"""

from __future__ import annotations

import math
from typing import Any

from masters.interfaces import AccuracyReward, ScoredResponse

__all__ = ["CONFORMANCE_ITEMS", "DISTILLATION_CHECKS", "AgreeingJudge", "check_accuracy_reward",
           "check_distillation_reward", "minimal_spec_config"]

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


class AgreeingJudge:
    """A judge adapter stand-in for the ``llm_judge`` reward: a clear verdict, 1 when the quoted
    response equals the reference (case-insensitive), from the judging prompt alone."""

    def generate(self, samples: Any, **_: Any) -> list[list[int]]:
        return [[int(self._verdict(s.question))] for s in samples]

    def decode(self, responses: Any) -> list[str]:
        return [f"Reason. <answer>{r[0]}</answer>" for r in responses]

    @staticmethod
    def _verdict(prompt: str) -> bool:
        fields = dict(line.split(": ", 1) for line in prompt.splitlines() if ": " in line)
        return fields.get("Response", "").strip().lower() == fields.get("Reference answer", "?").strip().lower()


# -- distillation rewards ------------------------------------------------------------------------

DISTILLATION_CHECKS: tuple[str, ...] = (
    "shape_and_range", "detached", "group_local", "permutation_equivariant", "informative", "fast_path",
)


def _distill_batch(seed: int = 0, vocab: int = 16):
    """Small random logits: 3 groups (ids 7, 2, 5: not contiguous, not sorted) of 3, 2 and 4 rows,
    responses of 1 to 5 tokens (mask), teacher and student at different scales."""
    import torch

    g = torch.Generator().manual_seed(seed)
    groups = torch.tensor([7, 7, 7, 2, 2, 5, 5, 5, 5])
    lengths = torch.tensor([5, 3, 1, 4, 2, 5, 5, 2, 3])
    batch, tokens = len(groups), int(lengths.max())
    mask = torch.arange(tokens).unsqueeze(0) < lengths.unsqueeze(1)
    teacher = torch.randn(batch, tokens, vocab, generator=g) * 2.0
    student = torch.randn(batch, tokens, vocab, generator=g)
    return teacher, student, mask, groups


def _call(reward: Any, teacher, student, mask, groups):
    return reward(teacher, student, mask, groups)


def check_distillation_reward(reward: Any, *, vocab: int = 16, checks: tuple[str, ...] = DISTILLATION_CHECKS,
                              seed: int = 0) -> None:
    """Assert the :class:`~masters.interfaces.DistillationReward` contract on small random logits.

    ``shape_and_range``: one finite float per response, in [0, 1], a tensor on the inputs' device.
    ``detached``: no gradient flows even when the student logits require one. ``group_local``: a
    group's rewards depend only on that group (computed alone they are the same), whatever its id.
    ``permutation_equivariant``: shuffling the rows (within and across groups) shuffles the rewards
    alike. ``informative``: in a group whose responses diverge differently, rewards are not all
    equal. ``fast_path``: a reward with ``from_token_divergence`` gives the same rewards from the
    engine's per-token JSD (``masters.rewards.jsd.token_jsd``) as from the logits.
    """
    import torch

    name = getattr(getattr(reward, "spec", None), "name", type(reward).__name__)
    teacher, student, mask, groups = _distill_batch(seed, vocab)
    with torch.no_grad():
        base = _call(reward, teacher, student, mask, groups)
    if "shape_and_range" in checks:
        assert isinstance(base, torch.Tensor), f"{name}: returns {type(base).__name__}, not a tensor"
        assert tuple(base.shape) == (len(groups),), f"{name}: shape {tuple(base.shape)}, expected [batch] = [{len(groups)}]"
        assert base.is_floating_point() and bool(torch.isfinite(base).all()), f"{name}: rewards {base.tolist()} not finite floats"
        assert bool(((base >= 0) & (base <= 1)).all()), f"{name}: rewards {base.tolist()} are not group-normalised to [0, 1]"
    if "detached" in checks:
        s = student.clone().requires_grad_(True)
        t = teacher.clone().requires_grad_(True)
        out = _call(reward, t, s, mask, groups)
        assert not out.requires_grad and out.grad_fn is None, (
            f"{name}: rewards carry a gradient; return them detached (they weight the policy gradient, they are no loss)")
    if "group_local" in checks:
        for gid in groups.unique().tolist():
            rows = (groups == gid).nonzero().squeeze(-1)
            with torch.no_grad():
                alone = _call(reward, teacher[rows], student[rows], mask[rows], torch.full((len(rows),), 123))
            assert torch.allclose(alone, base[rows], atol=1e-5), (
                f"{name}: group {gid} computed alone gives {alone.tolist()}, in the batch {base[rows].tolist()}: "
                "normalise within each group only, and treat group ids as labels")
    if "permutation_equivariant" in checks:
        perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed + 1))
        with torch.no_grad():
            shuffled = _call(reward, teacher[perm], student[perm], mask[perm], groups[perm])
        assert torch.allclose(shuffled, base[perm], atol=1e-5), (
            f"{name}: shuffling the rows changed the rewards ({shuffled.tolist()} vs {base[perm].tolist()})")
    if "informative" in checks:
        for gid in groups.unique().tolist():
            values = base[groups == gid]
            if values.numel() > 1:
                assert bool((values != values[0]).any()), (
                    f"{name}: group {gid} gets equal rewards {values.tolist()} although its responses diverge "
                    "differently from the teacher")
    if "fast_path" in checks and hasattr(reward, "from_token_divergence"):
        from masters.rewards.jsd import token_jsd

        with torch.no_grad():
            values = token_jsd(teacher, student, mask=mask)
            fast = reward.from_token_divergence(values, mask, groups)
        assert torch.allclose(fast, base, atol=1e-5), (
            f"{name}: from_token_divergence gives {fast.tolist()} but __call__ gives {base.tolist()}: the engine "
            "uses the fast path when it exists, so both must agree")
