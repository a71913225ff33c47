"""Test settings for masters-llava-next: no plugin autoloading, nothing from the network.

The plugin is loaded the way a user would load it with autoloading off: by allow-listing its
entry point (``masters.testing.allow_plugins``). That only works for an *installed* distribution,
so every test first checks that it is installed and otherwise fails with the command that
installs it.
"""

from __future__ import annotations

import os
import sys

os.environ["MASTERS_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # other installed plugins stay out
os.environ.pop("MASTERS_BLOCK_PLUGINS", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: threads only add spin-waits

import pytest  # noqa: E402

DISTRIBUTION = "masters-llava-next"
ENTRY_POINT = "llava_next"


@pytest.fixture(scope="session")
def distribution():
    """The installed distribution; a clear failure (not a skip) when it is missing."""
    from importlib import metadata

    try:
        return metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    pytest.fail(
        f"{DISTRIBUTION} is not installed in this Python ({sys.executable}): masters finds plugins "
        f"through installed entry points. Install it (from the masters checkout) with:  pip install -e plugins/{DISTRIBUTION}",
        pytrace=False,
    )


@pytest.fixture
def components(distribution):
    """masters' components with exactly this plugin allow-listed (autoload stays off)."""
    from masters.testing import allow_plugins

    with allow_plugins(ENTRY_POINT) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory, distribution):
    """A tiny LLaVA-NeXT teacher and a smaller student, sharing the masters shapes tokenizer."""
    from masters_llava_next.tiny import build_tiny_llava_next

    root = tmp_path_factory.mktemp("llava-next")
    build_tiny_llava_next(root / "teacher", size="tiny", seed=1)
    build_tiny_llava_next(root / "student", size="micro", seed=2)
    return root / "teacher", root / "student"
