"""The bounded objectives of issue 13 against hand calculations: TOPR, the advantage shift,
Dr. GRPO (no std division) and the relative tie tolerance of the distillation reward."""

from __future__ import annotations

import math

import pytest
import torch

from masters.interfaces import StepInputs
from masters.objectives.losses import group_advantages, masters_loss, topr_weights
from masters.objectives.specs import MastersObjectiveSpec
from masters.rewards.distill import group_reverse_minmax


def test_topr_weights_negatives_by_the_clipped_sequence_ratio_by_hand():
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    adv = torch.tensor([1.0, -2.0, -1.0])
    mu = torch.tensor([[-3.0, -3.0], [-1.0, 0.0], [-0.5, -0.25]])
    lp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0], [-1.0, -1.0]], requires_grad=True)
    masters_loss(lp, mask, adv, beta=0.0, distill_weight=0.0, negative_advantages="topr",
                 behaviour_logprobs=mu).policy.backward()
    # row 1: log pi/mu = -0.5 + 1 = 0.5 > 0, clipped to ratio 1; row 2: -1 - 1 + 0.5 + 0.25 = -1.25 -> e^-1.25.
    # Positives (row 0) are never weighted, whatever their ratio. d/dlp = -A * w / tokens / responses.
    w = math.exp(-1.25)
    expected = torch.tensor([[-1 / 2 / 3, -1 / 2 / 3], [2 / 1 / 3, 0.0], [w / 2 / 3, w / 2 / 3]])
    assert torch.allclose(lp.grad, expected, atol=1e-6)
    weights = topr_weights(lp, mu, mask)
    assert torch.allclose(weights, torch.tensor([1.0, 1.0, w])) and not weights.requires_grad


def test_topr_without_behaviour_logprobs_is_refused():
    lp = torch.zeros(1, 2, requires_grad=True)
    with pytest.raises(ValueError, match="behaviour log-probs"):
        masters_loss(lp, torch.ones(1, 2, dtype=torch.bool), torch.tensor([-1.0]), beta=0.0, distill_weight=0.0,
                     negative_advantages="topr")


def test_advantage_shift_and_dr_grpo_by_hand():
    rewards = torch.tensor([2.0, 0.0, 4.0, 5.0, 5.0])
    groups = torch.tensor([0, 0, 0, 7, 7])
    # group 0: mean 2, unbiased std 2; group 7: all equal
    grpo = group_advantages(rewards, groups, eps=0.0)
    assert torch.allclose(grpo, torch.tensor([0.0, -1.0, 1.0, 0.0, 0.0]))
    shifted = group_advantages(rewards, groups, eps=0.0, shift=0.5)
    assert torch.allclose(shifted, torch.tensor([0.25, -0.75, 1.25, 0.0, 0.0]))  # (R - mean + 0.5) / 2
    dr = group_advantages(rewards, groups, eps=0.0, scale_by_std=False)
    assert torch.allclose(dr, torch.tensor([0.0, -2.0, 2.0, 0.0, 0.0]))
    dr_shift = group_advantages(rewards, groups, eps=0.0, shift=0.5, scale_by_std=False)
    assert torch.allclose(dr_shift, torch.tensor([0.5, -1.5, 2.5, 0.5, 0.5]))  # equal rewards keep delta


@pytest.mark.parametrize("fields, advantages", [
    ({}, [0.0, -1.0, 1.0]),
    ({"advantage_std": False}, [0.0, -2.0, 2.0]),
    ({"advantage_shift": 0.5}, [0.25, -0.75, 1.25]),
])
def test_objective_gradients_follow_the_advantage_fields(fields, advantages):
    spec = MastersObjectiveSpec(beta=0.0, distill_loss_weight=0.0, **fields)
    lp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0], [-1.0, -1.0]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    inputs = StepInputs(student_logprobs=lp, mask=mask, rewards={"r": torch.tensor([2.0, 0.0, 4.0])},
                        reward_weights={"r": 1.0}, group_index=torch.tensor([0, 0, 0]))
    spec.build().loss(inputs).total.backward()
    a = advantages
    expected = torch.tensor([[-a[0] / 2 / 3] * 2, [-a[1] / 1 / 3, 0.0], [-a[2] / 2 / 3] * 2])
    assert torch.allclose(lp.grad, expected, atol=1e-4)  # eps 1e-4 in the std


def test_topr_objective_declares_behaviour_logprobs_and_defaults_stay_the_papers():
    assert "behaviour_logprobs" in MastersObjectiveSpec(negative_advantages="topr").requirements().signals
    default = MastersObjectiveSpec()
    assert "behaviour_logprobs" not in default.requirements().signals
    assert (default.negative_advantages, default.advantage_shift, default.advantage_std) == ("full", 0.0, True)


def test_new_fields_stay_out_of_training_identities_at_their_defaults():
    from masters.config import validate_run_spec
    from masters.engine.trainer import identity_of_training

    base = {"output_dir": "x", "teacher": "t", "student": "s", "objective": "masters",
            "rewards": ["exact_match", "jsd_distill"]}
    plain = identity_of_training(validate_run_spec(base))
    assert not {"advantage_shift", "advantage_std"} & set(plain)
    spec = validate_run_spec(base)
    assert "relative_tie_tolerance" not in spec.rewards[1].model_dump()
    shifted = identity_of_training(validate_run_spec({**base, "objective": {"name": "masters", "advantage_shift": 0.1}}))
    assert shifted["advantage_shift"] == 0.1
    tied = validate_run_spec({**base, "rewards": ["exact_match", {"name": "jsd_distill", "relative_tie_tolerance": 0.1}]})
    assert tied.rewards[1].model_dump()["relative_tie_tolerance"] == 0.1


def test_relative_tie_tolerance_by_hand():
    values = torch.tensor([1.0, 1.05, 1.0, 2.0])
    groups = torch.tensor([0, 0, 1, 1])
    # group 0: span 0.05 < 0.1 * mean 1.025 -> a tie; group 1: span 1 >= 0.1 * 1.5 -> normalised
    out = group_reverse_minmax(values, groups, relative_tie_tolerance=0.1)
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert torch.allclose(group_reverse_minmax(values, groups), torch.tensor([1.0, 0.0, 1.0, 0.0]))
