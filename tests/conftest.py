"""Test-wide settings: no network, no model hub, no plugins autoloaded from the machine."""

from __future__ import annotations

import os

# Set before anything imports masters or transformers.
os.environ["MASTERS_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.pop("MASTERS_PLUGINS", None)
os.environ.pop("MASTERS_BLOCK_PLUGINS", None)
os.environ.pop("MASTERS_STRICT_PLUGINS", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and OpenMP spin-waits make every op ~50x slower
# whenever the cores are busy with something else (another process, the other test worker).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture
def fresh_components(monkeypatch):
    """Reload plugins after a test changes MASTERS_* variables; restore the default afterwards."""
    from masters.plugins import reset_components

    reset_components()
    yield monkeypatch
    monkeypatch.undo()
    reset_components()


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """A LLaVA teacher ("small") and student ("tiny") sharing one tokenizer, saved once per session."""
    from masters.models import build_tiny_model, build_tokenizer

    root = tmp_path_factory.mktemp("pair")
    build_tokenizer(root / "tokenizer")
    build_tiny_model("llava", "small", root / "teacher", tokenizer_dir=root / "tokenizer", seed=1)
    build_tiny_model("llava", "tiny", root / "student", tokenizer_dir=root / "tokenizer", seed=2)
    return root / "teacher", root / "student"


@pytest.fixture
def launch():
    """``launch(config, *args, kill=None)``: ``accelerate launch`` of ``masters ARGS CONFIG`` on 2 gloo
    processes (``configs/accelerate/ddp.yaml``, what a user launches generation with), under a
    timeout; ``kill`` sets ``MASTERS_TEST_KILL_AFTER``. Returns the finished process and its wall
    time in seconds."""
    import time

    from launching import ROOT, accelerate_launch

    def run(config, *args: str, kill: str | None = None):
        began = time.perf_counter()
        ddp = ROOT / "configs" / "accelerate" / "ddp.yaml"
        proc = accelerate_launch(ddp, ["-m", "masters.cli", *args, str(config)], timeout_s=300,
                                 what=" ".join(args), env={"MASTERS_TEST_KILL_AFTER": kill})
        seconds = time.perf_counter() - began
        print(f"launch {' '.join(args)}: {seconds:.1f} s, exit {proc.returncode}")
        return proc, seconds

    return run
