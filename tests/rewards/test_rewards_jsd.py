"""The chunked JSD: values (scipy, TRL), chunk invariance, gradients, masks, memory shape."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from masters.rewards.jsd import jsd_loss, naive_token_jsd, reduce_token_values, sequence_mean, token_jsd

FIXTURES = Path(__file__).parent / "fixtures"


def _logits(*shape, scale=3.0, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def _scipy_jsd(teacher, student, vocab):
    p = torch.softmax(teacher[..., :vocab].double(), -1).reshape(-1, vocab).numpy()
    q = torch.softmax(student[..., :vocab].double(), -1).reshape(-1, vocab).numpy()
    # scipy returns the Jensen-Shannon *distance* (square root), natural log by default.
    return torch.from_numpy(jensenshannon(p, q, axis=1) ** 2).reshape(teacher.shape[:-1])


@pytest.mark.parametrize(
    "v_teacher, v_student, vocab, scale",
    [(50, 50, None, 1.0), (70, 64, 60, 3.0), (64, 70, 64, 8.0), (300, 257, 257, 0.1), (33, 40, 1, 3.0)],
)
def test_matches_scipy_squared_distance(v_teacher, v_student, vocab, scale):
    teacher = _logits(4, 9, v_teacher, scale=scale, seed=1)
    student = _logits(4, 9, v_student, scale=scale, seed=2)
    ours = token_jsd(teacher, student, vocab_size=vocab, chunk_size=5)
    expected = _scipy_jsd(teacher, student, vocab or v_teacher)
    assert ours.shape == (4, 9) and ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), expected, atol=2e-6, rtol=1e-5)


def test_float64_matches_scipy_tightly():
    teacher, student = _logits(6, 40, dtype=torch.float64, seed=3), _logits(6, 48, dtype=torch.float64, seed=4)
    ours = token_jsd(teacher, student, vocab_size=40, chunk_size=4)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, _scipy_jsd(teacher, student, 40), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 10_000])
def test_chunked_equals_unchunked_and_naive(chunk_size):
    teacher, student = _logits(5, 13, 97, seed=5), _logits(5, 13, 101, seed=6)
    mask = torch.rand(5, 13, generator=torch.Generator().manual_seed(0)) > 0.3
    whole = token_jsd(teacher, student, vocab_size=97, chunk_size=10_000)
    chunked = token_jsd(teacher, student, vocab_size=97, chunk_size=chunk_size)
    torch.testing.assert_close(chunked, whole, atol=0, rtol=0)  # rows are independent of chunking
    torch.testing.assert_close(chunked, naive_token_jsd(teacher, student, vocab_size=97), atol=1e-7, rtol=1e-6)
    masked = token_jsd(teacher, student, vocab_size=97, chunk_size=chunk_size, mask=mask)
    torch.testing.assert_close(masked, torch.where(mask, whole, 0.0), atol=0, rtol=0)


def test_known_values_and_bounds():
    x = _logits(3, 20, seed=7)
    assert token_jsd(x, x.clone()).abs().max() < 1e-7  # identical distributions
    # Disjoint one-hot distributions reach the maximum, ln 2.
    teacher = torch.full((2, 4), -1e4)
    student = torch.full((2, 4), -1e4)
    teacher[:, 0] = student[:, 1] = 1e4
    torch.testing.assert_close(token_jsd(teacher, student), torch.full((2,), math.log(2.0)))
    values = token_jsd(_logits(50, 30, scale=20.0, seed=8), _logits(50, 30, scale=20.0, seed=9))
    assert values.min() >= 0 and values.max() <= math.log(2.0) + 1e-6


def test_minus_infinity_logits_give_finite_values_and_gradients():
    teacher = _logits(4, 10, seed=10)
    student = _logits(4, 10, seed=11).requires_grad_()
    teacher[:, 3:6] = float("-inf")  # e.g. a vocabulary mask
    with torch.no_grad():
        student[:, 7] = float("-inf")
    values = token_jsd(teacher, student, chunk_size=3)
    assert torch.isfinite(values).all()
    torch.testing.assert_close(values.double(), _scipy_jsd(teacher, student.detach(), 10), atol=1e-6, rtol=1e-5)
    values.sum().backward()
    assert torch.isfinite(student.grad).all()
    assert (student.grad[:, 7] == 0).all()


def test_gradcheck_float64_student_and_teacher_with_mask_temperature_and_cut_vocab():
    teacher = _logits(2, 3, 11, dtype=torch.float64, seed=12).requires_grad_()
    student = _logits(2, 3, 9, dtype=torch.float64, seed=13).requires_grad_()
    mask = torch.tensor([[True, False, True], [True, True, False]])

    def fn(t, s):
        return token_jsd(t, s, vocab_size=8, chunk_size=2, mask=mask, temperature=0.7)

    assert torch.autograd.gradcheck(fn, (teacher, student))


def test_gradients_match_naive_autograd():
    teacher = _logits(3, 17, 130, seed=14).requires_grad_()
    student = _logits(3, 17, 128, seed=15).requires_grad_()
    weights = _logits(3, 17, seed=16, scale=1.0)
    (token_jsd(teacher, student, vocab_size=120, chunk_size=4) * weights).sum().backward()
    ours = teacher.grad.clone(), student.grad.clone()
    teacher.grad = student.grad = None
    (naive_token_jsd(teacher, student, vocab_size=120) * weights).sum().backward()
    for got, want in zip(ours, (teacher.grad, student.grad)):
        torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-5)
    assert (ours[0][..., 120:] == 0).all() and (ours[1][..., 120:] == 0).all()


def test_teacher_without_grad_gets_none_and_masked_rows_get_zero_gradient():
    teacher = _logits(2, 5, 16, seed=17)
    student = _logits(2, 5, 16, seed=18).requires_grad_()
    mask = torch.tensor([[True, True, False, False, True], [False, True, True, False, False]])
    token_jsd(teacher, student, mask=mask, chunk_size=2).sum().backward()
    assert teacher.grad is None
    assert (student.grad[~mask] == 0).all() and (student.grad[mask].abs().sum(-1) > 0).all()
    # Each row's softmax-gradient sums to zero over the vocabulary (shift invariance of softmax).
    torch.testing.assert_close(student.grad.sum(-1), torch.zeros(2, 5), atol=1e-7, rtol=0)


def test_bfloat16_inputs_compute_in_float32_and_return_bfloat16_gradients():
    teacher = _logits(4, 6, 64, seed=19, dtype=torch.bfloat16)
    student = _logits(4, 6, 64, seed=20, dtype=torch.bfloat16).requires_grad_()
    values = token_jsd(teacher, student, chunk_size=5)
    assert values.dtype == torch.float32
    torch.testing.assert_close(values.double(), _scipy_jsd(teacher.float(), student.detach().float(), 64), atol=2e-6, rtol=1e-5)
    values.sum().backward()
    assert student.grad.dtype == torch.bfloat16


def test_backward_saves_only_the_inputs():
    """Memory stays bounded: autograd keeps the logits (it must) and no [tokens, vocab] fp32 copy."""
    teacher = _logits(64, 512, seed=21)
    student = _logits(64, 512, seed=22).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        token_jsd(teacher, student, chunk_size=8)
    big = [t for t in saved if t is not None and t.numel() >= 64 * 512]
    assert {t.data_ptr() for t in big} <= {teacher.data_ptr(), student.data_ptr()}


def test_shape_errors_name_the_fix():
    with pytest.raises(ValueError, match="vocab_size"):
        token_jsd(torch.zeros(2, 5), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="response-token index"):
        token_jsd(torch.zeros(2, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="vocab_size 7"):
        token_jsd(torch.zeros(2, 5), torch.zeros(2, 6), vocab_size=7)
    with pytest.raises(ValueError, match="mask shape"):
        token_jsd(torch.zeros(2, 5), torch.zeros(2, 5), mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="chunk_size"):
        token_jsd(torch.zeros(2, 5), torch.zeros(2, 5), chunk_size=0)


def test_sequence_and_token_reductions():
    values = torch.tensor([[1.0, 3.0, 100.0], [4.0, 100.0, 100.0], [100.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(sequence_mean(values, mask), torch.tensor([2.0, 4.0, 0.0]))
    torch.testing.assert_close(reduce_token_values(values, mask, "sequence"), torch.tensor(2.0))
    torch.testing.assert_close(reduce_token_values(values, mask, "token"), torch.tensor(8.0 / 3))
    with pytest.raises(ValueError, match="reduction"):
        reduce_token_values(values, mask, "batchmean")


def test_jsd_loss_returns_loss_and_token_values_and_backpropagates():
    teacher, student = _logits(2, 4, 20, seed=23), _logits(2, 4, 24, seed=24).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    loss, values = jsd_loss(teacher, student, mask, vocab_size=20, chunk_size=3)
    expected = naive_token_jsd(teacher, student.detach(), vocab_size=20)
    torch.testing.assert_close(loss, (expected[0, :3].mean() + expected[1, 0]) / 2)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert values.requires_grad  # detach it before using it as a reward


# --- TRL peer -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trl_fixture():
    return json.loads((FIXTURES / "trl_jsd.json").read_text())


@pytest.mark.parametrize("peer", ["gkd", "gold"])
def test_matches_trl_generalized_jsd_loss(trl_fixture, peer):
    """TRL's ``generalized_jsd_loss(student, teacher, labels, beta=0.5)`` (fixture made by
    ``fixtures/make_trl_fixture.py``; TRL version inside). Its ``batchmean`` with labels divides the
    sum over unmasked tokens by their number: our ``"token"`` reduction. Without labels it divides
    the sum over all tokens by the batch size: ``sum(values) / B``."""
    fx = trl_fixture
    teacher = torch.tensor(fx["teacher_logits"], dtype=torch.float32)
    student = torch.tensor(fx["student_logits"], dtype=torch.float32)
    B, T = teacher.shape[:2]
    mask = torch.arange(T)[None, :] < torch.tensor(fx["lengths"])[:, None]
    values = token_jsd(teacher, student, vocab_size=fx["vocab_size"], chunk_size=4)

    torch.testing.assert_close(values, torch.tensor(fx[f"{peer}_per_token"]), atol=1e-6, rtol=1e-5)
    token_mean = reduce_token_values(values, mask, "token")
    assert abs(float(token_mean) - fx[f"{peer}_batchmean_with_labels"]) < 1e-6
    assert abs(float(values.sum() / B) - fx[f"{peer}_batchmean_no_labels"]) < 1e-5
    loss, _ = jsd_loss(teacher, student, mask, vocab_size=fx["vocab_size"], reduction="token")
    assert abs(float(loss) - fx[f"{peer}_batchmean_with_labels"]) < 1e-6
    assert fx["trl_version"]


def test_trl_fixture_is_plain_json_with_provenance(trl_fixture):
    assert trl_fixture["beta"] == 0.5 and trl_fixture["temperature"] == 1.0
    assert np.asarray(trl_fixture["teacher_logits"]).shape[-1] > trl_fixture["vocab_size"]
