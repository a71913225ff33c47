"""The distillation reward (group reverse min-max of mean token JSD) and reward composition."""

from __future__ import annotations

import pytest
import torch

from masters.interfaces import DistillationReward
from masters.rewards.combine import CombinedRewards, combine_rewards, reward_keys
from masters.rewards.distill import JSDDistillReward, group_reverse_minmax
from masters.rewards.jsd import jsd_loss, sequence_mean, token_jsd
from masters.config import validate_component


def _reward(**fields):
    return validate_component("reward", {"name": "jsd_distill", **fields}).build()


def test_reverse_minmax_within_one_group():
    d = torch.tensor([0.1, 0.3, 0.2, 0.5])
    torch.testing.assert_close(group_reverse_minmax(d, torch.zeros(4, dtype=torch.long)), torch.tensor([1.0, 0.5, 0.75, 0.0]))


def test_several_groups_in_one_batch_interleaved_and_non_contiguous_ids():
    d = torch.tensor([0.1, 5.0, 0.3, 7.0, 0.2, 6.0])
    groups = torch.tensor([42, 7, 42, 7, 42, 7])
    torch.testing.assert_close(group_reverse_minmax(d, groups), torch.tensor([1.0, 1.0, 0.0, 0.0, 0.5, 0.5]))


def test_ties_and_single_response_groups_give_zero():
    d = torch.tensor([0.2, 0.2, 0.2, 0.9, 0.4, 0.4, 0.1])
    groups = torch.tensor([0, 0, 0, 1, 2, 2, 3])
    # group 0 all equal, group 1 single, group 2 equal pair, group 3 single: all 0
    assert (group_reverse_minmax(d, groups) == 0).all()
    # a partial tie: both best responses get 1
    out = group_reverse_minmax(torch.tensor([0.1, 0.1, 0.3]), torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0, 0.0]))


def test_tie_tolerance_treats_near_equal_groups_as_tied():
    d = torch.tensor([0.2, 0.2 + 1e-9, 0.5, 0.6])
    groups = torch.tensor([0, 0, 1, 1])
    out = group_reverse_minmax(d, groups, tie_tolerance=1e-6)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, 1.0, 0.0]))


def test_reverse_minmax_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        group_reverse_minmax(torch.tensor([0.1, float("nan")]), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[batch\]"):
        group_reverse_minmax(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    assert group_reverse_minmax(torch.zeros(0), torch.zeros(0, dtype=torch.long)).numel() == 0


def test_reward_is_built_from_its_spec_and_satisfies_the_protocol():
    reward = _reward(chunk_size=3, tie_tolerance=0.0)
    assert isinstance(reward, JSDDistillReward) and isinstance(reward, DistillationReward)
    assert reward.spec.chunk_size == 3


def test_reward_from_logits_equals_reward_from_loss_values_and_is_detached():
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 5, 40, generator=gen) * 3
    student = (torch.randn(6, 5, 36, generator=gen) * 3).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]] * 2, dtype=torch.bool)
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    reward = _reward(chunk_size=4)

    direct = reward(teacher, student, mask, groups, vocab_size=32)
    assert not direct.requires_grad
    loss, values = jsd_loss(teacher, student, mask, vocab_size=32, chunk_size=4)
    reused = reward.from_token_divergence(values, mask, groups)
    torch.testing.assert_close(direct, reused, atol=0, rtol=0)
    assert not reused.requires_grad

    d = sequence_mean(token_jsd(teacher, student.detach(), vocab_size=32), mask)
    torch.testing.assert_close(reward.last_divergence, d)
    for g in (0, 1):
        dg, rg = d[groups == g], direct[groups == g]
        torch.testing.assert_close(rg, (dg.max() - dg) / (dg.max() - dg.min()))
    loss.backward()  # the loss still has its graph after the reward used its values
    assert student.grad is not None


def test_vocab_size_from_build_context_and_missing_vocab_size_error():
    teacher, student = torch.randn(2, 3, 12), torch.randn(2, 3, 10)
    mask, groups = torch.ones(2, 3, dtype=torch.bool), torch.tensor([0, 0])
    built = validate_component("reward", "jsd_distill").build(vocab_size=10)
    assert built(teacher, student, mask, groups).shape == (2,)
    with pytest.raises(ValueError, match="vocab_size"):
        _reward()(teacher, student, mask, groups)


def test_temperature_field_is_used():
    gen = torch.Generator().manual_seed(1)
    teacher, student = torch.randn(3, 4, 16, generator=gen) * 4, torch.randn(3, 4, 16, generator=gen) * 4
    mask, groups = torch.ones(3, 4, dtype=torch.bool), torch.zeros(3, dtype=torch.long)
    hot, cold = _reward(temperature=4.0), _reward()
    hot(teacher, student, mask, groups)
    cold(teacher, student, mask, groups)
    assert (hot.last_divergence < cold.last_divergence).all()  # flatter distributions diverge less


# --- combine_rewards -------------------------------------------------------------------------


def test_combine_lists_keeps_raw_and_weighted():
    out = combine_rewards({"exact_match": [1, 0, 1], "jsd_distill": [0.5, 1.0, 0.0]}, {"exact_match": 1.0, "jsd_distill": 0.5})
    assert isinstance(out, CombinedRewards)
    assert out.total == [1.25, 0.5, 1.0]
    assert out.raw["jsd_distill"] == [0.5, 1.0, 0.0] and out.weighted["jsd_distill"] == [0.25, 0.5, 0.0]
    metrics = out.metrics()
    assert metrics["reward/exact_match/raw"] == pytest.approx(2 / 3)
    assert metrics["reward/jsd_distill/weighted"] == pytest.approx(0.25)
    assert metrics["reward/total"] == pytest.approx(2.75 / 3)


def test_combine_tensors_and_lists_from_specs_with_a_repeated_name():
    specs = [
        validate_component("reward", {"name": "regex", "pattern": "{reference}", "weight": 2.0}),
        validate_component("reward", {"name": "regex", "pattern": "^{reference}$", "weight": 0.5}),
        validate_component("reward", {"name": "jsd_distill", "weight": 1.0}),
    ]
    keys = reward_keys(specs)
    assert keys == ["regex", "regex#2", "jsd_distill"]
    distill = torch.tensor([0.0, 1.0], requires_grad=True)
    out = combine_rewards({"regex": [1.0, 1.0], "regex#2": [0.0, 1.0], "jsd_distill": distill}, specs)
    torch.testing.assert_close(out.total, torch.tensor([2.0, 3.5]))
    assert not out.total.requires_grad
    assert out.weights == {"regex": 2.0, "regex#2": 0.5, "jsd_distill": 1.0}


def test_combine_errors():
    with pytest.raises(ValueError, match="no weight"):
        combine_rewards({"a": [1.0]}, {"b": 1.0})
    with pytest.raises(ValueError, match="number of responses"):
        combine_rewards({"a": [1.0], "b": [1.0, 0.0]}, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="unscored"):
        combine_rewards({"a": [1.0, None]}, {"a": 1.0})
    with pytest.raises(ValueError, match="unscored"):
        combine_rewards({"a": [1.0, None], "b": torch.ones(2)}, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="no rewards"):
        combine_rewards({}, {})
