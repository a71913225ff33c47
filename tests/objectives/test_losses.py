"""The objective against hand calculations on a tiny batch."""

from __future__ import annotations

import math

import torch

from masters.objectives.losses import group_advantages, masters_loss


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 2.0, 5.0, 5.0])
    groups = torch.tensor([0, 0, 0, 7, 7])
    adv = group_advantages(rewards, groups, eps=0.0)
    # group 0: mean 1, unbiased std 1 -> (0, -1, 1); group 7 all equal -> 0
    assert torch.allclose(adv, torch.tensor([0.0, -1.0, 1.0, 0.0, 0.0]))


def test_loss_terms_by_hand():
    lp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([1.0, -1.0])
    ref = torch.tensor([[-1.5, -2.0], [-0.5, 0.0]])
    jsd = torch.tensor([[0.2, 0.4], [0.1, 9.9]])  # the masked token (9.9) must not count
    terms = masters_loss(lp, mask, adv, reference_logprobs=ref, token_jsd=jsd, beta=0.1, distill_weight=1.0)
    # policy per response: mean(-A * 1) -> -1 and +1 -> mean 0
    assert math.isclose(float(terms.policy), 0.0, abs_tol=1e-7)
    # k3: delta = ref - lp = (-0.5, 0) | (0): e^-0.5 + 0.5 - 1 = 0.10653; response means 0.05327, 0
    k3 = math.exp(-0.5) + 0.5 - 1
    assert math.isclose(float(terms.kl), (k3 / 2 + 0) / 2, rel_tol=1e-6)
    assert math.isclose(float(terms.distill), (0.3 + 0.1) / 2, rel_tol=1e-6)
    assert math.isclose(float(terms.total), 0.1 * float(terms.kl) + float(terms.distill), rel_tol=1e-6)
    terms.total.backward()
    # d/dlp of policy: -A / (tokens in response) / responses; of k3: (1 - e^delta) * 0.1 / n / 2
    expected = torch.tensor([
        [-1 / 2 / 2 + 0.1 * (1 - math.exp(-0.5)) / 2 / 2, -1 / 2 / 2],
        [1 / 1 / 2, 0.0],
    ])
    assert torch.allclose(lp.grad, expected, atol=1e-6)


def test_token_reduction_weights_every_token_equally():
    lp = torch.zeros(2, 3)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    jsd = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    seq = masters_loss(lp, mask, torch.zeros(2), token_jsd=jsd, beta=0.0, reduction="sequence").distill
    tok = masters_loss(lp, mask, torch.zeros(2), token_jsd=jsd, beta=0.0, reduction="token").distill
    assert math.isclose(float(seq), 0.5) and math.isclose(float(tok), 0.75)


def test_kl_is_zero_when_student_equals_reference():
    lp = torch.randn(3, 4)
    terms = masters_loss(lp, torch.ones(3, 4, dtype=torch.bool), torch.randn(3), reference_logprobs=lp.clone(),
                         beta=0.1, distill_weight=0.0)
    assert float(terms.kl) == 0.0


def test_negative_advantages_full_probability_weighted_and_zero_by_hand():
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([1.0, -2.0])

    def policy_grad(mode):
        lp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]], requires_grad=True)
        masters_loss(lp, mask, adv, beta=0.0, distill_weight=0.0, negative_advantages=mode).policy.backward()
        return lp.grad

    # d/dlp: -A / (tokens in response) / responses; a pushed-down token is scaled by p = e^lp when
    # probability-weighted (so the push fades as p -> 0), and vanishes when negatives are zeroed
    rewarded = [-1 / 2 / 2, -1 / 2 / 2]
    assert torch.allclose(policy_grad("full"), torch.tensor([rewarded, [2 / 1 / 2, 0.0]]))
    assert torch.allclose(policy_grad("probability_weighted"), torch.tensor([rewarded, [math.exp(-0.5) * 2 / 2, 0.0]]))
    assert torch.allclose(policy_grad("zero"), torch.tensor([rewarded, [0.0, 0.0]]))
