"""Stage identity (design decision 9) and provenance (what every result records).

A stage hashes only the spec fields it reads, so unrelated edits do not invalidate its outputs;
and its outputs are keyed finely (teacher, level, question, sample) so that adding levels or
questions extends them instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel


def canonical(value: Any) -> Any:
    """JSON-ready, order-independent form of specs and plain values."""
    if isinstance(value, BaseModel):
        return canonical(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def stage_hash(stage: str, fields: Mapping[str, Any]) -> str:
    """16 hex digits identifying a stage's inputs: ``fields`` maps a spec path to its value."""
    payload = json.dumps({"stage": stage, "fields": canonical(fields)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def derived_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of key parts; the same parts always give the same seed."""
    digest = hashlib.sha256(json.dumps([canonical(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def provenance() -> dict[str, Any]:
    """Package and plugin versions: recorded beside every bank, checkpoint and result."""
    from importlib import metadata

    from masters import __version__
    from masters.plugins import get_components

    versions = {"masters-distill": __version__}
    for dist in ("torch", "transformers", "accelerate", "pyarrow"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    plugins = {info.distribution: info.version for info in get_components().plugins.values() if not info.builtin}
    return {"versions": versions, "plugins": plugins}
