"""The masters conformance kits as a pytest plugin: one test per check of every component a
distribution registers, and a failing run when it registers none.

In a plugin package's tests (``tests/test_conformance.py``)::

    import pytest

    @pytest.mark.masters_conformance(distribution="masters-my-plugin")
    def test_conformance(masters_case):
        masters_case.run()

The test is parametrised over ``masters_case``: every check (``SCHEDULE_CHECKS``, ``CHECKS``, ...)
of every component whose origin is that distribution, with node ids ``kind:name:check``
(``test_conformance[reward:my_reward:score_contract]``). Only that distribution's plugins are
loaded, at collection and in each test (autoload off, strict: a plugin that fails to load fails
the run). A distribution that registers nothing, is not installed or whose plugin does not load
gives one failing test saying which and how to fix it, never a green run that checked nothing.
A check that does not apply (a rule the component declares it does not keep) is a skip.

The distribution comes from the marker's ``distribution=``, else ``--masters-distribution``, else
the ini option ``masters_distribution``; ``kinds=`` (or the ini ``masters_kinds``) narrows the
kinds. masters-distill's own built-ins are ``distribution="masters-distill"``.

The plugin is registered by masters' ``pytest11`` entry point (named like this module, so a
conftest's ``pytest_plugins = ["masters.testing.pytest_plugin"]`` is harmless beside it); where
that entry point is not installed, list it in the top-level conftest, or call :func:`register`
from a ``pytest_configure`` hook of a nested one. Importing this module imports no torch and
loads no plugin; it does nothing for tests that do not ask for ``masters_case``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

PLUGIN_NAME = "masters.testing.pytest_plugin"
MARKER = "masters_conformance"

__all__ = ["MARKER", "PLUGIN_NAME", "masters_case", "register"]


def register(config: Any) -> None:
    """Register this plugin on ``config`` unless it is already (for a nested conftest, where
    ``pytest_plugins`` is not allowed: call it from that conftest's ``pytest_configure``)."""
    import sys

    if not config.pluginmanager.has_plugin(PLUGIN_NAME):
        # registered as the imported module itself (import_plugin would warn that a module already
        # imported cannot have its asserts rewritten)
        config.pluginmanager.register(sys.modules[__name__], PLUGIN_NAME)


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("masters", "masters conformance kits")
    group.addoption("--masters-distribution", dest="masters_distribution", default=None,
                    help="distribution whose registered components the masters_case tests check")
    parser.addini("masters_distribution", default="",
                  help="distribution whose registered components the masters_case tests check")
    parser.addini("masters_kinds", type="args", default=[],
                  help="component kinds the masters_case tests check (default: all seven)")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(distribution=None, kinds=None): parametrise the test's masters_case over every conformance "
        "check of every component the distribution registers (fails when it registers none)",
    )


class _Problem:
    """A parametrisation that could not be made: its one test fails with the reason."""

    def __init__(self, id: str, message: str):
        self.id = id
        self.message = message

    def run(self) -> None:
        pytest.fail(f"masters conformance: {self.message}", pytrace=False)

    def __repr__(self) -> str:
        return f"<masters conformance problem {self.id}: {self.message}>"


def _settings(metafunc: Any) -> tuple[str | None, Sequence[str] | None]:
    marker = metafunc.definition.get_closest_marker(MARKER)
    kwargs = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and marker.args:
        kwargs.setdefault("distribution", marker.args[0])
    config = metafunc.config
    distribution = (kwargs.get("distribution") or config.getoption("masters_distribution", default=None)
                    or config.getini("masters_distribution") or None)
    kinds = kwargs.get("kinds") or config.getini("masters_kinds") or None
    if isinstance(kinds, str):
        kinds = [kinds]
    return distribution, kinds


def _cases(distribution: str | None, kinds: Sequence[str] | None) -> list[Any]:
    from masters.errors import MastersError
    from masters.registry import KINDS
    from masters.testing.conformance import conformance_cases, explain_empty, installed

    if not distribution:
        return [_Problem("no-distribution", f"no distribution to check: give @pytest.mark.{MARKER}(distribution="
                         "\"my-dist\"), --masters-distribution my-dist, or masters_distribution = my-dist in the "
                         "pytest ini options")]
    kinds = tuple(kinds or KINDS)
    if not installed(distribution):
        return [_Problem("not-installed", explain_empty(distribution, kinds))]
    try:
        cases = conformance_cases(distribution, kinds)
    except (MastersError, ValueError) as exc:
        return [_Problem("load-error", f"cannot collect the components of {distribution!r}: {exc}")]
    return cases or [_Problem("no-components", explain_empty(distribution, kinds))]


def pytest_generate_tests(metafunc: Any) -> None:
    if "masters_case" not in metafunc.fixturenames:
        return
    cases = _cases(*_settings(metafunc))
    metafunc.parametrize("masters_case", cases, ids=[c.id for c in cases], indirect=True)


@pytest.fixture
def masters_case(request: Any) -> Any:
    """One conformance case (``.kind``, ``.name``, ``.check``; ``.run()`` runs it)."""
    case = getattr(request, "param", None)
    if case is None:  # pragma: no cover - parametrised by pytest_generate_tests above
        pytest.fail("masters_case is parametrised by the masters pytest plugin: is it registered?", pytrace=False)
    return case
