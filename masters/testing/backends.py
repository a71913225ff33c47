"""Conformance checks every generation backend must pass, on a tiny random checkpoint.

``check_backend("my_backend")`` runs them all; ``run_backend_check(name, check)`` runs one, for a
pytest parametrisation over ``registered_backends()`` x ``BACKEND_CHECKS``. The backend opens a
tiny LLaVA student (:func:`backend_checkpoint`, built once per process) whose generation config
lists many EOS ids, as real checkpoints list several (``<|im_end|>``, ``<|endoftext|>``), so that
sampled responses stop early and the stopping rule can be seen (2 attention heads of 32, as
engines with fused CPU kernels need); ``model_dir=DIR`` names another
checkpoint. The model is passed as a run spec's model entry (``ModelSpec(path=DIR)``) and
``vocab_limit`` is a few ids below the tokenizer's length, so ids a response may never hold exist
on both sides of it.

Checks (``BACKEND_CHECKS``):

* ``capabilities``: the :class:`~masters.interfaces.GenerationBackend` protocol, a
  :class:`~masters.interfaces.BackendCapabilities` instance, and ``rows_equal_hf`` consistent with
  the spec's ``row_identity()`` (``None`` exactly when rows equal the ``hf`` backend's).
* ``session``: ``open()`` gives a :class:`~masters.interfaces.GenerationSession`: every EOS id of the
  checkpoint, its vocabulary, a no-op ``set_level`` without a masker, one
  :class:`~masters.interfaces.GeneratedResponse` per sample (behaviour log-probs exactly when
  declared, one finite value <= 0 per token), ``decode`` one string per response, ``close``.
* ``per_row_seeds``: a row depends only on its sample and seed: the same rows alone, in another
  order and beside other rows (where the backend declares ``per_row_seeds``).
* ``seeds_differ``: at temperature 1, different seeds give different responses to one prompt.
* ``greedy``: at temperature 0 a row depends neither on its seed nor on its batch.
* ``vocabulary``: no sampled id is at or above ``vocab_limit``, nor a special id other than EOS
  (padding, image placeholders: ``masters.engine.sampling.banned_response_ids``).
* ``stops_at_eos``: a response holds an EOS id only as its last token; one without EOS has exactly
  ``max_new_tokens`` tokens; and some responses do stop at an EOS id.
* ``masked_levels``: opened with a masker over levels, ``set_level`` changes the responses, and
  back at level 0 the greedy rows equal the unmasked model's (masked weights restored exactly).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from masters.testing.adapters import ConformanceError, _workdir
from masters.testing.examples import NotApplicable, resolve_spec, spec_label, run_checks

__all__ = ["BACKEND_CHECKS", "BackendConformanceError", "backend_checkpoint", "check_backend", "registered_backends",
           "run_backend_check"]

BACKEND_CHECKS: tuple[str, ...] = ("capabilities", "session", "per_row_seeds", "seeds_differ", "greedy", "vocabulary",
                                   "stops_at_eos", "masked_levels")
CUT_BELOW_TOKENIZER = 4  # vocab_limit = len(tokenizer) - this
EOS_SHARE = 3  # one word id in this many is an EOS id of the backend checkpoint
MAX_NEW_TOKENS = 6
HEADS = 2  # hidden 64: head size 32
MASKER = "magnitude"
MASK_LEVEL_BP = 5000


class BackendConformanceError(ConformanceError):
    """A generation backend broke one of the conformance rules."""


def registered_backends() -> list[str]:
    from masters.plugins import get_components

    return get_components().registry("backend").names()


def _fail(check: str, label: str, message: str) -> None:
    raise BackendConformanceError(f"[{check}] {label}: {message}")


@functools.lru_cache(maxsize=None)
def backend_checkpoint() -> Path:
    """A tiny LLaVA checkpoint (2 heads of 32: engines such as vLLM's CPU attention refuse heads
    under 32) with every third word id (and the tokenizer's EOS) an EOS id."""
    from masters.models.tiny import build_tiny_model

    out = _workdir() / "backend-llava-multi-eos"
    if (out / "config.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model("llava", "tiny", tmp, heads=HEADS)
    info = _tokenizer_info(tmp)
    config = json.loads((tmp / "generation_config.json").read_text())
    words = [i for i in range(info["vocab_limit"]) if i not in info["special"]]
    config["eos_token_id"] = [info["eos"], *words[::EOS_SHARE]]
    (tmp / "generation_config.json").write_text(json.dumps(config, indent=2))
    tmp.rename(out)
    return out


def _tokenizer_info(path: Path) -> dict[str, Any]:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    return {"eos": tok.eos_token_id, "special": set(tok.all_special_ids), "length": len(tok),
            "vocab_limit": len(tok) - CUT_BELOW_TOKENIZER}


class _Case:
    def __init__(self, backend: Any, model_dir: str | Path | None = None):
        spec, context = resolve_spec("backend", backend)
        self.spec = spec
        self.label = spec_label(spec)
        self.impl = spec.build(**context)
        self.path = Path(model_dir) if model_dir is not None else backend_checkpoint()
        self._adapter: Any = None
        self._shared: Any = None

    # what the run spec would pass
    def model(self) -> Any:
        from masters.config import run_spec_model

        return run_spec_model().model_fields["student"].annotation.model_validate({"path": str(self.path)})

    @property
    def adapter(self) -> Any:
        """The checkpoint's own adapter: the ground truth for EOS ids, vocabulary and banned ids."""
        if self._adapter is None:
            from masters.adapters.resolve import resolve_adapter

            self._adapter = resolve_adapter(str(self.path))
        return self._adapter

    @property
    def vocab_limit(self) -> int:
        return len(self.adapter.tokenizer) - CUT_BELOW_TOKENIZER

    def open(self, check: str, **kwargs: Any) -> Any:
        try:
            return self.impl.open(self.model(), vocab_limit=self.vocab_limit, **kwargs)
        except Exception as exc:  # noqa: BLE001
            _fail(check, self.label, f"open() of a tiny checkpoint raised {type(exc).__name__}: {exc}")

    @contextlib.contextmanager
    def session(self, check: str, **kwargs: Any) -> Iterator[Any]:
        """A fresh session, closed afterwards (``session`` and ``masked_levels``)."""
        session = self.open(check, **kwargs)
        try:
            yield session
        finally:
            session.close()

    @contextlib.contextmanager
    def shared(self, check: str) -> Iterator[Any]:
        """One unmasked session kept open for the sampling checks (opening costs a model load)."""
        if self._shared is None:
            self._shared = self.open(check)
        yield self._shared

    def generate(self, session: Any, samples: list[Any], seeds: list[int], check: str, **settings: Any) -> list[list[int]]:
        from masters.interfaces import GeneratedResponse, SamplingSettings

        values = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0,
                  "max_new_tokens": MAX_NEW_TOKENS, **settings}
        out = session.generate(samples, seeds, SamplingSettings(**values))
        if not isinstance(out, list) or len(out) != len(samples):
            _fail(check, self.label, f"generate() of {len(samples)} samples gave "
                  f"{len(out) if isinstance(out, list) else type(out).__name__} responses")
        for r in out:
            if not isinstance(r, GeneratedResponse) or not all(isinstance(t, int) for t in r.token_ids):
                _fail(check, self.label, f"generate() gave {type(r).__name__}, not GeneratedResponse(token_ids: list[int])")
        return [list(r.token_ids) for r in out]


@functools.lru_cache(maxsize=1)
def _samples() -> tuple[Any, ...]:
    from masters.tasks.shapes import generate_shapes

    return tuple(generate_shapes(4, 0, 1, seed=321, max_shapes=2)["train"])


def check_capabilities(case: _Case) -> None:
    from masters.interfaces import BackendCapabilities, GenerationBackend

    if not isinstance(case.impl, GenerationBackend):
        _fail("capabilities", case.label, f"{type(case.impl).__name__} lacks spec, capabilities or open()")
    caps = case.impl.capabilities
    if not isinstance(caps, BackendCapabilities):
        _fail("capabilities", case.label, f"capabilities is {type(caps).__name__}, not masters.interfaces.BackendCapabilities")
    identity = case.spec.row_identity()
    if identity is not None:
        try:
            json.dumps(identity)
        except (TypeError, ValueError):
            _fail("capabilities", case.label, f"row_identity() {identity!r} is not JSON (the bank's identity hashes it)")
    if caps.rows_equal_hf != (identity is None):
        _fail("capabilities", case.label, f"rows_equal_hf is {caps.rows_equal_hf} but row_identity() is {identity!r}: "
              "return None exactly when the rows equal the hf backend's")


def check_session(case: _Case) -> None:
    from masters.interfaces import GenerationSession, SamplingSettings
    from masters.ratios import Ratio

    samples = list(_samples())[:2]
    with case.session("session") as session:
        if not isinstance(session, GenerationSession):
            _fail("session", case.label, f"open() gave {type(session).__name__}, which lacks GenerationSession methods")
        eos = session.eos_token_ids
        if not (isinstance(eos, list) and eos and all(isinstance(i, int) for i in eos)):
            _fail("session", case.label, f"eos_token_ids is {eos!r}, not a non-empty list of ints")
        missing = sorted(set(case.adapter.eos_token_ids) - set(eos))
        if missing:
            _fail("session", case.label, f"eos_token_ids {eos} miss the checkpoint's EOS ids {missing} "
                  "(generation_config.json eos_token_id and the tokenizer's eos_token)")
        if dict(session.vocab()) != dict(case.adapter.vocab()):
            _fail("session", case.label, "vocab() differs from the checkpoint tokenizer's token-to-id map")
        session.set_level(Ratio(0))
        out = session.generate(samples, [1, 2], SamplingSettings(max_new_tokens=3, top_p=1.0, top_k=0))
        if len(out) != len(samples):
            _fail("session", case.label, f"{len(samples)} samples gave {len(out)} responses")
        for r in out:
            if not 1 <= len(r.token_ids) <= 3:
                _fail("session", case.label, f"a response of {len(r.token_ids)} tokens with max_new_tokens 3")
            logprobs = r.behaviour_logprobs
            if case.impl.capabilities.behaviour_logprobs:
                if logprobs is None or len(logprobs) != len(r.token_ids) or not all(
                        isinstance(v, float) and math.isfinite(v) and v <= 0 for v in logprobs):
                    _fail("session", case.label, f"behaviour_logprobs {logprobs!r} are declared but not one finite "
                          f"log-prob <= 0 per token of {r.token_ids}")
            elif logprobs is not None:
                _fail("session", case.label, "behaviour_logprobs are returned but capabilities.behaviour_logprobs is False")
        texts = session.decode([r.token_ids for r in out])
        if not (isinstance(texts, list) and len(texts) == len(out) and all(isinstance(t, str) for t in texts)):
            _fail("session", case.label, f"decode() gave {texts!r}, not one string per response")


def check_per_row_seeds(case: _Case) -> None:
    if not case.impl.capabilities.per_row_seeds:
        raise NotApplicable(f"{case.label} declares per_row_seeds=False (its banks cannot be resumed row for row)")
    s = list(_samples())
    with case.shared("per_row_seeds") as session:
        batch = case.generate(session, [s[0], s[1], s[2], s[0]], [11, 12, 13, 14], "per_row_seeds")
        reordered = case.generate(session, [s[2], s[0], s[3]], [13, 14, 99], "per_row_seeds")
        alone = case.generate(session, [s[1]], [12], "per_row_seeds")
        twice = case.generate(session, [s[0], s[0]], [11, 11], "per_row_seeds")
    if reordered[0] != batch[2] or reordered[1] != batch[3]:
        _fail("per_row_seeds", case.label, f"rows changed with the batch's order and composition: {batch[2]}, "
              f"{batch[3]} became {reordered[0]}, {reordered[1]}")
    if alone[0] != batch[1]:
        _fail("per_row_seeds", case.label, f"a row generated alone {alone[0]} differs from the same row in a batch {batch[1]}")
    if twice[0] != twice[1] or twice[0] != batch[0]:
        _fail("per_row_seeds", case.label, f"one sample and seed gave different rows: {twice[0]}, {twice[1]}, {batch[0]}")


def check_seeds_differ(case: _Case) -> None:
    s = list(_samples())[0]
    seeds = list(range(100, 108))
    with case.shared("seeds_differ") as session:
        rows = case.generate(session, [s] * len(seeds), seeds, "seeds_differ")
    if len({tuple(r) for r in rows}) < 2:
        _fail("seeds_differ", case.label, f"{len(seeds)} seeds at temperature 1 gave one response {rows[0]}: the "
              "seeds do not reach the sampler")


def check_greedy(case: _Case) -> None:
    s = list(_samples())
    with case.shared("greedy") as session:
        batch = case.generate(session, s[:3], [1, 2, 3], "greedy", temperature=0.0)
        other = case.generate(session, [s[2], s[1]], [40, 50], "greedy", temperature=0.0)
    if other != [batch[2], batch[1]]:
        _fail("greedy", case.label, f"greedy rows changed with seeds or batch: {[batch[2], batch[1]]} vs {other}")


def _many_rows(case: _Case, session: Any, check: str) -> list[list[int]]:
    s = list(_samples())
    samples = [s[i % len(s)] for i in range(16)]
    return case.generate(session, samples, list(range(500, 516)), check)


def check_vocabulary(case: _Case) -> None:
    from masters.engine.sampling import banned_response_ids

    banned = set(banned_response_ids(case.adapter))
    with case.shared("vocabulary") as session:
        rows = _many_rows(case, session, "vocabulary")
    high = sorted({t for r in rows for t in r if t >= case.vocab_limit})
    if high:
        _fail("vocabulary", case.label, f"ids {high} at or above vocab_limit {case.vocab_limit} were sampled")
    special = sorted({t for r in rows for t in r if t in banned})
    if special:
        _fail("vocabulary", case.label, f"special ids {special} (not EOS) were sampled: padding, image placeholders "
              "and control tokens must never be")


def check_stops_at_eos(case: _Case) -> None:
    with case.shared("stops_at_eos") as session:
        eos = set(session.eos_token_ids)
        rows = _many_rows(case, session, "stops_at_eos")
    stopped = 0
    for r in rows:
        early = [i for i, t in enumerate(r[:-1]) if t in eos]
        if early:
            _fail("stops_at_eos", case.label, f"response {r} goes on after an EOS id at position {early[0]}")
        if not r or len(r) > MAX_NEW_TOKENS:
            _fail("stops_at_eos", case.label, f"response {r} has {len(r)} tokens with max_new_tokens {MAX_NEW_TOKENS}")
        if r[-1] in eos:
            stopped += 1
        elif len(r) != MAX_NEW_TOKENS:
            _fail("stops_at_eos", case.label, f"response {r} stops after {len(r)} tokens without an EOS id "
                  f"(max_new_tokens {MAX_NEW_TOKENS})")
    if not stopped:
        _fail("stops_at_eos", case.label, f"no response of {len(rows)} stopped at an EOS id although about one id in "
              f"{EOS_SHARE} is one: does the backend stop at every EOS id of generation_config.json?")


def check_masked_levels(case: _Case) -> None:
    from masters.plugins import get_components
    from masters.ratios import Ratio

    masker = get_components().registry("masker").get(MASKER).spec_cls()
    levels = [Ratio(MASK_LEVEL_BP), Ratio(0)]
    s = list(_samples())
    with case.shared("masked_levels") as plain:
        reference = case.generate(plain, s, [1, 2, 3, 4], "masked_levels", temperature=0.0)
    with case.session("masked_levels", masker=masker, levels=levels) as session:
        session.set_level(levels[0])
        masked = case.generate(session, s, [1, 2, 3, 4], "masked_levels", temperature=0.0)
        session.set_level(Ratio(0))
        restored = case.generate(session, s, [1, 2, 3, 4], "masked_levels", temperature=0.0)
    if masked == reference:
        _fail("masked_levels", case.label, f"at level {levels[0]} the greedy responses equal the unmasked model's: "
              "set_level does not mask the weights")
    if restored != reference:
        _fail("masked_levels", case.label, f"back at level 0 the greedy responses {restored} differ from the unmasked "
              f"model's {reference}: masked weights are not restored exactly")


_CHECKS = {"capabilities": check_capabilities, "session": check_session, "per_row_seeds": check_per_row_seeds,
           "seeds_differ": check_seeds_differ, "greedy": check_greedy, "vocabulary": check_vocabulary,
           "stops_at_eos": check_stops_at_eos, "masked_levels": check_masked_levels}
assert tuple(_CHECKS) == BACKEND_CHECKS


@functools.lru_cache(maxsize=None)
def _cached_case(backend: str, model_dir: str | None) -> _Case:
    return _Case(backend, model_dir)


def _case_for(backend: Any, model_dir: str | Path | None) -> _Case:
    if isinstance(backend, str):  # a registered name: built once per process, like the adapter kit
        return _cached_case(backend, None if model_dir is None else str(model_dir))
    return _Case(backend, model_dir)


def run_backend_check(backend: Any, check: str, *, model_dir: str | Path | None = None) -> None:
    """Run one check on a backend (a registered name, a mapping with ``name``, a spec class or a
    spec); raises :class:`BackendConformanceError`, or :class:`NotApplicable`."""
    if check not in _CHECKS:
        raise ValueError(f"unknown backend check {check!r}; checks: {', '.join(BACKEND_CHECKS)}")
    _CHECKS[check](_case_for(backend, model_dir))


def check_backend(backend: Any, *, checks: Iterable[str] = BACKEND_CHECKS,
                  model_dir: str | Path | None = None) -> dict[str, str]:
    """Run the checks on a backend; ``{check: "ok" | "n/a: why"}``; raises on the first failure."""
    case = _case_for(backend, model_dir)
    return run_checks("backend", _CHECKS, case, checks)
