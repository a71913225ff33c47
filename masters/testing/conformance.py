"""Every kit behind one interface: the checks of a component of any kind, and the cases of a
distribution (every check of every component it registers).

    from masters.testing.conformance import check_distribution, conformance_cases, run_conformance_check

    run_conformance_check("schedule", "linear", "monotone")      # one check
    check_distribution("my-masters-plugin")                       # everything it registers
    cases = conformance_cases("my-masters-plugin")                # [ConformanceCase(...), ...]

A distribution's components are those whose :class:`~masters.registry.Origin` names it, found
with only that distribution's plugins loaded (``masters.testing.allow_plugins``: autoload off,
strict); ``masters-distill`` means masters' own built-ins. The pytest plugin
(:mod:`masters.testing.pytest_plugin`) turns the cases into one test each.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from masters.registry import KINDS
from masters.testing.examples import NotApplicable

__all__ = ["BUILTIN_DISTRIBUTION", "ConformanceCase", "check_component", "check_distribution", "checks_for",
           "conformance_cases", "distribution_components", "explain_empty", "installed", "only_distribution",
           "run_conformance_check"]

BUILTIN_DISTRIBUTION = "masters-distill"  # the Origin distribution of masters' built-in components


def canonical(name: str) -> str:
    """A distribution name compared as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _kits() -> dict[str, tuple[Callable[[str], tuple[str, ...]], Callable[..., None]]]:
    """kind -> (checks of a registered name, run one check)."""
    from masters.testing import adapters, backends, maskers, objectives, rewards, schedules, tasks

    return {
        "masker": (maskers.masker_checks, maskers.run_masker_check),
        "schedule": (lambda name: schedules.SCHEDULE_CHECKS, schedules.run_schedule_check),
        "reward": (rewards.reward_checks, rewards.run_reward_check),
        "adapter": (lambda name: adapters.CHECKS, adapters.run_check),
        "objective": (lambda name: objectives.OBJECTIVE_CHECKS, objectives.run_objective_check),
        "task": (lambda name: tasks.TASK_CHECKS, tasks.run_task_check),
        "backend": (lambda name: backends.BACKEND_CHECKS, backends.run_backend_check),
    }


def _kit(kind: str) -> tuple[Callable[[str], tuple[str, ...]], Callable[..., None]]:
    kits = _kits()
    if kind not in kits:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    return kits[kind]


def checks_for(kind: str, name: str) -> tuple[str, ...]:
    """The conformance checks of the registered ``kind`` component ``name``."""
    return _kit(kind)[0](name)


def run_conformance_check(kind: str, name: str, check: str) -> None:
    """Run one check on a registered component; raises a ``ConformanceError`` (an AssertionError)
    when it breaks a rule, :class:`~masters.testing.NotApplicable` when the check does not apply."""
    _kit(kind)[1](name, check)


def check_component(kind: str, name: str, *, checks: Iterable[str] | None = None) -> dict[str, str]:
    """Every check of one registered component: ``{check: "ok" | "n/a: why"}``; raises on a failure."""
    report = {}
    for check in checks if checks is not None else checks_for(kind, name):
        try:
            run_conformance_check(kind, name, check)
            report[check] = "ok"
        except NotApplicable as exc:
            report[check] = f"n/a: {exc}"
    return report


@contextlib.contextmanager
def only_distribution(distribution: str) -> Iterator[Any]:
    """masters' components with only ``distribution``'s plugins loaded (autoload off, strict):
    a plugin that fails to load is an error here. ``masters-distill`` loads no plugin at all."""
    from masters.testing.adapters import allow_plugins

    selected = () if canonical(distribution) == canonical(BUILTIN_DISTRIBUTION) else (distribution,)
    with allow_plugins(*selected) as components:
        yield components


def distribution_components(components: Any, distribution: str, kinds: Iterable[str] = KINDS) -> list[tuple[str, str]]:
    """``(kind, name)`` of every component of ``kinds`` whose origin is ``distribution``."""
    wanted = canonical(distribution)
    return [(kind, entry.name) for kind in kinds for entry in components.registry(kind)
            if canonical(entry.origin.distribution) == wanted]


