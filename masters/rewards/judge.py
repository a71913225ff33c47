"""The LLM-as-a-judge accuracy reward (method.md section 5): the paper's two-step chain.

1. The judging prompt shows question, reference and response and asks for a short justification
   and then ``<answer>0</answer>`` or ``<answer>1</answer>``.
2. When that verdict is unclear, the parsing prompt shows the judge its own output and asks for a
   bare 0 or 1.
3. Still unclear: ``None`` (the row stays unscored and is judged again next run) or 0, as the
   spec's ``unparseable`` says.

The judge is either a VLM adapter, used text-only and greedy (by default the run's unmasked
teacher), or an OpenAI-compatible HTTP endpoint (a vLLM server). An endpoint that cannot be
reached gives ``None`` for the items it could not judge, after retries; the scoring stage keeps
those rows unscored and retries them on the next run. Counters in :attr:`LLMJudgeReward.stats`.

Build context (``spec.build(**context)``), all optional:

* ``judge_adapter``: an adapter object (``generate`` + ``decode``) to judge with; wins over paths.
* ``default_model_path``: the unmasked teacher's checkpoint, used when the spec's ``model`` is null.
* ``device``: where an adapter loaded from a path is placed.
* ``sleep``: replaces ``time.sleep`` between HTTP retries (tests).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from masters.errors import MastersError
from masters.interfaces import ScoredResponse
from masters.rewards.judge_client import ChatClient, JudgeUnavailable
from masters.rewards.judge_prompts import format_choices, parse_bare_verdict, parse_tagged_verdict, render

__all__ = ["JudgeStats", "LLMJudgeReward"]

log = logging.getLogger("masters.rewards.judge")


@dataclass
class JudgeStats:
    """What the judge did, summed over every ``score`` call of one reward object."""

    judged: int = 0  # items given a 0/1 verdict (either step)
    second_prompt: int = 0  # ... of which the parsing prompt resolved
    unparseable: int = 0  # both steps unclear (None or 0, per the spec's `unparseable`)
    failed: int = 0  # the judge could not be reached: left unscored
    empty: int = 0  # empty responses, scored 0 without asking the judge
    requests: int = 0  # prompts sent (both steps)
    retries: int = 0  # HTTP retries

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def line(self) -> str:
        return (f"judged {self.judged} ({self.second_prompt} by the parsing prompt), unparseable "
                f"{self.unparseable}, failed {self.failed}, empty {self.empty}, requests {self.requests}, "
                f"retries {self.retries}")


# A batch completer: prompts in, replies out; None for a prompt the judge could not answer.
Completer = Callable[[Sequence[str]], list["str | None"]]


class LLMJudgeReward:
    """Accuracy reward from an LLM judge; see the module docstring for the chain and the context."""

    def __init__(self, spec: Any, *, judge_adapter: Any = None, default_model_path: str | None = None,
                 device: Any = None, sleep: Callable[[float], None] | None = None, **_context: Any):
        self.spec = spec
        self.stats = JudgeStats()
        self._adapter = judge_adapter
        self._device = device
        self._client: ChatClient | None = None
        self._model_path: str | None = None
        if spec.backend == "http":
            kwargs = {"sleep": sleep} if sleep is not None else {}
            self._client = ChatClient(spec.base_url, model_name=spec.model_name, api_key_env=spec.api_key_env,
                                      timeout_s=spec.timeout_s, max_retries=spec.max_retries,
                                      retry_backoff_s=spec.retry_backoff_s, max_tokens=spec.max_new_tokens,
                                      **kwargs)
            self.endpoint = self._client.url
        elif judge_adapter is not None:
            self.endpoint = f"adapter {type(judge_adapter).__name__}"
        else:
            self._model_path = spec.model or default_model_path
            if not self._model_path:
                raise MastersError(
                    "the adapter judge has no model: the spec's `model` is null and no default model "
                    "(the run's unmasked teacher) was given",
                    where="reward llm_judge",
                    fix="set `model: /path/to/checkpoint`, or `backend: http` with `base_url`; the engine "
                    "passes default_model_path=<teacher checkpoint> when it builds the judge",
                )
            from masters.adapters.resolve import read_checkpoint_config

            read_checkpoint_config(self._model_path)  # fail now, not after the first batch
            self.endpoint = f"adapter {self._model_path}"

    # -- public ----------------------------------------------------------------------------------
    def score(self, items: Sequence[ScoredResponse]) -> list[float | None]:
        before = JudgeStats(**self.stats.as_dict())
        retries_before = self._client.retries if self._client is not None else 0
        out: list[float | None] = [None] * len(items)
        todo = []
        for i, item in enumerate(items):
            if not item.response.strip():
                out[i] = 0.0
                self.stats.empty += 1
            else:
                todo.append(i)
        if todo:
            complete = self._complete_http if self._client is not None else self._complete_adapter
            for i, value in zip(todo, self._chain([items[i] for i in todo], complete)):
                out[i] = value
        if self._client is not None:
            self.stats.retries += self._client.retries - retries_before
        if items:
            delta = {k: v - getattr(before, k) for k, v in self.stats.as_dict().items()}
            log.info("llm_judge (%s): %s", self.endpoint, JudgeStats(**delta).line())
        return out

    # -- the chain --------------------------------------------------------------------------------
    def _chain(self, items: Sequence[ScoredResponse], complete: Completer) -> list[float | None]:
        spec = self.spec
        slots = [dict(question=it.question, reference=it.reference, response=it.response,
                      choices=format_choices(it.choices)) for it in items]
        first = complete([render(spec.judge_prompt, **s) for s in slots])
        verdicts: list[int | None] = [None] * len(items)
        unclear = []
        for i, reply in enumerate(first):
            if reply is None:
                continue
            verdicts[i] = parse_tagged_verdict(reply)
            if verdicts[i] is None:
                unclear.append(i)
        if unclear:
            second = complete([render(spec.parse_prompt, judgment=first[i], **slots[i]) for i in unclear])
            for i, reply in zip(unclear, second):
                if reply is None:
                    first[i] = None  # the parsing step could not be reached: unscored, like a failure
                    continue
                verdicts[i] = parse_bare_verdict(reply)
                if verdicts[i] is not None:
                    self.stats.second_prompt += 1
        out: list[float | None] = []
        for i, verdict in enumerate(verdicts):
            if first[i] is None:
                self.stats.failed += 1
                out.append(None)
            elif verdict is None:
                self.stats.unparseable += 1
                out.append(0.0 if spec.unparseable == "zero" else None)
            else:
                self.stats.judged += 1
                out.append(float(verdict))
        return out

    # -- backends ---------------------------------------------------------------------------------
    def _complete_adapter(self, prompts: Sequence[str]) -> list[str | None]:
        from masters.data.types import VQASample

        adapter = self._load_adapter()
        replies: list[str | None] = []
        size = self.spec.batch_size
        for start in range(0, len(prompts), size):
            chunk = prompts[start:start + size]
            samples = [VQASample(id=f"llm-judge-{start + k}", images=(), question=p) for k, p in enumerate(chunk)]
            ids = adapter.generate(samples, max_new_tokens=self.spec.max_new_tokens, temperature=0.0)
            replies.extend(adapter.decode(ids))
            self.stats.requests += len(chunk)
        return replies

    def _load_adapter(self) -> Any:
        if self._adapter is None and getattr(self.spec, "generation_backend", None):
            from masters.backends.vllm import SessionJudgeAdapter
            from masters.config import validate_component

            backend = validate_component("backend", self.spec.generation_backend, where="llm_judge.generation_backend")
            self._adapter = SessionJudgeAdapter(backend, self._model_path)
        if self._adapter is None:  # lazily: building the reward (validation, listing) loads no weights
            from masters.adapters.resolve import resolve_adapter

            context = {"device": self._device} if self._device is not None else {}
            self._adapter = resolve_adapter(self._model_path, **context)
        return self._adapter

    def _complete_http(self, prompts: Sequence[str]) -> list[str | None]:
        client = self._client
        assert client is not None
        replies: list[str | None] = [None] * len(prompts)
        breaker = _Breaker(self.spec.give_up_after)
        errors: list[str] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            if breaker.open:
                return
            try:
                replies[i] = client.complete(prompts[i])
                breaker.success()
            except JudgeUnavailable as exc:
                with lock:
                    errors.append(str(exc))
                breaker.failure()

        requests_before = client.requests
        workers = max(1, min(self.spec.concurrency, len(prompts)))
        if workers == 1:
            for i in range(len(prompts)):
                one(i)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-judge") as pool:
                list(pool.map(one, range(len(prompts))))
        self.stats.requests += client.requests - requests_before
        if errors:
            skipped = sum(r is None for r in replies) - len(errors)
            log.warning("llm_judge: %d of %d prompts got no answer from %s (left unscored; the next run retries "
                        "them)%s; first error: %s", len(errors) + skipped, len(prompts), client.url,
                        f", {skipped} not sent after {breaker.limit} failures in a row" if skipped else "",
                        errors[0])
        return replies


class _Breaker:
    """Stops sending after ``limit`` prompts in a row failed every retry (an endpoint that is down)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.run = 0
        self.open = False
        self._lock = threading.Lock()

    def success(self) -> None:
        with self._lock:
            self.run = 0

    def failure(self) -> None:
        with self._lock:
            self.run += 1
            if self.limit and self.run >= self.limit:
                self.open = True
