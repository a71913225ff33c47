"""Evaluation: greedy answers of any model on a held-out split, scored by the accuracy rewards."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from masters.interfaces import ScoredResponse


@dataclass
class EvalResult:
    model: str
    split: str
    n: int
    accuracy: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    examples: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_model(model_path: str | Path, samples: Sequence[Any], reward_specs: Sequence[Any], *,
                   adapter: Any = None, batch_size: int = 16, max_new_tokens: int = 16, split: str = "test",
                   progress: Any = None, context: Mapping[str, Any] | None = None,
                   backend: Any = None) -> EvalResult:
    """Greedy-decode every sample and score it with each accuracy reward (mean over samples).

    Decoding bans what bank generation bans (padding, image placeholders, special tokens other than
    EOS: :func:`masters.engine.sampling.banned_response_ids`). ``context`` goes to each reward's
    ``build`` (the LLM judge's ``default_model_path``); rewards are built before the decode, so a
    judge that cannot be built fails in seconds, not after the whole split. ``backend`` (a
    generation backend spec, e.g. ``vllm``) decodes through that backend's session instead of the
    adapter's ``generate``: the same greedy rows where the backend's rows equal the ``hf`` backend's.
    """
    from masters.adapters.resolve import resolve_adapter
    from masters.engine.sampling import LimitVocabulary, banned_response_ids
    from masters.errors import DataError
    from masters.rewards.combine import reward_keys

    if not len(samples):
        raise DataError(f"the {split} split is empty: there is nothing to evaluate", where=f"{split} split",
                        fix=f"give the task a non-empty {split} split (e.g. task.n_test, or a data file with "
                        f"{split} records), or evaluate another --split")
    rewards = [(key, spec.build(**(context or {}))) for key, spec in zip(reward_keys(reward_specs), reward_specs)
               if type(spec).signal == "accuracy"]
    if not rewards:
        raise DataError("no accuracy reward to evaluate with", where="rewards",
                        fix="add an accuracy reward (exact_match, numeric, multiple_choice, llm_judge) to rewards")
    started = time.perf_counter()
    if backend is not None and adapter is None:
        texts = _decode_with_backend(backend, model_path, samples, batch_size, max_new_tokens, progress)
        return _score(model_path, split, samples, texts, rewards, started)
    adapter = adapter or resolve_adapter(str(model_path))
    banned = [LimitVocabulary(len(adapter.vocab()), banned_response_ids(adapter))]
    was = adapter.model.training
    adapter.model.eval()
    texts: list[str] = []
    task = progress.add_task(f"evaluate {Path(str(model_path)).name}", total=len(samples)) if progress else None
    for start in range(0, len(samples), batch_size):
        chunk = list(samples[start:start + batch_size])
        ids = adapter.generate(chunk, max_new_tokens=max_new_tokens, temperature=0.0, logits_processor=banned)
        texts.extend(adapter.decode(ids))
        if progress:
            progress.advance(task, len(chunk))
    adapter.model.train(was)
    return _score(model_path, split, samples, texts, rewards, started)


def _decode_with_backend(backend: Any, model_path: str | Path, samples: Sequence[Any], batch_size: int,
                         max_new_tokens: int, progress: Any) -> list[str]:
    from masters.adapters.resolve import load_tokenizer
    from masters.interfaces import SamplingSettings

    vocab = len(load_tokenizer(str(model_path)).get_vocab())
    session = backend.build().open({"path": str(model_path)}, vocab_limit=vocab)
    settings = SamplingSettings(temperature=0.0, max_new_tokens=max_new_tokens)
    texts: list[str] = []
    task = progress.add_task(f"evaluate {Path(str(model_path)).name}", total=len(samples)) if progress else None
    try:
        for start in range(0, len(samples), batch_size):
            chunk = list(samples[start:start + batch_size])
            texts.extend(session.decode([g.token_ids for g in session.generate(chunk, [0] * len(chunk), settings)]))
            if progress:
                progress.advance(task, len(chunk))
    finally:
        session.close()
    return texts


def _score(model_path: str | Path, split: str, samples: Sequence[Any], texts: list[str], rewards: list[Any],
           started: float) -> EvalResult:
    items = [ScoredResponse(question=s.question, response=t, reference=s.answer or "", choices=s.choices,
                            metadata=dict(s.metadata)) for s, t in zip(samples, texts)]
    result = EvalResult(str(model_path), split, len(samples))
    for key, reward in rewards:
        values = [v for v in reward.score(items) if v is not None]
        result.accuracy[key] = sum(values) / len(values) if values else float("nan")  # nan: none scorable
    result.examples = [{"question": s.question, "reference": s.answer or "", "response": t}
                       for s, t in list(zip(samples, texts))[:5]]
    result.seconds = time.perf_counter() - started
    return result


def write_result(result: EvalResult, path: str | Path) -> None:
    from masters.files import atomic_write_json

    atomic_write_json(path, result.to_json())
