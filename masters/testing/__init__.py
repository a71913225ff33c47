"""The conformance kits plugin authors run in their own CI: one per component kind.

Every registered component of a distribution, every check, one test each (the pytest plugin,
:mod:`masters.testing.pytest_plugin`)::

    @pytest.mark.masters_conformance(distribution="masters-my-plugin")
    def test_conformance(masters_case):
        masters_case.run()

or one kind at a time, in one call or one check: ``check_masker`` / ``run_masker_check``
(:mod:`.maskers`), ``check_schedule`` / ``run_schedule_check`` (:mod:`.schedules`),
``check_reward`` / ``run_reward_check`` (:mod:`.rewards`), ``check_adapter`` / ``run_check``
(:mod:`.adapters`), ``check_objective`` / ``run_objective_check`` (:mod:`.objectives`),
``check_task`` / ``run_task_check`` (:mod:`.tasks`), ``check_backend`` / ``run_backend_check``
(:mod:`.backends`); ``check_component(kind, name)`` and ``check_distribution(dist)`` for any.
A component with required fields tells the kits how to build it with a ``conformance_example`` on
its spec class (:mod:`.examples`).

The parametrised adapter test of earlier versions is still importable into a test module::

    from masters.testing import test_adapter_conformance  # noqa: F401

Importing this package loads no plugin and imports no torch (it is imported when pytest starts).
"""

from __future__ import annotations

from typing import Any

from masters.testing.adapters import (
    CHECKS,
    ConformanceError,
    allow_plugins,
    check_adapter,
    registered_adapters,
    run_check,
    tiny_checkpoint,
)
from masters.testing.examples import ConformanceExample, MissingExampleError, NotApplicable

__all__ = ["CHECKS", "ConformanceCase", "ConformanceError", "ConformanceExample", "MissingExampleError",
           "NotApplicable", "allow_plugins", "check_adapter", "check_backend", "check_component",
           "check_distribution", "check_masker", "check_objective", "check_reward", "check_schedule", "check_task",
           "conformance_cases", "registered_adapters", "run_backend_check", "run_check", "run_conformance_check",
           "run_masker_check", "run_objective_check", "run_reward_check", "run_schedule_check", "run_task_check",
           "tiny_checkpoint", "test_adapter_conformance"]

_LAZY = {
    "check_masker": "masters.testing.maskers", "run_masker_check": "masters.testing.maskers",
    "check_schedule": "masters.testing.schedules", "run_schedule_check": "masters.testing.schedules",
    "check_reward": "masters.testing.rewards", "run_reward_check": "masters.testing.rewards",
    "check_objective": "masters.testing.objectives", "run_objective_check": "masters.testing.objectives",
    "check_task": "masters.testing.tasks", "run_task_check": "masters.testing.tasks",
    "check_backend": "masters.testing.backends", "run_backend_check": "masters.testing.backends",
    "ConformanceCase": "masters.testing.conformance", "check_component": "masters.testing.conformance",
    "check_distribution": "masters.testing.conformance", "conformance_cases": "masters.testing.conformance",
    "run_conformance_check": "masters.testing.conformance",
}


def __getattr__(name: str) -> Any:
    if name == "test_adapter_conformance":
        # built on first import, not when the package loads: the parametrisation lists the
        # registered adapters, which must wait until a conftest has set the plugin switches
        value = _adapter_conformance_test()
    elif name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def _adapter_conformance_test() -> Any:
    import pytest

    @pytest.mark.parametrize("check", CHECKS)
    @pytest.mark.parametrize("adapter_name", registered_adapters())
    def test_adapter_conformance(adapter_name: str, check: str) -> None:
        """Every registered adapter passes every conformance check on its tiny checkpoint(s)."""
        run_check(adapter_name, check)

    return test_adapter_conformance
