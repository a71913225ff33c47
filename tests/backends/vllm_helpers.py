"""Helpers of the generation-backend tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

VLLM_FAMILIES = ("llava", "qwen2_vl", "internvl", "llava_next")
# what every engine of these tests runs with (keep_engines: engines stay open across sessions)
BACKEND = {"name": "vllm", "keep_engines": True, "kv_cache_mib": 32, "max_engines": 8, "max_num_seqs": 32}


def skip_vllm() -> bool:
    return os.environ.get("MASTERS_SKIP_VLLM") == "1"


def model_entry(path: Path):
    """A run spec's model entry for ``path`` (what the generation stage passes to ``open``)."""
    from masters.config import run_spec_model

    return run_spec_model().model_fields["student"].annotation.model_validate({"path": str(path)})
