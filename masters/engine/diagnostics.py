"""Per-step training diagnostics (issue 13, item 5), computed from what the step already has.

``step_diagnostics(inputs, responses, eos_ids, answer_ids)`` returns scalars for metrics.jsonl:

* ``diag/jsd_trace`` and ``diag/jsd_answer``: mean token JSD to the current (masked) teacher over the
  trace tokens and over the answer tokens (those after ``answer :``; for a response without the
  marker every token is an answer token);
* ``diag/kl_k3``: the k3 estimator against the reference (initial) student, token mean;
* ``diag/p_eos``: the student's mean probability of EOS where the response ends with it;
* ``diag/logp_positive`` / ``diag/logp_negative``: mean token log-prob of the rows with positive /
  negative advantage (GRPO advantages of the step's combined reward).

The costly ones, every ``training.diagnostics_every`` steps (:func:`costly`; they need passes the step
does not make, and change nothing that is trained):

* ``diag/jsd0_trace`` and ``diag/jsd0_answer``: the same JSD to the *unmasked* teacher (the teacher
  forced once more at level 0, then put back at its level);
* ``diag/grad_norm_<term>``: the L2 norm of each weighted loss term's gradient (one backward each,
  in one process only: a second backward under DDP, FSDP or DeepSpeed would fire their hooks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float | None:
    n = int(mask.sum())
    return float((values * mask).sum() / n) if n else None


def answer_mask(responses: Sequence[Sequence[int]], length: int, answer_ids: tuple[int, int] | None) -> torch.Tensor:
    """``[B, T]`` True at the tokens after the last ``answer :`` (all tokens when there is none)."""
    out = torch.zeros(len(responses), length, dtype=torch.bool)
    for i, r in enumerate(responses):
        start = 0
        if answer_ids is not None:
            for k in range(len(r) - 2, -1, -1):
                if (r[k], r[k + 1]) == answer_ids:
                    start = k + 2
                    break
        out[i, start:min(len(r), length)] = True
    return out


@torch.no_grad()
def step_diagnostics(inputs: Any, responses: Sequence[Sequence[int]], eos_ids: Sequence[int],
                     answer_ids: tuple[int, int] | None = None) -> dict[str, float]:
    mask = inputs.mask.bool()
    lp = inputs.student_logprobs.detach().float()
    out: dict[str, float | None] = {}
    if inputs.teacher_divergence is not None:
        out.update(_answer_trace(inputs.teacher_divergence.detach().float(), mask, responses, answer_ids, "diag/jsd"))
    if inputs.reference_logprobs is not None:
        delta = (inputs.reference_logprobs.float() - lp).masked_fill(~mask, 0.0)
        out["diag/kl_k3"] = _masked_mean(torch.exp(delta) - delta - 1.0, mask)
    eos = set(int(e) for e in eos_ids)
    ends = [(i, len(r) - 1) for i, r in enumerate(responses) if r and int(r[-1]) in eos and len(r) <= mask.shape[1]]
    if ends:
        out["diag/p_eos"] = float(torch.stack([lp[i, t].exp() for i, t in ends]).mean())
    if inputs.rewards and inputs.group_index is not None:
        from masters.objectives.losses import group_advantages
        from masters.rewards.combine import combine_rewards

        adv = group_advantages(combine_rewards(inputs.rewards, inputs.reward_weights or {}).total, inputs.group_index)
        row_lp = (lp * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        for name, rows in (("positive", adv > 0), ("negative", adv < 0)):
            if bool(rows.any()):
                out[f"diag/logp_{name}"] = float(row_lp[rows].mean())
    return {k: v for k, v in out.items() if v is not None}


def for_step(trainer: Any, inputs: Any, responses: Sequence[Sequence[int]]) -> dict[str, float]:
    """``step_diagnostics`` with the trainer's student (EOS ids, the ``answer :`` token ids)."""
    eos, marker = _token_ids(trainer)
    return step_diagnostics(inputs, responses, eos, marker)


def _token_ids(trainer: Any) -> tuple[list[int], tuple[int, int] | None]:
    """The student's EOS ids and its ``answer :`` token pair (None without one), read once per trainer."""
    ids = getattr(trainer, "_diagnostic_ids", None)
    if ids is None:
        vocab = trainer.student.vocab()
        marker = (vocab.get("answer"), vocab.get(":"))
        ids = (list(trainer.student.eos_token_ids), marker if None not in marker else None)
        trainer._diagnostic_ids = ids
    return ids


def _answer_trace(jsd: torch.Tensor, mask: torch.Tensor, responses: Sequence[Sequence[int]],
                  answer_ids: tuple[int, int] | None, prefix: str) -> dict[str, float]:
    answer = answer_mask(responses, mask.shape[1], answer_ids).to(mask.device) & mask
    out = {f"{prefix}_answer": _masked_mean(jsd, answer), f"{prefix}_trace": _masked_mean(jsd, mask & ~answer)}
    return {k: v for k, v in out.items() if v is not None}


def costly(trainer: Any, loss: Any, student_logits: torch.Tensor, samples: Sequence[Any],
           responses: Sequence[Sequence[int]], mask: torch.Tensor) -> dict[str, float]:
    """JSD to the unmasked teacher and per-term gradient norms (see the module docstring)."""
    from masters.rewards.jsd import token_jsd

    out: dict[str, float] = {}
    mask = mask.bool()
    masked = getattr(trainer, "masked", None)
    if masked is not None and getattr(trainer, "teacher", None) is not None:
        level = masked.level
        with torch.no_grad():
            try:
                masked.set_level(0)
                t0 = trainer.teacher.teacher_force(samples, responses, vocab_limit=trainer.vocab).logits
            finally:
                masked.set_level(level)
            jsd0 = token_jsd(t0.float().to(student_logits.device), student_logits.detach().float(), mask=mask,
                             vocab_size=trainer.vocab)
        out.update(_answer_trace(jsd0, mask, responses, _token_ids(trainer)[1], "diag/jsd0"))
    if trainer.accelerator.num_processes == 1:
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        for name, term in loss.terms.items():
            if not isinstance(term, torch.Tensor) or not term.requires_grad:
                continue
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            out[f"diag/grad_norm_{name}"] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads
                                                                if g is not None)))
    return out
