"""Deterministic fault injection for kill-and-resume tests (design decision 16).

``MASTERS_TEST_KILL_AFTER=<stage>:<n>`` makes ``<stage>`` end its process abruptly (no cleanup,
as a SIGKILL would) once it has durably written ``n`` units (bank rows, scores, optimizer
steps). Tests use it instead of timing-dependent signals; it is inert when unset.
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
    if name == stage and count.isdigit() and done >= int(count):
        os._exit(KILLED_EXIT_CODE)
