"""The pytest plugin, end to end: a plugin package's test suite, in its own pytest process, checks
exactly its own components, and a run with nothing to check fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from masters.testing.pytest_plugin import _cases

DIST = "masters-fake-conformance"

HOOKS = '''
from typing import ClassVar, Literal

from masters import hookimpl
from masters.api import ScheduleSpec


class FakeStepsSpec(ScheduleSpec):
    """The staircase under another name: conformant."""

    implementation: ClassVar[str] = "masters.schedules.shapes:Staircase"
    name: Literal["fake_steps"] = "fake_steps"


class FakeNoZeroSpec(ScheduleSpec):
    """A staircase that never gets back to the unmasked teacher."""

    implementation: ClassVar[str] = "masters_fake_conformance.schedule:NoZero"
    name: Literal["fake_no_zero"] = "fake_no_zero"


@hookimpl
def masters_register_schedules(register):
    register(FakeStepsSpec)
    register(FakeNoZeroSpec)
'''

SCHEDULE = '''
from masters.schedules.shapes import Staircase


class NoZero(Staircase):
    def levels(self):
        return super().levels()[:-1] or super().levels()

    def stage_at(self, progress):
        return min(super().stage_at(progress), len(self.levels()) - 1)
'''

TESTS = '''
import pytest


def test_mine(masters_case):  # the distribution comes from the ini option
    masters_case.run()


@pytest.mark.masters_conformance(distribution="masters-not-installed")
def test_not_installed(masters_case):
    masters_case.run()


@pytest.mark.masters_conformance(distribution="masters-fake-conformance", kinds=["backend"])
def test_no_backends(masters_case):
    masters_case.run()
'''


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    """A fake installed plugin distribution (an entry point of group masters) and a project whose
    tests use the pytest plugin, run in a pytest process of their own."""
    root = tmp_path_factory.mktemp("plugin-run")
    site = root / "site"
    package = site / "masters_fake_conformance"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "hooks.py").write_text(HOOKS)
    (package / "schedule.py").write_text(SCHEDULE)
    info = site / "masters_fake_conformance-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.1.0\n")
    # the pytest11 entry point masters' own pyproject declares, here on the fake distribution: pytest
    # loads it, and the project's `pytest_plugins` naming the same module does not register it twice
    (info / "entry_points.txt").write_text("[masters]\nfake = masters_fake_conformance.hooks\n\n[pytest11]\n"
                                           "masters.testing.pytest_plugin = masters.testing.pytest_plugin\n")
    project = root / "project"
    project.mkdir()
    (project / "pytest.ini").write_text(f"[pytest]\naddopts = --strict-markers\nmasters_distribution = {DIST}\n")
    (project / "conftest.py").write_text('pytest_plugins = ["masters.testing.pytest_plugin"]\n')
    (project / "test_conformance.py").write_text(textwrap.dedent(TESTS))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTERS_") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), MASTERS_DISABLE_PLUGIN_AUTOLOAD="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "no:randomly"],
                            cwd=project, env=env, capture_output=True, text=True, timeout=300)
    lines = re.findall(r"^(PASSED|FAILED|SKIPPED|ERROR) test_conformance\.py::(\S+)", result.stdout, re.M)
    return result, {test: outcome for outcome, test in lines}


def test_the_run_fails_and_says_why(plugin_run):
    result, outcomes = plugin_run
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is not installed in this Python" in result.stdout
    assert "It registers schedule 'fake_no_zero', schedule 'fake_steps' (kinds schedule): widen kinds" in result.stdout
    assert "do not end at 0" in result.stdout


def test_a_package_checks_only_its_own_components_every_check_each(plugin_run):
    result, outcomes = plugin_run
    mine = {t for t in outcomes if t.startswith("test_mine[")}
    assert mine == {f"test_mine[schedule:{name}:{c}]" for name in ("fake_steps", "fake_no_zero")
                    for c in ("protocol", "levels", "stages", "monotone")}, result.stdout
    failed = sorted(t for t, o in outcomes.items() if o == "FAILED")
    assert failed == ["test_mine[schedule:fake_no_zero:levels]", "test_no_backends[no-components]",
                      "test_not_installed[not-installed]"], result.stdout


def test_no_distribution_named_is_a_failing_case_not_an_empty_run():
    (problem,) = _cases(None, None)
    assert problem.id == "no-distribution"
    with pytest.raises(pytest.fail.Exception, match="masters_distribution"):
        problem.run()


def test_an_unknown_kind_is_a_failing_case():
    (problem,) = _cases("masters-distill", ["maskers"])
    assert problem.id == "load-error" and "unknown kind" in problem.message


def test_the_builtin_distribution_has_cases_of_every_kind():
    from masters.registry import KINDS

    cases = _cases("masters_distill", None)  # names compare as pip compares them
    assert {c.kind for c in cases} == set(KINDS)
    assert len({c.id for c in cases}) == len(cases)


def test_check_distribution_outside_pytest():
    from masters.testing import check_distribution

    report = check_distribution("masters-distill", kinds=("schedule",))
    assert report and set(report.values()) == {"ok"} and "schedule:staircase:monotone" in report
    with pytest.raises(AssertionError, match="not installed"):
        check_distribution("masters-not-installed")


def test_adapter_cases_run_through_the_same_route():
    from masters.testing import ConformanceCase

    ConformanceCase("masters-distill", "adapter", "llava", "protocol").run()
