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
    timeout (a hang fails instead of stalling CI); ``kill`` sets ``MASTERS_TEST_KILL_AFTER``.
    Returns the finished process and its wall time in seconds."""
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    timeout_s = 300

    def run(config, *args: str, kill: str | None = None):
        with socket.socket() as probe:  # a free port: a fixed one collides with a concurrent run
            probe.bind(("127.0.0.1", 0))
            port = str(probe.getsockname()[1])
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(root / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", "2", "--main_process_port", port,
               "--num_cpu_threads_per_process", "1", "-m", "masters.cli", *args, str(config)]
        env = {**os.environ, "PYTHONPATH": str(root)}
        env.pop("MASTERS_TEST_KILL_AFTER", None)
        if kill:
            env["MASTERS_TEST_KILL_AFTER"] = kill
        began = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, cwd=root)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{' '.join(args)}: no result within {timeout_s} s (a hang?)\n{(exc.stderr or b'')[-4000:]!r}")
        seconds = time.perf_counter() - began
        print(f"launch {' '.join(args)}: {seconds:.1f} s, exit {proc.returncode}")
        return proc, seconds

    return run
