"""Tiny checkpoints built once per test session (hidden 64, 2 layers, 32 px images)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """``tiny_dirs(family, size="tiny")`` -> a checkpoint directory, built on first use."""
    from masters.models import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    token_dir = root / "tokenizer"
    from masters.models import build_tokenizer

    build_tokenizer(token_dir)
    built = {}

    def get(family: str, size: str = "tiny"):
        key = (family, size)
        if key not in built:
            out = root / f"{family}-{size}"
            build_tiny_model(family, size, out, tokenizer_dir=token_dir)
            built[key] = out
        return built[key]

    return get


@pytest.fixture(scope="session")
def shapes_samples():
    from masters.tasks.shapes import generate_shapes

    return generate_shapes(4, 0, 1, seed=7, max_shapes=2)["train"]
