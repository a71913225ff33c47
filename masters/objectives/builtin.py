"""Implementations of the built-in objectives: each turns the step's declared signals into a loss."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from masters.interfaces import ObjectiveLoss, StepInputs
from masters.objectives.losses import group_advantages, masters_loss

if TYPE_CHECKING:
    from masters.objectives.specs import MastersObjectiveSpec, NaiveKDObjectiveSpec, ProgressiveKDObjectiveSpec, SFTObjectiveSpec


class GroupSignalWarning(UserWarning):
    """Every response of a group got the same reward: the group carries no policy gradient."""


class MastersObjective:
    """Policy term over group-normalised rewards, k3 KL to the initial student, JSD distillation loss."""

    def __init__(self, spec: MastersObjectiveSpec, **context: Any) -> None:
        self.spec = spec

    def loss(self, inputs: StepInputs) -> ObjectiveLoss:
        from masters.rewards.combine import combine_rewards

        combined = combine_rewards(inputs.rewards or {}, inputs.reward_weights or {})
        metrics = combined.metrics()
        groups = inputs.group_index
        advantages = group_advantages(combined.total, groups, shift=self.spec.advantage_shift,
                                      scale_by_std=self.spec.advantage_std)
        equal = equal_reward_groups(combined.total, groups)
        metrics["groups/equal_rewards"] = float(equal)
        n_groups = int(torch.unique(groups).numel())
        if equal == n_groups:
            warnings.warn(f"step {inputs.step}: every group has equal rewards, so no policy signal",
                          GroupSignalWarning, stacklevel=2)
        beta = self.spec.beta if inputs.reference_logprobs is not None else 0.0
        terms = masters_loss(
            inputs.student_logprobs, inputs.mask, advantages, reference_logprobs=inputs.reference_logprobs,
            token_jsd=inputs.teacher_divergence, beta=beta, distill_weight=self.spec.distill_loss_weight,
            policy_weight=1.0, reduction=inputs.reduction, negative_advantages=self.spec.negative_advantages,
            behaviour_logprobs=inputs.behaviour_logprobs)
        return ObjectiveLoss(terms.total, {**metrics, **terms.metrics()},
                             {"policy": terms.policy, "kl": beta * terms.kl,
                              "distill": self.spec.distill_loss_weight * terms.distill})


class DistillationObjective:
    """The JSD distillation loss alone (progressive KD on banked groups, naive KD on reference answers)."""

    def __init__(self, spec: ProgressiveKDObjectiveSpec | NaiveKDObjectiveSpec, **context: Any) -> None:
        self.spec = spec

    def loss(self, inputs: StepInputs) -> ObjectiveLoss:
        zeros = inputs.student_logprobs.new_zeros(inputs.student_logprobs.shape[0])
        terms = masters_loss(inputs.student_logprobs, inputs.mask, zeros, token_jsd=inputs.teacher_divergence,
                             beta=0.0, distill_weight=self.spec.distill_loss_weight, policy_weight=0.0,
                             reduction=inputs.reduction)
        metrics = terms.metrics()
        metrics.pop("loss/policy")  # identically 0 without a policy term
        metrics.pop("loss/kl")  # likewise: no KL here
        return ObjectiveLoss(terms.total, metrics, {"distill": terms.total})


class SFTObjective:
    """Mean negative log-likelihood over every real response token of the micro-batch."""

    def __init__(self, spec: SFTObjectiveSpec, **context: Any) -> None:
        self.spec = spec

    def loss(self, inputs: StepInputs) -> ObjectiveLoss:
        mask = inputs.mask
        loss = -(inputs.student_logprobs * mask).sum() / mask.sum().clamp(min=1)
        value = float(loss.detach())
        return ObjectiveLoss(loss, {"loss/total": value, "loss/nll": value}, {"nll": loss})


def equal_reward_groups(rewards: torch.Tensor, groups: torch.Tensor) -> int:
    """How many groups (of more than one response) have every reward equal."""
    equal = 0
    for g in torch.unique(groups):
        values = rewards[groups.to(rewards.device) == g]
        equal += int(values.numel() > 1 and bool((values == values[0]).all()))
    return equal
