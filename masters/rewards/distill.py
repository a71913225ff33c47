"""The distillation reward (method.md section 5): reverse min-max normalised JSD within a group.

For each response ``j`` of a question's group, ``D_j`` is the mean token JSD between the current
masked teacher and the student on that response; then
``R_j = (D_max - D_j) / (D_max - D_min)`` within the group: 1 for the most transferable response,
0 for the least, and 0 for every response when the group's divergences are all equal (a
single-response group included). The paper (Table 5e) finds the reward useless without this
normalisation. Rewards are always detached: they weight the policy gradient, they are not a loss.
"""

from __future__ import annotations

from typing import Any

import torch

from masters.rewards.combine import combine_rewards  # noqa: F401  (re-exported: the brief's home)
from masters.rewards.jsd import sequence_mean, token_jsd

__all__ = ["JSDDistillReward", "group_reverse_minmax", "combine_rewards"]


def group_reverse_minmax(values: torch.Tensor, group_index: torch.Tensor, *, tie_tolerance: float = 0.0,
                         relative_tie_tolerance: float = 0.0) -> torch.Tensor:
    """``(max_g - v) / (max_g - min_g)`` per group ``g = group_index[j]``; 0 for a group whose span is
    at most ``tie_tolerance`` or below ``relative_tie_tolerance`` times the group's mean value.
    Group ids are any integers (need not be contiguous or sorted)."""
    if values.ndim != 1 or group_index.shape != values.shape:
        raise ValueError(
            f"values {tuple(values.shape)} and group_index {tuple(group_index.shape)} must both be [batch]"
        )
    values = values.detach()
    if values.numel() == 0:
        return values.clone()
    if not torch.isfinite(values).all():
        raise ValueError("divergences contain NaN or inf: check the teacher and student logits")
    _, inverse = torch.unique(group_index, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    g_max = values.new_full((n_groups,), float("-inf")).scatter_reduce(0, inverse, values, "amax")
    g_min = values.new_full((n_groups,), float("inf")).scatter_reduce(0, inverse, values, "amin")
    span = (g_max - g_min)[inverse]
    tied = span <= tie_tolerance
    if relative_tie_tolerance > 0:
        count = values.new_zeros(n_groups).index_add_(0, inverse, torch.ones_like(values))
        mean = values.new_zeros(n_groups).index_add_(0, inverse, values) / count
        tied = tied | (span < relative_tie_tolerance * mean[inverse])
    rewards = (g_max[inverse] - values) / torch.where(tied, torch.ones_like(span), span)
    return rewards.masked_fill(tied, 0.0)


class JSDDistillReward:
    """Built from :class:`~masters.rewards.specs.JSDDistillRewardSpec` (``spec.build()``).

    Satisfies :class:`masters.interfaces.DistillationReward`. Two ways in:

    * ``reward(teacher_logits, student_logits, response_mask, group_index)`` computes the JSD itself
      (under ``no_grad``, chunked);
    * ``reward.from_token_divergence(token_jsd, response_mask, group_index)`` reuses the per-token
      JSD the trainer already computed for the loss (:func:`masters.rewards.jsd.jsd_loss`), which
      is what decision 7 asks for: one teacher and student forward, one divergence pass.
    """

    def __init__(self, spec: Any, *, vocab_size: int | None = None, **_context: Any) -> None:
        self.spec = spec
        self.vocab_size = vocab_size
        self.last_divergence: torch.Tensor | None = None  # D_j of the last call, for logging

    @property
    def uses_loss_divergence(self) -> bool:
        """The loss's per-token JSD is this reward's divergence only at temperature 1."""
        return self.spec.temperature == 1.0

    def __call__(
        self,
        teacher_logits: torch.Tensor,
        student_logits: torch.Tensor,
        response_mask: torch.Tensor,
        group_index: torch.Tensor,
        *,
        vocab_size: int | None = None,
    ) -> torch.Tensor:
        mask = response_mask.bool()
        with torch.no_grad():
            values = token_jsd(
                teacher_logits,
                student_logits,
                vocab_size=vocab_size if vocab_size is not None else self.vocab_size,
                mask=mask,
                chunk_size=self.spec.chunk_size,
                temperature=self.spec.temperature,
            )
        return self.from_token_divergence(values, mask, group_index)

    def from_token_divergence(
        self, token_divergence: torch.Tensor, response_mask: torch.Tensor, group_index: torch.Tensor
    ) -> torch.Tensor:
        """Rewards ``[B]`` from per-token JSD ``[B, T]`` (detached here), mask ``[B, T]``, groups ``[B]``."""
        divergence = sequence_mean(token_divergence.detach(), response_mask.bool())
        self.last_divergence = divergence
        groups = torch.as_tensor(group_index, device=divergence.device)
        return group_reverse_minmax(divergence, groups, tie_tolerance=self.spec.tie_tolerance,
                                    relative_tie_tolerance=getattr(self.spec, "relative_tie_tolerance", 0.0))
