"""Shared pieces of the generation-backend tests: one vLLM worker for the session, tiny checkpoints.

The vLLM worker (``.venv-vllm``, built by ``bash .ci/setup test``) is started once and shared: its
import takes ~15 s and each engine ~15-27 s, so every test that needs an engine reuses the one
opened for its checkpoint (``keep_engines``). These tests skip only under an explicit
``MASTERS_SKIP_VLLM=1``; a missing or broken venv fails them, naming the set-up command.

Checkpoints have head size 32 (hidden 128, 4 heads), the least vLLM's CPU attention takes, and
are randomly initialised with untied embeddings at init_std 0.1, which gives varied sampled rows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_helpers import skip_vllm


@pytest.fixture(scope="session")
def vllm_worker():
    """The session's vLLM worker (stopped at the end)."""
    if skip_vllm():
        pytest.skip("MASTERS_SKIP_VLLM=1")
    from masters.backends.vllm import shared_worker, stop_workers

    worker = shared_worker()
    yield worker
    stop_workers()


@pytest.fixture(scope="session")
def vllm_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """family -> a head-size-32 tiny checkpoint; plus ``teacher`` / ``student`` (LLaVA, one tokenizer)."""
    from masters.models import build_tiny_model, build_tokenizer

    root = tmp_path_factory.mktemp("vllm-models")
    build_tokenizer(root / "tokenizer")
    out: dict[str, Path] = {}
    for family in ("llava", "qwen2_vl", "internvl"):
        build_tiny_model(family, "small", root / family, tokenizer_dir=root / "tokenizer", seed=1)
        out[family] = root / family
    build_tiny_model("llava", "small", root / "student", tokenizer_dir=root / "tokenizer", seed=2, layers=2)
    out["teacher"], out["student"] = out["llava"], root / "student"
    from masters_llava_next import tiny

    tiny.SIZES.setdefault("vllm-test", (128, 2, 64, 2))  # head size 32 (the plugin's own sizes have 16)
    tiny.build_tiny_llava_next(root / "llava_next", size="vllm-test", seed=1, tokenizer_dir=root / "tokenizer")
    out["llava_next"] = root / "llava_next"
    return out

