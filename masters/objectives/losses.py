"""The Masters objective (method.md section 6), as pure tensor functions.

    loss = policy + beta * KL(student || reference) + distill_weight * JSD(masked teacher, student)

* policy: ``-A_j * exp(logp - logp.detach())`` per response token. One update per batch makes
  the importance ratio identically 1; writing it this way keeps the gradient ``-A_j * grad logp``.
  With ``negative_advantages``: ``"full"`` is that; ``"probability_weighted"`` scales a negative
  advantage's token by ``p`` (detached), so its gradient is ``-A_j * grad p`` and fades as ``p``
  goes to 0 instead of pushing an already unlikely response down without bound; ``"zero"`` drops
  negative advantages; ``"topr"`` (Tapered Off-Policy REINFORCE, Le Roux et al. 2025) scales a
  negative-advantage response by the stopped, clipped sequence ratio
  ``w = min(1, exp(sum_t (logp_t - mu_t)))`` (``mu`` the behaviour log-probs the bank stored), so
  its gradient is ``-A_j * w * grad logp`` and vanishes as the student leaves the response behind;
  positive advantages keep the plain ``-A_j * grad logp``.
* KL: the k3 estimator ``exp(ref - logp) - (ref - logp) - 1`` per token, against the initial
  student (reference log-probs precomputed offline).
* distillation: the per-token JSD between masked teacher and student.

Token averaging follows decision 6: per-response mean over tokens, then mean over responses
(``"sequence"``), or one mean over every response token of the batch (``"token"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from masters.rewards.jsd import reduce_token_values
from masters.objectives.specs import NegativeAdvantages

Reduction = Literal["sequence", "token"]


def group_advantages(rewards: torch.Tensor, group_index: torch.Tensor, eps: float = 1e-4, *, shift: float = 0.0,
                     scale_by_std: bool = True) -> torch.Tensor:
    """GRPO's ``(R_j - mean_g) / (std_g + eps)`` within each group (unbiased std, as TRL's GRPO).

    A group whose rewards are all equal gets advantages of 0: it carries no policy signal.
    ``shift`` (delta of asymmetric REINFORCE) lowers the baseline to ``mean_g - delta``, in reward
    units: ``(R_j - mean_g + delta) / (std_g + eps)``; a group of equal rewards then has no scale
    to divide by and keeps 0 (with ``scale_by_std=False`` it gets ``delta``). ``scale_by_std=False``
    is Dr. GRPO: ``R_j - mean_g + delta``, no division.
    """
    rewards = rewards.detach().to(torch.float32)
    _, inverse = torch.unique(group_index, return_inverse=True)
    n = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(n, dtype=rewards.dtype, device=rewards.device).index_add_(0, inverse, torch.ones_like(rewards))
    mean = torch.zeros(n, dtype=rewards.dtype, device=rewards.device).index_add_(0, inverse, rewards) / count
    centred = rewards - mean[inverse]
    sq = torch.zeros(n, dtype=rewards.dtype, device=rewards.device).index_add_(0, inverse, centred ** 2)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))[inverse]
    if not scale_by_std:
        return centred + shift
    return torch.where(std > 0, (centred + shift) / (std + eps), torch.zeros_like(centred))


def topr_weights(student_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TOPR's per-response weight ``min(1, pi/mu)`` with sequence log-ratio ``sum_t (logp_t - mu_t)``
    over real tokens; stopped (detached). ``[B]``."""
    mask = mask.bool()
    log_ratio = ((student_logprobs.detach() - behaviour_logprobs.to(student_logprobs.dtype)) * mask).sum(-1)
    return torch.exp(log_ratio.clamp(max=0.0))


@dataclass
class LossTerms:
    total: torch.Tensor
    policy: torch.Tensor
    kl: torch.Tensor
    distill: torch.Tensor

    def metrics(self) -> dict[str, float]:
        return {f"loss/{k}": float(getattr(self, k).detach()) for k in ("total", "policy", "kl", "distill")}


def masters_loss(
    student_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    advantages: torch.Tensor,
    *,
    reference_logprobs: torch.Tensor | None = None,
    token_jsd: torch.Tensor | None = None,
    beta: float = 0.1,
    distill_weight: float = 1.0,
    policy_weight: float = 1.0,
    reduction: Reduction = "sequence",
    negative_advantages: NegativeAdvantages = "full",
    behaviour_logprobs: torch.Tensor | None = None,
) -> LossTerms:
    """All terms from per-token tensors ``[B, T]`` (``advantages`` is ``[B]``).

    ``reference_logprobs`` may be None when ``beta`` is 0, ``token_jsd`` when ``distill_weight`` is 0;
    ``policy_weight`` 0 gives pure distillation (the mask-progressive KD baseline);
    ``behaviour_logprobs`` ``[B, T]`` (mu) is needed by ``negative_advantages="topr"`` only.
    """
    if negative_advantages not in get_args(NegativeAdvantages):
        raise ValueError(f"unknown negative_advantages {negative_advantages!r}")
    mask = response_mask.bool()
    zero = student_logprobs.new_zeros(())
    policy = zero
    if policy_weight:
        ratio = torch.exp(student_logprobs - student_logprobs.detach())
        adv = advantages.detach().to(ratio.dtype)
        if negative_advantages == "zero":
            adv = adv.clamp(min=0.0)
        per_token = -adv.unsqueeze(-1) * ratio
        if negative_advantages == "probability_weighted":
            pushed_down = (adv < 0).unsqueeze(-1)
            per_token = torch.where(pushed_down, per_token * student_logprobs.detach().exp(), per_token)
        if negative_advantages == "topr":
            if behaviour_logprobs is None:
                raise ValueError("negative_advantages 'topr' needs the behaviour log-probs (mu) of the responses")
            weight = topr_weights(student_logprobs, behaviour_logprobs, mask)
            pushed_down = (adv < 0).unsqueeze(-1)
            per_token = torch.where(pushed_down, per_token * weight.unsqueeze(-1), per_token)
        policy = reduce_token_values(per_token, mask, reduction)
    kl = zero
    if beta:
        if reference_logprobs is None:
            raise ValueError("beta > 0 needs reference log-probs")
        delta = (reference_logprobs.to(student_logprobs.dtype) - student_logprobs).masked_fill(~mask, 0.0)
        kl = reduce_token_values(torch.exp(delta) - delta - 1.0, mask, reduction)
    distill = zero
    if distill_weight:
        if token_jsd is None:
            raise ValueError("distill_weight > 0 needs the per-token JSD")
        distill = reduce_token_values(token_jsd, mask, reduction)
    total = policy_weight * policy + beta * kl + distill_weight * distill
    return LossTerms(total=total, policy=policy, kl=kl, distill=distill)
