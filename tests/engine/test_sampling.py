"""Per-row Gumbel sampling: exact in distribution, and a row's draws ignore its batch-mates."""

from __future__ import annotations

import torch

from masters.engine.sampling import PerRowGumbelSampler, filter_top_k_top_p


def test_gumbel_max_matches_the_softmax_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    counts = torch.zeros(4)
    sampler = PerRowGumbelSampler([123], temperature=0.7)
    for _ in range(20000):
        counts[sampler(None, logits).argmax()] += 1
    expected = torch.softmax(logits[0] / 0.7, dim=-1)
    assert torch.allclose(counts / counts.sum(), expected, atol=0.01)


def test_top_k_and_top_p_remove_the_tail():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_top_k_top_p(logits, 2, 1.0)[0, 2:]).all()
    kept = ~torch.isinf(filter_top_k_top_p(logits, 0, 0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.7
    assert (~torch.isinf(filter_top_k_top_p(logits, 0, 0.1))).sum() == 1  # never empty


def test_a_rows_tokens_do_not_depend_on_its_batch():
    torch.manual_seed(0)
    scores = torch.randn(3, 50)
    alone = PerRowGumbelSampler([7], top_k=10, top_p=0.9)
    batch = PerRowGumbelSampler([99, 7, 5], top_k=10, top_p=0.9)
    for _ in range(5):  # several decoding steps
        assert alone(None, scores[1:2]).argmax(-1).item() == batch(None, scores).argmax(-1)[1].item()
