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


def test_a_sigterm_that_lands_in_a_finaliser_is_not_lost(monkeypatch, capsys, tmp_path):
    """Python drops an exception raised inside ``__del__``: a SIGTERM delivered while the garbage
    collector ran one (a launched rank waiting for a dead peer) used to be lost, and the rank ran on
    until the launcher's SIGKILL 30 s later."""
    import gc

    import masters.cli.components as components

    class SignalledWhileFinalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the finaliser
            sum(range(1000))

    def preempted(args):
        gc.disable()  # the object dies exactly at `del`, not in a later collection
        try:
            obj = SignalledWhileFinalised()
            del obj
        finally:
            gc.enable()
        for _ in range(100):
            time.sleep(0.05)
        raise AssertionError("the SIGTERM was lost in the finaliser")

    monkeypatch.setattr(components, "cmd_validate", preempted)
    assert main(["validate", str(tmp_path / "run.yaml")]) == 128 + signal.SIGTERM
    assert "terminated: run the same command again to resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_closed_pipe_ends_quietly():
    reader = subprocess.run(f"{sys.executable} -m masters.cli schema | head -c 10", shell=True, capture_output=True,
                            text=True, timeout=120)
    assert reader.stdout == '{\n  "$defs'[:10] and "Traceback" not in reader.stderr and "BrokenPipe" not in reader.stderr


def test_bad_option_values_exit_2_without_traceback():
    for argv in (["evaluate", "c.yaml", "--max-new-tokens", "0"], ["timeline", "c.yaml", "--steps", "x"],
                 ["demo", "--threads", "-1"]):
        done = subprocess.run([sys.executable, "-m", "masters.cli", *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr and "error: argument" in done.stderr, argv
