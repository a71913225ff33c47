"""Built-in generation backend specs. Torch-free."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field

from masters.specs import BackendSpec


class HFBackendSpec(BackendSpec):
    """transformers ``generate`` (batched, KV cache) with masters' per-row Gumbel sampler: the reference rows.

    Each row is sampled from its own seed inside a logits processor, so a row does not depend on its
    batch, neighbours or order, and a resumed bank equals an uninterrupted one.
    """

    name: Literal["hf"] = "hf"
    implementation: ClassVar[str] = "masters.backends.hf:HFBackend"

    def row_identity(self) -> dict[str, Any] | None:
        return None  # its rows are the reference every other backend is compared with


class VLLMBackendSpec(BackendSpec):
    """vLLM's engine in its own venv and worker process (``bash .ci/setup test`` builds ``.venv-vllm``).

    ``sampler: gumbel`` runs masters' per-row Gumbel sampler inside vLLM as a logits processor:
    rows equal the ``hf`` backend's, so the two share (and resume) one bank. ``sampler: native``
    is vLLM's own seeded sampler: reproducible per row but other rows, so its bank is its own.
    The pipe protocol is documented in ``masters.backends.vllm_protocol``.
    """

    name: Literal["vllm"] = "vllm"
    implementation: ClassVar[str] = "masters.backends.vllm:VLLMBackend"
    operational_fields: ClassVar[frozenset[str]] = frozenset(
        {"python", "kv_cache_mib", "max_num_seqs", "max_model_len", "max_images", "max_engines", "keep_engines",
         "startup_timeout_s", "threads", "cache_dir", "tensor_parallel_size"}
    )
    """Fields that change how rows are computed, never which rows."""

    sampler: Literal["gumbel", "native"] = Field(
        "gumbel", description="gumbel: masters' per-row Gumbel sampler as a vLLM logits processor (rows equal "
        "the hf backend's); native: vLLM's own seeded sampler (reproducible, other rows, its own bank).")
    reduced_precision: Literal["refuse", "own_bank"] = Field(
        "refuse", description="A model in bfloat16/float16: refuse (its rows equal hf's only to the kernels' "
        "rounding, measured unequal, so it may not share the hf bank), or own_bank (allowed; the bank gets its own "
        "identity, like the native sampler's).")
    attention_mismatch: Literal["refuse", "own_bank"] = Field(
        "refuse", description="A model whose transformers definition attends bidirectionally over image tokens "
        "where vLLM attends causally (Gemma3; measured: log-probs differ by 1e-2, benchmarks/vllm_families.py): "
        "refuse (its rows may not share the hf bank), or own_bank (allowed; the bank gets its own identity).")
    python: Optional[str] = Field(
        None, description="Python of the vLLM venv; default $MASTERS_VLLM_PYTHON, else .venv-vllm/bin/python "
        "of the masters checkout.")
    kv_cache_mib: int = Field(256, ge=16, description="KV cache per engine, MiB.")
    max_num_seqs: int = Field(64, ge=1, description="Sequences the engine decodes at once.")
    max_model_len: Optional[int] = Field(None, ge=16, description="Context length; default the model's.")
    max_images: int = Field(1, ge=1, description="Images per prompt the engine accepts.")
    max_engines: int = Field(2, ge=1, description="Engines the worker keeps open (the oldest closes first).")
    keep_engines: bool = Field(False, description="Keep a model's engine open after its session closes, "
                               "for the next one (tests, benchmarks).")
    startup_timeout_s: float = Field(600.0, gt=0, description="Longest wait for the worker to start.")
    threads: Optional[int] = Field(
        None, ge=1, description="Torch/OpenMP threads of the worker; default the environment's OMP_NUM_THREADS, "
        "else vLLM's choice. On cores shared with other work use 1: spinning OpenMP threads made the engine 2-8x "
        "slower in benchmarks/generation.py --backends.")
    cache_dir: Optional[str] = Field(None, description="Where prepared (vLLM-ready) checkpoint copies are "
                                     "kept; default a temporary directory per worker.")
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs per engine (vLLM's tensor_parallel_size). Under `accelerate launch` each rank "
        "runs its own worker on its own GPUs (rank r: GPUs r*size .. r*size+size-1). Values above 1 need GPUs and "
        "are untested until a GPU run; on a host without GPUs they are refused.")

    def row_identity(self) -> dict[str, Any] | None:
        if self.shares_hf_rows():
            return None  # rows equal the hf backend's: banks are shared and resumable across the two
        if self.sampler == "native":
            return {"name": self.name, "sampler": self.sampler}
        own = {"name": self.name, "sampler": self.sampler, "reduced_precision": self.reduced_precision}
        return own if self.attention_mismatch == "refuse" else {**own, "attention_mismatch": self.attention_mismatch}

    def shares_hf_rows(self) -> bool:
        """Rows equal the hf backend's: masters' sampler, float32 models, the same attention masks."""
        return self.sampler == "gumbel" and self.reduced_precision == "refuse" and self.attention_mismatch == "refuse"


BUILTIN_BACKEND_SPECS: tuple[type[BackendSpec], ...] = (HFBackendSpec, VLLMBackendSpec)
