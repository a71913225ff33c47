"""The xformers attention path, checked on CPU against SDPA with a stand-in for the xformers op."""

from __future__ import annotations

import pytest
import torch

from masters.adapters import attention
from masters.errors import MastersError


class _Causal:
    pass


CALLS: list[str] = []


def _fake_memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None):
    CALLS.append(type(attn_bias).__name__)
    # Reference semantics of xformers.ops.memory_efficient_attention, on SDPA ([B, M, H, K] layout).
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    causal = isinstance(attn_bias, _Causal)
    mask = None if causal else attn_bias
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    return out.transpose(1, 2)


def test_xformers_path_matches_sdpa_on_a_padded_batch(tiny_dirs, shapes_samples, monkeypatch):
    from transformers import LlavaForConditionalGeneration

    from masters.adapters import resolve_adapter

    monkeypatch.setattr(attention, "_ops", lambda: (_fake_memory_efficient_attention, _Causal))
    attention.register_xformers_attention()
    path = tiny_dirs("llava")
    reference = resolve_adapter(path)
    xf = type(reference)(reference.spec, model=LlavaForConditionalGeneration.from_pretrained(
        str(path), attn_implementation="xformers").eval(), processor=reference.processor)
    responses = reference.response_ids([s.answer for s in shapes_samples[:3]])
    responses[0] = [5, 6] + responses[0]
    with torch.no_grad():
        a = reference.teacher_force(shapes_samples[:3], responses)
        b = xf.teacher_force(shapes_samples[:3], responses)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=1e-5)
    assert "Tensor" in CALLS  # the padded batch went through the xformers function with a bias
    assert xf.generate(shapes_samples[:2], max_new_tokens=3, temperature=0) == reference.generate(
        shapes_samples[:2], max_new_tokens=3, temperature=0)


def test_explicit_xformers_on_cpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    with pytest.raises(MastersError, match="CUDA"):
        attention.choose_attention("xformers")
    assert attention.choose_attention("auto") == "sdpa"
