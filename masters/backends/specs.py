"""Built-in generation backend specs. Torch-free."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

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


BUILTIN_BACKEND_SPECS: tuple[type[BackendSpec], ...] = (HFBackendSpec,)
