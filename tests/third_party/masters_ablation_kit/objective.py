"""``reward_weighted_kd``: CONTRIBUTING's example objective (masters.api.Objective)."""

from __future__ import annotations

from masters.api import ObjectiveLoss, StepInputs, reduce_token_values


class RewardWeightedKD:
    def __init__(self, spec, **context):
        self.spec = spec

    def loss(self, inputs: StepInputs) -> ObjectiveLoss:
        reward = sum(inputs.rewards.values())  # {reward key: [B]}, accuracy rewards only
        weight = self.spec.floor + (1 - self.spec.floor) * reward
        per_token = inputs.teacher_divergence * weight[:, None]
        total = reduce_token_values(per_token, inputs.mask, inputs.reduction)
        return ObjectiveLoss(total, {"loss/total": float(total.detach()),
                                     "rwkd/mean_weight": float(weight.detach().float().mean())})
