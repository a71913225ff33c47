"""xformers memory-efficient attention as a transformers attention implementation.

``attn_implementation: xformers`` in an adapter spec selects it; ``auto`` picks it on CUDA when
xformers imports, SDPA otherwise (xformers has no CPU kernels). The function follows SDPA's
contract in transformers (query/key/value ``[B, H, M, K]`` in, ``[B, M, H, K]`` out) and reuses
SDPA's mask builder, so every model that runs with ``sdpa`` runs with it.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "xformers"


def _ops():
    """(memory_efficient_attention, LowerTriangularMask); a seam the CPU tests replace."""
    from xformers.ops import LowerTriangularMask, memory_efficient_attention

    return memory_efficient_attention, LowerTriangularMask


def xformers_available() -> bool:
    try:
        _ops()
    except Exception:  # ImportError, or a broken CUDA extension
        return False
    return True


def xformers_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                               attention_mask: torch.Tensor | None, dropout: float = 0.0,
                               scaling: float | None = None, is_causal: bool | None = None,
                               **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import repeat_kv

    attention, causal_mask = _ops()
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # xformers wants as many key/value heads as query heads
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # xformers layout: [B, M, H, K]
    batch, q_len, heads, _ = q.shape
    kv_len = k.shape[1]
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    bias: Any = None
    if attention_mask is not None:
        # xformers needs a float bias whose last dimension is padded to a multiple of 8; a finite
        # minimum (not -inf) keeps fully masked rows (left padding) finite, as SDPA does.
        padded = -(-kv_len // 8) * 8
        full = torch.zeros((batch, heads, q_len, padded), dtype=q.dtype, device=q.device)
        mask = attention_mask[..., :kv_len]
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, torch.finfo(q.dtype).min)
        full[..., :kv_len] = mask.to(q.dtype).expand(batch, heads, q_len, kv_len)
        bias = full[..., :kv_len]
    elif is_causal and q_len > 1:
        bias = causal_mask()
    out = attention(q, k, v, attn_bias=bias, p=dropout if module.training else 0.0, scale=scaling)
    return out, None


def register_xformers_attention() -> None:
    """Make ``attn_implementation="xformers"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, xformers_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def choose_attention(requested: str) -> str | None:
    """The ``attn_implementation`` to load with: ``auto`` -> xformers on CUDA when usable, else SDPA."""
    from masters.errors import MastersError

    cuda = torch.cuda.is_available()
    if requested == "auto":
        if cuda and xformers_available():
            register_xformers_attention()
            return NAME
        return "sdpa"
    if requested == NAME:
        if not cuda:
            raise MastersError("xformers attention needs a CUDA device (it has no CPU kernels)",
                               where="adapter.attn_implementation", fix="use `sdpa` (or `auto`) on CPU")
        if not xformers_available():
            raise MastersError("xformers is not importable here", where="adapter.attn_implementation",
                               fix="pip install 'masters-distill[gpu]', or use `sdpa`")
        register_xformers_attention()
    return requested
