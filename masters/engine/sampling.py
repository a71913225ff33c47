"""Per-row reproducible sampling for batched ``generate`` (the bank's determinism rests on it).

transformers samples every row of a batch from one RNG stream, so a row's response depends on
which other rows share its batch: resuming a half-written bank, or adding questions, would change
responses already defined by their keys. Here each row owns a ``torch.Generator`` seeded from its
key, and sampling is the Gumbel-max trick on top of greedy decoding:
``argmax(log_softmax(z / T) + G)`` with ``G ~ Gumbel(0, 1)`` is an exact draw from
``softmax(z / T)``. Top-k and top-p filtering set logits to ``-inf`` before the noise is added,
so the draw is from the filtered distribution, as with ``do_sample=True``. Each step consumes
exactly ``vocab`` uniforms per row, so a row's stream never depends on its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class PerRowGumbelSampler:
    """A logits processor: temperature, top-k, top-p, then per-row Gumbel noise.

    Use with ``generate(do_sample=False, logits_processor=[sampler])``; repetition penalty stays
    a generation-config setting (transformers applies it before custom processors). The sampler
    must be the last processor; it records the behaviour log-prob of every sampled token
    (:meth:`behaviour_logprobs`), which TOPR uses as mu.
    """

    def __init__(self, seeds: Sequence[int], *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
        if temperature <= 0:
            raise ValueError("temperature must be positive for sampling; use greedy decoding for 0")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.behaviour: list[torch.Tensor] = []  # one [rows] tensor per generation step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"sampler built for {len(self.generators)} rows, got a batch of {scores.shape[0]}")
        logits = scores.float() / self.temperature
        logits = filter_top_k_top_p(logits, self.top_k, self.top_p)
        uniforms = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniforms.clamp(min=1e-20, max=1 - 1e-7)))
        logprobs = torch.log_softmax(logits, dim=-1)
        out = logprobs + gumbel.to(logits.device)
        # generate takes the argmax of what we return (we are the last processor), so this is the
        # sampled token; its log-prob under the filtered, renormalised distribution is mu.
        chosen = out.argmax(dim=-1, keepdim=True)
        self.behaviour.append(logprobs.gather(-1, chosen).squeeze(-1).detach().cpu())
        return out

    def behaviour_logprobs(self, row: int, n_tokens: int) -> list[float]:
        """Per generated token of ``row``: the log-prob of the sampled token under the distribution
        actually sampled from (after the processors before this one, e.g. the repetition penalty,
        and this one's temperature, top-k and top-p, renormalised). The first ``n_tokens`` steps."""
        if n_tokens > len(self.behaviour):
            raise ValueError(f"row {row} has {n_tokens} tokens but only {len(self.behaviour)} steps were sampled")
        return [float(step[row]) for step in self.behaviour[:n_tokens]]


class LimitVocabulary:
    """Forbid ids a response must not hold: ids past the tokenizer (padded embedding rows are no
    tokens, and the student may not have them) and special tokens other than EOS (an image
    placeholder in a response would break teacher forcing, a chat-control token the template)."""

    def __init__(self, vocab_size: int, banned_ids: Sequence[int] = ()):
        self.vocab_size = int(vocab_size)
        self.banned = sorted({int(i) for i in banned_ids if 0 <= int(i) < vocab_size})

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        scores[..., self.vocab_size:] = float("-inf")
        if self.banned:
            scores[..., self.banned] = float("-inf")
        return scores


def banned_response_ids(adapter: Any) -> list[int]:
    """Special tokens a response may not contain: every special id but the EOS ids."""
    special = set(adapter.tokenizer.all_special_ids)
    image = getattr(adapter, "image_token_id", None)
    if isinstance(image, int):
        special.add(image)
    return sorted(special - set(adapter.eos_token_ids))


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k and outside the top-p nucleus to -inf (keeps at least one)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sampling_kwargs(sampler: Any | None, repetition_penalty: float) -> dict[str, Any]:
    """``generate`` keyword arguments for per-row sampling (or greedy when ``sampler`` is None)."""
    kwargs: dict[str, Any] = {"do_sample": False, "repetition_penalty": repetition_penalty,
                              "temperature": None, "top_p": None, "top_k": None}
    if sampler is not None:
        kwargs["logits_processor"] = [sampler]
    return kwargs
