"""Deterministic fault injection for kill-and-resume tests (design decision 16).

``MASTERS_TEST_KILL_AFTER=<stage>:<n>`` makes ``<stage>`` end its process abruptly (no cleanup,
as a SIGKILL would) once it has durably written ``n`` units (bank rows, scores, optimizer
steps). ``<stage>:<n>@<rank>`` kills only that rank of an ``accelerate launch`` (``RANK``), once
that rank has written ``n`` units. Tests use it instead of timing-dependent signals; it is inert
when unset.
"""

from __future__ import annotations

import os

ENV = "MASTERS_TEST_KILL_AFTER"
KILLED_EXIT_CODE = 137


def kill_point(stage: str, done: int) -> None:
    """Call after each durable unit of work with the running count for this process."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, count = spec.partition(":")
    count, _, rank = count.partition("@")
    if rank and rank != os.environ.get("RANK", "0"):
        return
    if name == stage and count.isdigit() and done >= int(count):
        os._exit(KILLED_EXIT_CODE)


FS_ENV = "MASTERS_TEST_FS_FAULT"


def fs_fault(path: os.PathLike[str] | str) -> None:
    """``MASTERS_TEST_FS_FAULT=<ERRNO>[:<substring>]`` (ENOSPC, EROFS, EACCES, EFBIG, ...) makes every
    output write whose final path contains ``substring`` fail with that errno just before it is
    renamed into place, as a full disk, a read-only mount or a permission change would; root
    ignores permissions, so tests inject these instead of chmod. Inert when unset."""
    spec = os.environ.get(FS_ENV)
    if not spec:
        return
    import errno as _errno

    name, _, part = spec.partition(":")
    code = getattr(_errno, name, None)
    if code is not None and (not part or part in str(path)):
        raise OSError(code, os.strerror(code), str(path))
