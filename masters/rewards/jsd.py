"""Chunked Jensen-Shannon divergence between teacher and student token distributions.

``JSD(P, Q) = 0.5 * KL(P || M) + 0.5 * KL(Q || M)`` with ``M = (P + Q) / 2`` and natural logs, so
it lies in ``[0, ln 2]``. ``P = softmax(teacher / T)``, ``Q = softmax(student / T)``.

The same per-token values serve two purposes (design decision 7): the distillation *loss*
(differentiable w.r.t. the student, and the teacher when it requires grad) and, detached, the
distillation *reward*. With Qwen's 152,064-token vocabulary a naive implementation materialises
several fp32 ``[tokens, vocab]`` tensors in the forward and keeps them for the backward; here the
forward walks ``chunk_size`` rows at a time in fp32 and saves nothing but the inputs, and the
backward recomputes each chunk and writes its closed-form gradient straight into the gradient
tensor (which autograd needs anyway), so extra memory is a few ``[chunk_size, vocab]`` buffers
whatever the number of tokens.

Vocabularies (design decision 12): teacher and student families pad their embeddings to different
row counts. Pass ``vocab_size`` = the shared vocabulary length (from comparing the tokenizers'
token-to-id maps); both logits are cut to it before any softmax. Without ``vocab_size`` the last
dimensions must already agree.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

__all__ = [
    "token_jsd",
    "naive_token_jsd",
    "sequence_mean",
    "reduce_token_values",
    "jsd_loss",
]

_LN2 = math.log(2.0)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    # fp32 at least (bf16 logits lose the small differences JSD is made of); float64 stays float64
    # so torch.autograd.gradcheck can run on this function.
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class _Workspace:
    """Chunk buffers allocated once per call and reused: fresh ``[chunk, V]`` tensors every chunk
    would each be a new mmap (they exceed malloc's reuse threshold) and page-fault again."""

    def __init__(self, rows: int, vocab: int, dtype: torch.dtype, device: torch.device):
        new = lambda: torch.empty(rows, vocab, dtype=dtype, device=device)  # noqa: E731
        self.x, self.log_p, self.log_q, self.p, self.q, self.log_m = new(), new(), new(), new(), new(), new()

    def view(self, n: int) -> _Workspace:
        out = object.__new__(_Workspace)
        for name, buf in vars(self).items():
            setattr(out, name, buf[:n])
        return out


def _fill_terms(ws: _Workspace, t: torch.Tensor, s: torch.Tensor, temperature: float) -> None:
    """Log-probs and probs of ``t/T`` and ``s/T`` and the log of their mixture ``M``, in ``ws``.

    Log values are floored at a finite value so that a ``-inf`` logit (a vocabulary mask) gives
    ``0 * finite = 0`` below instead of ``0 * inf = nan``; a probability of exactly 0 contributes
    nothing either way, and NaN logits still propagate.
    """
    floor = torch.finfo(ws.x.dtype).min / 4
    for logits, log_a, a in ((t, ws.log_p, ws.p), (s, ws.log_q, ws.q)):
        if temperature != 1.0 or logits.dtype != log_a.dtype:
            logits = ws.x.copy_(logits).div_(temperature)
        torch.log_softmax(logits, -1, out=log_a).clamp_min_(floor)
        torch.exp(log_a, out=a)
    # log M = log(P + Q) - log 2. Where both probabilities underflow to 0, log M is the floor and
    # both terms vanish (their probability is 0); elsewhere M >= P/2 keeps it accurate.
    torch.add(ws.p, ws.q, out=ws.log_m).log_().sub_(_LN2).clamp_min_(floor)


class _ChunkedJSD(torch.autograd.Function):
    """Per-row JSD of ``teacher[rows, :V]`` and ``student[rows, :V]`` with a recomputing backward."""

    @staticmethod
    def forward(ctx, teacher, student, rows, vocab_size, chunk_size, temperature):
        dtype = _compute_dtype(teacher, student)
        n = rows.numel() if rows is not None else teacher.shape[0]
        out = torch.empty(n, dtype=dtype, device=student.device)
        workspace = _Workspace(min(chunk_size, n), vocab_size, dtype, student.device)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            ws = workspace.view(stop - start)
            _fill_terms(ws, *_gather(teacher, student, rows, start, stop, vocab_size), temperature)
            # KL(P||M) + KL(Q||M) = sum P (log P - log M) + Q (log Q - log M), in place.
            kl = ws.log_p.sub_(ws.log_m).mul_(ws.p).sum(-1)
            kl += ws.log_q.sub_(ws.log_m).mul_(ws.q).sum(-1)
            # Rounding can push a tiny divergence below 0; a divergence is not negative.
            out[start:stop] = kl.mul_(0.5).clamp_min_(0.0)
        del workspace
        ctx.save_for_backward(teacher, student, rows)
        ctx.config = (vocab_size, chunk_size, temperature, dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        teacher, student, rows = ctx.saved_tensors
        vocab_size, chunk_size, temperature, dtype = ctx.config
        need_t, need_s = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_t = torch.zeros_like(teacher) if need_t else None
        grad_s = torch.zeros_like(student) if need_s else None
        n = grad_out.shape[0]
        workspace = _Workspace(min(chunk_size, n), vocab_size, dtype, student.device)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            ws = workspace.view(stop - start)
            _fill_terms(ws, *_gather(teacher, student, rows, start, stop, vocab_size), temperature)
            # d JSD / d q_i = 0.5 * (log q_i - log m_i) =: g_i; through the softmax:
            # d JSD / d z_j = q_j * (g_j - sum_i q_i g_i), and 1/T for the temperature.
            scale = grad_out[start:stop].to(dtype).unsqueeze(-1) * (0.5 / temperature)
            for need, log_a, a, grad in ((need_t, ws.log_p, ws.p, grad_t), (need_s, ws.log_q, ws.q, grad_s)):
                if not need:
                    continue
                a_g = log_a.sub_(ws.log_m).mul_(a)  # a * (log a - log m), in place
                a_g.sub_(a.mul_(a_g.sum(-1, keepdim=True))).mul_(scale)
                _scatter(grad, rows, start, stop, vocab_size, a_g)
        return grad_t, grad_s, None, None, None, None


def _gather(teacher, student, rows, start, stop, vocab_size):
    if rows is None:
        return teacher[start:stop, :vocab_size], student[start:stop, :vocab_size]
    index = rows[start:stop]
    return teacher.index_select(0, index)[:, :vocab_size], student.index_select(0, index)[:, :vocab_size]


def _scatter(grad, rows, start, stop, vocab_size, value):
    target = grad[:, :vocab_size]  # a view: columns past the shared vocabulary keep a zero gradient
    if rows is None:
        target[start:stop] += value  # casts to the gradient's dtype (bf16 logits get bf16 grads)
    else:
        # index_add_ so that a row listed twice gets both contributions.
        target.index_add_(0, rows[start:stop], value.to(grad.dtype))


def _check_shapes(teacher: torch.Tensor, student: torch.Tensor, vocab_size: int | None) -> int:
    if teacher.shape[:-1] != student.shape[:-1]:
        raise ValueError(
            f"teacher logits {tuple(teacher.shape)} and student logits {tuple(student.shape)} differ "
            "before the vocabulary dimension: align them by response-token index first (decision 12)"
        )
    if vocab_size is None:
        if teacher.shape[-1] != student.shape[-1]:
            raise ValueError(
                f"teacher vocabulary {teacher.shape[-1]} != student vocabulary {student.shape[-1]}: pass "
                "vocab_size = the length of the shared token-to-id map to cut both (decision 12)"
            )
        return int(teacher.shape[-1])
    vocab_size = int(vocab_size)
    if not 0 < vocab_size <= min(teacher.shape[-1], student.shape[-1]):
        raise ValueError(
            f"vocab_size {vocab_size} must be in 1..min(teacher {teacher.shape[-1]}, student {student.shape[-1]})"
        )
    return vocab_size


def token_jsd(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    *,
    vocab_size: int | None = None,
    mask: torch.Tensor | None = None,
    chunk_size: int = 128,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token JSD between ``softmax(teacher/T)`` and ``softmax(student/T)`` (natural log).

    Args:
        teacher_logits: ``[..., V_t]``, any float dtype (computed in fp32, or fp64 for fp64 inputs).
        student_logits: ``[..., V_s]`` with the same leading shape.
        vocab_size: shared vocabulary length ``V``; both are cut to ``[..., :V]``. Required when
            ``V_t != V_s``.
        mask: optional bool ``[...]``; only those positions are computed (padding and prompt tokens
            cost nothing), the others are 0 in the result and get no gradient.
        chunk_size: rows per fp32 chunk; extra memory is about ``6 * chunk_size * V * 4`` bytes
            (6 reused buffers; 445 MiB at 128 x 152,064).
        temperature: softmax temperature ``T`` (1.0 in the method).

    Returns:
        fp32 (or fp64) tensor of shape ``[...]``. Differentiable w.r.t. both logits.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    vocab = _check_shapes(teacher_logits, student_logits, vocab_size)
    lead = teacher_logits.shape[:-1]
    # reshape, not contiguous(): a view when possible, so no copy of the logits is made.
    teacher = teacher_logits.reshape(-1, teacher_logits.shape[-1])
    student = student_logits.reshape(-1, student_logits.shape[-1])
    rows = None
    if mask is not None:
        if mask.shape != lead:
            raise ValueError(f"mask shape {tuple(mask.shape)} != logits leading shape {tuple(lead)}")
        rows = mask.reshape(-1).nonzero().squeeze(-1).to(student.device)
    values = _ChunkedJSD.apply(teacher, student, rows, vocab, chunk_size, float(temperature))
    if rows is None:
        return values.reshape(lead)
    full = values.new_zeros(teacher.shape[0])
    return full.index_put((rows,), values).reshape(lead)


def naive_token_jsd(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    *,
    vocab_size: int | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Reference implementation: full-vocabulary fp32 softmaxes at once, plain autograd.

    Kept for tests and ``benchmarks/jsd.py``; use :func:`token_jsd` in training (same values, far
    less memory).
    """
    vocab = _check_shapes(teacher_logits, student_logits, vocab_size)
    dtype = _compute_dtype(teacher_logits, student_logits)
    t = teacher_logits[..., :vocab].to(dtype)
    s = student_logits[..., :vocab].to(dtype)
    if temperature != 1.0:
        t, s = t / temperature, s / temperature
    log_p = torch.log_softmax(t, dim=-1)
    log_q = torch.log_softmax(s, dim=-1)
    log_m = torch.logaddexp(log_p, log_q) - _LN2
    p, q = log_p.exp(), log_q.exp()
    # where(): a -inf logit gives 0 * -inf = nan in the product; its probability is 0, so is its term.
    kl_p = torch.where(p > 0, p * (log_p - log_m), 0.0).sum(-1)
    kl_q = torch.where(q > 0, q * (log_q - log_m), 0.0).sum(-1)
    return 0.5 * (kl_p + kl_q)


def sequence_mean(token_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``token_values[b, t]`` over the response tokens ``mask[b, t]`` of each row: ``[B]``.

    A row without response tokens gets 0 (it has nothing to diverge on). With EOS teacher-forced
    (decision 12) every banked response has at least one token.
    """
    if token_values.shape != mask.shape:
        raise ValueError(f"values {tuple(token_values.shape)} and mask {tuple(mask.shape)} differ in shape")
    weights = mask.to(token_values.dtype)
    return (token_values * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)


def reduce_token_values(
    token_values: torch.Tensor,
    mask: torch.Tensor,
    reduction: Literal["sequence", "token"] = "sequence",
) -> torch.Tensor:
    """Scalar mean of per-token values (design decision 6).

    ``"sequence"`` (default): mean over each response's tokens, then over responses, so a long
    response weighs as much as a short one. ``"token"``: mean over all response tokens of the
    batch. TRL's GKD/GOLD ``generalized_jsd_loss(..., labels=...)`` with ``reduction="batchmean"``
    is the ``"token"`` mean.
    """
    if reduction == "sequence":
        return sequence_mean(token_values, mask).mean()
    if reduction == "token":
        weights = mask.to(token_values.dtype)
        return (token_values * weights).sum() / weights.sum().clamp_min(1.0)
    raise ValueError(f"reduction must be 'sequence' or 'token', got {reduction!r}")


def jsd_loss(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    vocab_size: int | None = None,
    reduction: Literal["sequence", "token"] = "sequence",
    chunk_size: int = 128,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The distillation loss and its per-token JSD, from one chunked pass.

    ``teacher_logits``/``student_logits`` are ``[B, T, V_*]`` aligned by response-token index and
    ``response_mask`` is ``[B, T]``. Returns ``(loss, token_values)``; pass
    ``token_values.detach()`` to :meth:`JSDDistillReward.from_token_divergence` so the reward
    costs no second pass (decision 7).
    """
    mask = response_mask.bool()
    values = token_jsd(
        teacher_logits, student_logits, vocab_size=vocab_size, mask=mask, chunk_size=chunk_size,
        temperature=temperature,
    )
    return reduce_token_values(values, mask, reduction), values
