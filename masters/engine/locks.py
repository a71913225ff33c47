"""One writer per directory (design decision 19): an exclusive lock held while a stage writes.

``directory_lock(path, what)`` takes an ``fcntl.flock`` on ``path/.masters.lock`` and records the
holder (pid, host, command, start time) in it. The kernel releases the lock when the holder's
process ends, however it ends, so a lock left by a killed process is simply taken over: nothing
is guessed from PIDs. A second writer gets a :class:`LockedError` (exit 2) naming the holder.

The lock is re-entrant within a process (a pipeline holding ``output_dir`` runs stages that take
it again). In a multi-process launch only rank 0 takes it (``RANK`` / ``LOCAL_RANK`` unset or 0);
the other ranks write only names that carry their rank and rank 0 renames them after a barrier.

``stage_outputs(path, what)`` is what stages use: claim the directory as masters' own output
(:func:`masters.files.claim_output_dir`), lock it, and clean the temporaries killed writers left.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from masters.errors import MastersError
from masters.files import LOCK_NAME, claim_output_dir, clean_temporaries

_HELD: dict[str, list] = {}  # resolved path -> [fd, depth]


class LockedError(MastersError):
    """Another process is writing the directory."""


def launch_rank() -> int:
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 0


def holder(path: str | os.PathLike[str]) -> dict:
    """What the lock file of ``path`` says about its (last) holder; ``{}`` when unknown."""
    try:
        return json.loads((Path(path) / LOCK_NAME).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info:
        return "another process"
    return (f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}, "
            f"{info.get('what')}, since {info.get('since')})")


@contextlib.contextmanager
def directory_lock(path: str | os.PathLike[str], what: str, *, rank: int | None = None) -> Iterator[Path]:
    """Hold the exclusive writer lock of ``path`` (created if missing) for the ``with`` block."""
    import fcntl

    path = Path(path)
    if (launch_rank() if rank is None else rank) != 0:
        yield path
        return
    path.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield path
        finally:
            _HELD[key][1] -= 1
        return
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockedError(
            f"another masters process is writing this directory: {_describe(holder(path))}",
            where=str(path),
            fix="wait for it to finish (or stop it), or give this run another output_dir / bank_dir; "
            "a lock left by a killed process is released by the system and taken over automatically",
        ) from None
    except BaseException:
        os.close(fd)
        raise
    info = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
            "command": " ".join(["masters", *sys.argv[1:]]) if sys.argv and "masters" in sys.argv[0] else
            " ".join(sys.argv)[:200],
            "since": datetime.datetime.now().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    _HELD[key] = [fd, 1]
    try:
        yield path
    finally:
        del _HELD[key]
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def stage_outputs(path: str | os.PathLike[str], what: str, *, rank: int | None = None) -> Iterator[Path]:
    """Claim ``path`` as masters' output directory, lock it, clean dead writers' temporaries."""
    path = Path(path)
    if (launch_rank() if rank is None else rank) != 0:
        yield path
        return
    key = os.path.realpath(path)
    if key in _HELD:  # already ours in this process: nothing to check again
        with directory_lock(path, what, rank=rank):
            yield path
        return
    claim_output_dir(path, what)
    with directory_lock(path, what, rank=rank):
        clean_temporaries(path)
        yield path


@contextlib.contextmanager
def run_outputs(spec: object, what: str, *, bank: bool = False) -> Iterator[Path]:
    """Claim and lock a run's ``output_dir`` (and, with ``bank``, its bank directory) for a stage."""
    out = Path(getattr(spec, "output_dir"))
    with contextlib.ExitStack() as stack:
        stack.enter_context(stage_outputs(out, what))
        if bank:
            from masters.engine.generation import bank_dir

            stack.enter_context(stage_outputs(bank_dir(spec), what))
        yield out