@dataclass(frozen=True)
class ConformanceCase:
    """One check of one component of a distribution: what the pytest plugin makes a test of."""

    distribution: str
    kind: str
    name: str
    check: str

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}:{self.check}"

    def run(self) -> None:
        """Run the check with only the distribution's plugins loaded. Under pytest a check that does
        not apply is a skip with its reason; elsewhere :class:`NotApplicable` propagates."""
        with only_distribution(self.distribution):
            try:
                run_conformance_check(self.kind, self.name, self.check)
            except NotApplicable as exc:
                try:
                    import pytest
                except ImportError:  # pragma: no cover
                    raise
                pytest.skip(f"{self.id}: {exc}")

    def __str__(self) -> str:
        return self.id


def installed(distribution: str) -> bool:
    """Whether ``distribution`` is installed (masters' own built-ins always are)."""
    from importlib import metadata

    if canonical(distribution) == canonical(BUILTIN_DISTRIBUTION):
        return True
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def conformance_cases(distribution: str, kinds: Iterable[str] = KINDS) -> list[ConformanceCase]:
    """Every check of every component of ``kinds`` that ``distribution`` registers (possibly none,
    when it registers nothing or is not installed: the pytest plugin fails such a run, and
    :func:`explain_empty` says why)."""
    kinds = tuple(kinds)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kind(s) {unknown}; kinds: {', '.join(KINDS)}")
    if not installed(distribution):
        return []
    with only_distribution(distribution) as components:
        found = distribution_components(components, distribution, kinds)
        return [ConformanceCase(distribution, kind, name, check) for kind, name in found
                for check in checks_for(kind, name)]


def explain_empty(distribution: str, kinds: Iterable[str] = KINDS) -> str:
    """Why ``distribution`` has no component to check, and what to do about it."""
    import sys
    from importlib import metadata

    kinds = tuple(kinds)
    head = f"distribution {distribution!r} registers no component of kind(s) {', '.join(kinds)}: nothing was checked, " \
           "and a conformance run that checks nothing fails."
    if canonical(distribution) != canonical(BUILTIN_DISTRIBUTION):
        try:
            dist = metadata.distribution(distribution)
        except metadata.PackageNotFoundError:
            return (f"{head} It is not installed in this Python ({sys.executable}); masters finds plugins through "
                    "installed entry points: pip install -e <the package>. (Is the distribution name right? It is "
                    "the `name` in pyproject.toml's [project].)")
        eps = [ep for ep in dist.entry_points if ep.group == "masters"]
        if not eps:
            return (f"{head} {distribution} {dist.version} is installed but declares no entry point of group 'masters': "
                    "add  [project.entry-points.masters]  my_plugin = \"my_package.hooks\"  to pyproject.toml and "
                    "reinstall it.")
    from masters.errors import MastersError

    try:
        with only_distribution(distribution) as components:
            mine = distribution_components(components, distribution)
            failures = [f.describe() for f in components.failures]
    except MastersError as exc:
        return f"{head} Loading its plugins failed: {exc}"
    if failures:
        return f"{head} Plugin failures: {'; '.join(failures)}"
    if mine:
        other = sorted({k for k, _ in mine})
        return f"{head} It registers {', '.join(f'{k} {n!r}' for k, n in mine)} (kinds {', '.join(other)}): widen kinds."
    return (f"{head} Its plugin loads but registers nothing: implement masters_register_<kind>s(register) in its hooks "
            "module and call register(MySpec) there (masters.hookspecs lists the hooks).")


def check_distribution(distribution: str, kinds: Iterable[str] = KINDS) -> dict[str, str]:
    """Run every case of a distribution outside pytest: ``{case id: "ok" | "n/a: why"}``.

    Raises ``AssertionError`` on the first failure, and when there is no component to check."""
    cases = conformance_cases(distribution, kinds)
    if not cases:
        raise AssertionError(explain_empty(distribution, kinds))
    report = {}
    for case in cases:
        with only_distribution(distribution):
            try:
                run_conformance_check(case.kind, case.name, case.check)
                report[case.id] = "ok"
            except NotApplicable as exc:
                report[case.id] = f"n/a: {exc}"
    return report
