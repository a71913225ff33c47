"""The ``hf`` generation backend: transformers ``generate`` with the per-row Gumbel sampler."""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from typing import Any

from masters.interfaces import BackendCapabilities, GeneratedResponse, SamplingSettings
from masters.ratios import Ratio


class HFBackend:
    capabilities = BackendCapabilities(per_row_seeds=True, rows_equal_hf=True, behaviour_logprobs=True)

    def __init__(self, spec: Any, **context: Any) -> None:
        self.spec = spec
        self.context = context

    def open(self, model: Any, *, vocab_limit: int, masker: Any = None, levels: Sequence[Ratio] = ()) -> HFSession:
        from masters.adapters.resolve import resolve_adapter

        return HFSession(resolve_adapter(model, **self.context), vocab_limit=vocab_limit, masker=masker,
                         levels=levels)


class AdapterSession:
    """What every session over a masters adapter held in this process shares: the tokenizer,
    vocabulary and EOS ids come from the adapter, a teacher is masked in place by
    :class:`MaskedTeacher`, and closing restores its weights exactly."""

    def __init__(self, adapter: Any, *, vocab_limit: int):
        self.adapter = adapter
        self.vocab_limit = int(vocab_limit)
        self.masked = None

    def _mask(self, masker: Any, levels: Sequence[Ratio]) -> None:
        if masker is not None:
            from masters.masking.runtime import MaskedTeacher

            self.masked = MaskedTeacher.from_model(self.adapter.model, masker, levels,
                                                   maskable=self.adapter.maskable_parameters())

    # what check_compatible reads
    @property
    def tokenizer(self) -> Any:
        return self.adapter.tokenizer

    @property
    def model(self) -> Any:
        return self.adapter.model

    @property
    def eos_token_ids(self) -> list[int]:
        return list(self.adapter.eos_token_ids)

    def vocab(self) -> Mapping[str, int]:
        return self.adapter.vocab()

    def decode(self, responses: Sequence[Sequence[int]]) -> list[str]:
        return self.adapter.decode(responses)

    def close(self) -> None:
        if self.masked is not None:
            self.masked.close()
        self.masked = None
        self.adapter = None
        gc.collect()


class HFSession(AdapterSession):
    """One adapter in memory; a teacher is masked in place by :class:`MaskedTeacher`."""

    def __init__(self, adapter: Any, *, vocab_limit: int, masker: Any = None, levels: Sequence[Ratio] = ()):
        super().__init__(adapter, vocab_limit=vocab_limit)
        self._mask(masker, levels)

    def set_level(self, level: Ratio) -> None:
        if self.masked is not None:
            self.masked.set_level(level)

    def generate(self, samples: Sequence[Any], seeds: Sequence[int], settings: SamplingSettings
                 ) -> list[GeneratedResponse]:
        from masters.engine.sampling import LimitVocabulary, PerRowGumbelSampler, banned_response_ids

        if len(seeds) != len(samples):
            raise ValueError(f"{len(samples)} samples but {len(seeds)} seeds")
        processors = [LimitVocabulary(self.vocab_limit, banned_response_ids(self.adapter))]
        sampler = None
        if settings.temperature > 0:
            sampler = PerRowGumbelSampler(list(seeds), temperature=settings.temperature,
                                          top_k=settings.top_k, top_p=settings.top_p)
            processors.append(sampler)
        # The sampling happens in our logits processor: generate itself runs greedy (and
        # transformers refuses num_return_sequences > 1 without do_sample, so rows come repeated).
        outputs = self.adapter.generate(list(samples), max_new_tokens=settings.max_new_tokens, do_sample=False,
                                        repetition_penalty=settings.repetition_penalty, logits_processor=processors)
        if sampler is None:  # greedy: a point mass, log-prob 0 for every token
            return [GeneratedResponse(list(ids), [0.0] * len(ids)) for ids in outputs]
        return [GeneratedResponse(list(ids), sampler.behaviour_logprobs(i, len(ids))) for i, ids in enumerate(outputs)]
