"""Starting 2-process runs from tests: a free port, and ``accelerate launch`` under a timeout (a
hang fails the test instead of stalling CI)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# deepspeed is a test extra the set-up builds: its tests skip only when told to, never because it is missing
needs_deepspeed = pytest.mark.skipif(os.environ.get("MASTERS_SKIP_DEEPSPEED") == "1",
                                     reason="MASTERS_SKIP_DEEPSPEED=1 (never set by .ci/run)")


def free_port() -> str:
    with socket.socket() as probe:  # a fixed port collides with a concurrent run
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def accelerate_launch(config_file: Path, program: Sequence[str], *, timeout_s: float, what: str,
                      env: Mapping[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file CONFIG_FILE`` of ``program`` on 2 gloo processes, one CPU thread
    each; ``env`` adds variables to this process's (``None`` removes one)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
           "--num_processes", "2", "--main_process_port", free_port(), "--num_cpu_threads_per_process", "1",
           *program]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    for key, value in (env or {}).items():
        full_env.pop(key, None)
        if value is not None:
            full_env[key] = value
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout_s, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what}: no result within {timeout_s} s (a hang?)\n{(exc.stderr or b'')[-4000:]!r}")
