"""Pre-emption and closed pipes end a command cleanly: no traceback, a resumable state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from masters.cli import main


def test_sigterm_is_handled_like_ctrl_c(monkeypatch, capsys, tmp_path):
    import masters.cli.components as components

    def preempted(args):
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends before it kills
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr(components, "cmd_validate", preempted)
    code = main(["validate", str(tmp_path / "run.yaml")])
    assert code == 128 + signal.SIGTERM
    assert "terminated: run the same command again to resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the command


def test_a_closed_pipe_ends_quietly():
    reader = subprocess.run(f"{sys.executable} -m masters.cli schema | head -c 10", shell=True, capture_output=True,
                            text=True, timeout=120)
    assert reader.stdout == '{\n  "$defs'[:10] and "Traceback" not in reader.stderr and "BrokenPipe" not in reader.stderr


def test_bad_option_values_exit_2_without_traceback():
    for argv in (["evaluate", "c.yaml", "--max-new-tokens", "0"], ["timeline", "c.yaml", "--steps", "x"],
                 ["demo", "--threads", "-1"]):
        done = subprocess.run([sys.executable, "-m", "masters.cli", *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr and "error: argument" in done.stderr, argv
