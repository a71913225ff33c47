"""The vLLM worker: run inside the vLLM venv, driven by masters over ``vllm_protocol``.

    .venv-vllm/bin/python masters/backends/vllm_worker.py

Imports only the standard library, torch, vllm (and what vllm imports) and ``vllm_protocol``
(found beside this file): never masters itself, which is not installed in that venv. Holds one
engine per model (``LLM(..., enforce_eager=True, enable_chunked_prefill=False)``: a chunked
seeded prompt kills vLLM's CPU engine) and samples with masters' per-row Gumbel sampler as a
vLLM logits processor, so its rows equal the ``hf`` backend's.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory heads sys.path; it holds masters modules (vllm.py among
# them) that would shadow the real vllm. Out with it before anything is imported.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import ctypes
import gc
import io
import os
import signal
import time
import traceback
from typing import Any



def _load_by_path(name: str, path: Path):
    """A torch-only masters module loaded from its file (the directory also holds masters modules
    that must not become importable top-level names here, and masters is not installed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


proto = _load_by_path("vllm_protocol", _HERE / "vllm_protocol.py")

_ENGINES: dict[str, Any] = {}


# ---------------------------------------------------------------------------------------------
# masters' sampler, as a vLLM (v1) logits processor
# ---------------------------------------------------------------------------------------------

def _filter_top_k_top_p(logits, top_k: int, top_p: float):
    """masters.engine.sampling.filter_top_k_top_p itself (the rows must be bit-identical to the hf
    backend's), loaded on first use: that module needs only torch."""
    global _SAMPLING
    if _SAMPLING is None:
        _SAMPLING = _load_by_path("masters_engine_sampling", _HERE.parent / "engine" / "sampling.py")
    return _SAMPLING.filter_top_k_top_p(logits, top_k, top_p)


_SAMPLING: Any = None


class _Row:
    __slots__ = ("generator", "group", "penalty", "seen", "history", "output", "counted")

    def __init__(self, args: dict[str, Any], prompt_ids: list[int] | None, output_ids: list[int]):
        import torch

        self.generator = torch.Generator().manual_seed(int(args["seed"]))
        # rows of one group share every setting and are processed as one batch
        self.group = (float(args["temperature"]), int(args["top_k"]), float(args["top_p"]),
                      float(args["repetition_penalty"]), int(args["vocab"]), int(args["limit"]), tuple(args["banned"]))
        self.penalty = float(args["repetition_penalty"])
        self.seen = None  # [vocab] bool: ids in prompt + output (for the repetition penalty)
        self.history = list(prompt_ids or [])
        self.output = output_ids  # vLLM's live list of this request's generated ids
        self.counted = 0  # output ids already in `seen`

    def seen_mask(self, vocab: int):
        import torch

        if self.seen is None:
            self.seen = torch.zeros(vocab, dtype=torch.bool)
            ids = [i for i in self.history if 0 <= i < vocab]
            if ids:
                self.seen[torch.tensor(ids, dtype=torch.long)] = True
        fresh = [i for i in self.output[self.counted:] if 0 <= i < vocab]
        if fresh:
            self.seen[torch.tensor(fresh, dtype=torch.long)] = True
        self.counted = len(self.output)
        return self.seen


def _make_processor_class():
    import torch
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

    allowed_cache: dict[tuple[int, int, tuple[int, ...]], torch.Tensor] = {}

    def forbidden(vocab: int, limit: int, banned: tuple[int, ...]) -> torch.Tensor:
        key = (vocab, limit, banned)
        if key not in allowed_cache:
            mask = torch.zeros(vocab, dtype=torch.bool)
            mask[limit:] = True
            if banned:
                mask[torch.tensor([b for b in banned if b < vocab], dtype=torch.long)] = True
            allowed_cache[key] = mask
        return allowed_cache[key]

    class MastersGumbelProcessor(LogitsProcessor):
        """Repetition penalty, allowed tokens, temperature, top-k/top-p, per-row Gumbel noise.

        The same operations in the same order as the ``hf`` backend (transformers applies the
        repetition penalty, then ``LimitVocabulary``, then ``PerRowGumbelSampler``), batched over
        the rows that share settings as transformers batches them. Each handled row comes back as
        ``-inf`` everywhere but the drawn token, whose value is its behaviour log-prob: the request
        itself is greedy, so vLLM takes that token, and with ``logprobs_mode="processed_logits"``
        reports the value as the token's log-prob.
        """

        def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
            self.rows: dict[int, _Row] = {}

        def is_argmax_invariant(self) -> bool:
            return False  # it decides the argmax

        def update_state(self, batch_update: BatchUpdate | None) -> None:
            if batch_update is None:
                return
            for index in batch_update.removed:
                self.rows.pop(index, None)
            for index, params, prompt_ids, output_ids in batch_update.added:
                args = (params.extra_args or {}).get("masters") if params is not None else None
                if args is None:
                    self.rows.pop(index, None)
                else:
                    self.rows[index] = _Row(args, prompt_ids, output_ids)
            for a, b, direction in batch_update.moved:
                ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
                if ra is not None:
                    self.rows[b] = ra
                if direction == MoveDirectionality.SWAP and rb is not None:
                    self.rows[a] = rb

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            if not self.rows:
                return logits
            groups: dict[tuple, list[int]] = {}
            for index, row in self.rows.items():
                if index < logits.shape[0]:
                    groups.setdefault(row.group, []).append(index)
            for (temperature, top_k, top_p, penalty, vocab, limit, banned), indices in groups.items():
                if logits.shape[-1] < vocab:
                    raise RuntimeError(f"the engine's logits have {logits.shape[-1]} columns, masters' sampler "
                                       f"needs {vocab}")
                where = torch.tensor(indices, dtype=torch.long)
                scores = logits.index_select(0, where)[:, :vocab].float()
                if penalty != 1.0:  # transformers' RepetitionPenaltyLogitsProcessor over prompt + output
                    seen = torch.stack([self.rows[i].seen_mask(vocab) for i in indices])
                    scores = torch.where(seen, torch.where(scores < 0, scores * penalty, scores / penalty), scores)
                scores = scores.masked_fill(forbidden(vocab, limit, banned), float("-inf"))  # LimitVocabulary
                if temperature > 0:  # PerRowGumbelSampler
                    z = _filter_top_k_top_p(scores / temperature, top_k, top_p)
                    uniforms = torch.stack([torch.rand(z.shape[-1], generator=self.rows[i].generator) for i in indices])
                    gumbel = -torch.log(-torch.log(uniforms.clamp(min=1e-20, max=1 - 1e-7)))
                    logprobs = torch.log_softmax(z, dim=-1)
                    chosen = (logprobs + gumbel).argmax(dim=-1, keepdim=True)
                    values = logprobs.gather(-1, chosen)
                else:  # greedy: a point mass
                    chosen = scores.argmax(dim=-1, keepdim=True)
                    values = torch.zeros_like(chosen, dtype=logits.dtype)
                out = torch.full((len(indices), logits.shape[-1]), float("-inf"), dtype=logits.dtype)
                out.scatter_(1, chosen, values.to(logits.dtype))
                logits.index_copy_(0, where, out)
            return logits

    return MastersGumbelProcessor


# ---------------------------------------------------------------------------------------------
# operations
# ---------------------------------------------------------------------------------------------

class RequestError(Exception):
    def __init__(self, message: str, kind: str = "bad_request"):
        super().__init__(message)
        self.kind = kind


def _head_size(path: Path) -> int | None:
    import json

    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    text = cfg.get("text_config") or cfg.get("llm_config") or cfg
    if text.get("head_dim"):
        return int(text["head_dim"])
    if text.get("hidden_size") and text.get("num_attention_heads"):
        return int(text["hidden_size"]) // int(text["num_attention_heads"])
    return None


def op_open(msg: dict[str, Any]) -> dict[str, Any]:
    from vllm import LLM

    key = msg["key"]
    if key in _ENGINES:
        return {"startup_s": 0.0, "reused": True}
    path = Path(msg["path"])
    head = _head_size(path)
    if head is not None and head < proto.MIN_CPU_HEAD_SIZE:
        raise RequestError(f"attention head size {head} is below the {proto.MIN_CPU_HEAD_SIZE} that vLLM's CPU "
                           "attention takes", "unsupported")
    sampler = msg.get("sampler", "gumbel")
    if sampler not in proto.SAMPLERS:
        raise RequestError(f"unknown sampler {sampler!r}")
    started = time.perf_counter()
    kwargs: dict[str, Any] = dict(
        model=str(path), tokenizer=str(path), dtype=msg.get("dtype") or "auto", seed=0,
        enforce_eager=True, enable_chunked_prefill=False, disable_log_stats=True,
        kv_cache_memory_bytes=int(msg.get("kv_cache_bytes") or 256 * 2**20),
        max_num_seqs=int(msg.get("max_num_seqs") or 64),
        limit_mm_per_prompt={"image": int(msg.get("max_images") or 1)},
        logprobs_mode="processed_logits" if sampler == "gumbel" else "processed_logprobs",
    )
    if msg.get("max_model_len"):
        kwargs["max_model_len"] = int(msg["max_model_len"])
    if int(msg.get("tensor_parallel_size") or 1) > 1:  # GPUs only; untested until a GPU run
        kwargs["tensor_parallel_size"] = int(msg["tensor_parallel_size"])
    if sampler == "gumbel":
        kwargs["logits_processors"] = [_make_processor_class()]
    try:
        llm = LLM(**kwargs)
    except Exception as exc:  # noqa: BLE001 - reported to masters with its kind
        text = f"{type(exc).__name__}: {exc}"
        kind = "unsupported" if any(w in text.lower() for w in ("head size", "head_size", "not supported",
                                                                 "no module or parameter", "architectures")) else "internal"
        raise RequestError(text, kind) from None
    _ENGINES[key] = {"llm": llm, "sampler": sampler, "path": str(path)}
    return {"startup_s": time.perf_counter() - started, "reused": False}


def _image(data: str):
    from PIL import Image

    image = Image.open(io.BytesIO(proto.decode_bytes(data)))
    image.load()
    return image


def op_generate(msg: dict[str, Any]) -> dict[str, Any]:
    from vllm import SamplingParams

    engine = _engine(msg["key"])
    requests, seeds, settings = msg["requests"], msg["seeds"], msg["settings"]
    if len(requests) != len(seeds):
        raise RequestError(f"{len(requests)} requests but {len(seeds)} seeds")
    allowed, eos, vocab = msg["allowed"], [int(i) for i in msg["eos"]], int(msg["vocab"])
    limit, banned = int(allowed["limit"]), sorted(int(i) for i in allowed.get("banned", []))
    temperature = float(settings["temperature"])
    prompts, params = [], []
    for request, seed in zip(requests, seeds):
        prompt: dict[str, Any] = {"prompt": request["prompt"]}
        if request.get("images"):
            prompt["multi_modal_data"] = {"image": [_image(b) for b in request["images"]]}
            if request.get("mm_kwargs"):
                prompt["mm_processor_kwargs"] = request["mm_kwargs"]
        prompts.append(prompt)
        common = dict(max_tokens=int(settings["max_new_tokens"]), stop_token_ids=eos, logprobs=0,
                      detokenize=False, skip_special_tokens=False)
        if engine["sampler"] == "gumbel":
            params.append(SamplingParams(temperature=0.0, **common, extra_args={"masters": {
                "seed": int(seed), "temperature": temperature, "top_k": int(settings["top_k"]),
                "top_p": float(settings["top_p"]), "repetition_penalty": float(settings["repetition_penalty"]),
                "limit": limit, "banned": banned, "vocab": vocab}}))
        else:
            banned_set = set(banned)
            params.append(SamplingParams(
                temperature=temperature, top_p=float(settings["top_p"]), top_k=int(settings["top_k"]) or 0,
                repetition_penalty=float(settings["repetition_penalty"]), seed=int(seed),
                allowed_token_ids=[i for i in range(limit) if i not in banned_set], **common))
    outputs = engine["llm"].generate(prompts, params, use_tqdm=False)
    rows = []
    for out in outputs:
        completion = out.outputs[0]
        ids = [int(t) for t in completion.token_ids]
        cut = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
        ids = ids[:cut]
        behaviour = []
        for token, entry in zip(ids, completion.logprobs or []):
            value = entry[token].logprob if token in entry else float("nan")
            behaviour.append(0.0 if temperature <= 0 else float(value))
        if len(behaviour) != len(ids):
            raise RequestError(f"vLLM returned {len(behaviour)} log-probs for {len(ids)} tokens", "internal")
        rows.append({"token_ids": ids, "behaviour_logprobs": behaviour,
                     "prompt_token_ids": [int(t) for t in out.prompt_token_ids or []]})
    return {"rows": rows}


def op_load_weights(msg: dict[str, Any]) -> dict[str, Any]:
    engine = _engine(msg["key"])
    started = time.perf_counter()
    llm = engine["llm"]
    llm.collective_rpc("reload_weights", kwargs={"weights_path": str(msg["path"])})
    llm.reset_prefix_cache()
    llm.llm_engine.reset_encoder_cache()
    return {"seconds": time.perf_counter() - started}


def op_close(msg: dict[str, Any]) -> dict[str, Any]:
    engine = _ENGINES.pop(msg["key"], None)
    if engine is not None:
        llm = engine.pop("llm")
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort; the objects go away below
            pass
        del llm
        gc.collect()
    return {"closed": engine is not None}


def op_ping(msg: dict[str, Any]) -> dict[str, Any]:
    return {"engines": sorted(_ENGINES)}


def _engine(key: str) -> dict[str, Any]:
    if key not in _ENGINES:
        raise RequestError(f"no engine {key!r} is open (open it first)")
    return _ENGINES[key]


OPS = {"open": op_open, "generate": op_generate, "load_weights": op_load_weights, "close": op_close,
       "ping": op_ping}


# ---------------------------------------------------------------------------------------------
# main loop
# ---------------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() == 1:  # the parent is already gone
        os._exit(1)


def main() -> int:
    _die_with_parent()
    out = os.fdopen(os.dup(1), "wb", buffering=0)  # the protocol channel
    os.dup2(2, 1)  # everything else that prints (vLLM's logs) goes to stderr
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        out.write(proto.dumps(message))

    started = time.perf_counter()
    try:
        import torch
        import transformers
        import vllm
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        send({"op": "hello", "protocol": proto.PROTOCOL_VERSION, "ok": False,
              "error": f"cannot import vllm: {type(exc).__name__}: {exc}"})
        return 2
    threads = os.environ.get("MASTERS_VLLM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    send({"op": "hello", "protocol": proto.PROTOCOL_VERSION, "ok": True, "vllm": vllm.__version__,
          "torch": torch.__version__, "transformers": transformers.__version__, "pid": os.getpid(),
          "import_s": time.perf_counter() - started})
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        ident = None
        try:
            msg = proto.loads(line)
            ident = msg.get("id")
            op = msg.get("op")
            if op == "shutdown":
                send({"id": ident, "ok": True})
                break
            if op not in OPS:
                raise RequestError(f"unknown op {op!r}")
            reply = OPS[op](msg)
            send({"id": ident, "ok": True, **reply})
        except RequestError as exc:
            send({"id": ident, "ok": False, "error": str(exc), "kind": exc.kind})
        except Exception as exc:  # noqa: BLE001 - one bad request must not kill the worker
            traceback.print_exc(file=sys.stderr)
            send({"id": ident, "ok": False, "error": f"{type(exc).__name__}: {exc}", "kind": "internal"})
    for key in list(_ENGINES):
        op_close({"key": key})
    return 0


if __name__ == "__main__":
    sys.exit(main())
