"""The plugin template under plugins/template: filled, installed and tested like a real package."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[1] / "plugins" / "template"


@pytest.fixture(scope="module")
def fill_module():
    spec = importlib.util.spec_from_file_location("masters_template_fill", TEMPLATE / "fill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def installed(tmp_path_factory, fill_module):
    """The template filled as masters-contains-reference and pip-installed into its own site folder."""
    root = tmp_path_factory.mktemp("template")
    package_dir = root / "masters-contains-reference"
    values = fill_module.placeholders("masters-contains-reference")
    written = [p.relative_to(package_dir).as_posix() for p in fill_module.fill(package_dir, values)]
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(site), str(package_dir)],
        check=True, cwd=root, capture_output=True, text=True,
    )
    return root, package_dir, site, values, sorted(written)


def _env(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTERS_") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), MASTERS_DISABLE_PLUGIN_AUTOLOAD="1", **extra)
    return env


def test_placeholders_derive_from_the_distribution_name(fill_module):
    assert fill_module.placeholders("masters-contains-reference") == {
        "plugin_name": "masters-contains-reference",
        "package": "masters_contains_reference",
        "component": "contains_reference",
        "class_prefix": "ContainsReference",
    }
    assert fill_module.placeholders("my-plugin", component="fuzzy_match")["class_prefix"] == "FuzzyMatch"


@pytest.mark.parametrize("name", ["Masters-Upper", "has space", "trailing-", ""])
def test_fill_rejects_bad_distribution_names(fill_module, tmp_path, name):
    result = subprocess.run([sys.executable, str(TEMPLATE / "fill.py"), name, str(tmp_path / "x")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "fill.py: distribution name" in result.stderr
    assert not (tmp_path / "x").exists()


def test_fill_refuses_a_non_empty_destination(fill_module, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        fill_module.fill(tmp_path, fill_module.placeholders("masters-x"))
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_filled_template_has_no_placeholders_left(installed):
    _, package_dir, _, values, written = installed
    assert written == [
        "README.md",
        "pyproject.toml",
        f"src/{values['package']}/__init__.py",
        f"src/{values['package']}/hooks.py",
        f"src/{values['package']}/reward.py",
        f"src/{values['package']}/spec.py",
        "tests/conftest.py",
        f"tests/test_{values['package']}.py",
    ]
    for name in written:
        assert "{{" not in (package_dir / name).read_text(encoding="utf-8"), name
    assert "template-only" not in (package_dir / "README.md").read_text(encoding="utf-8")


def test_installed_package_exposes_its_entry_point(installed):
    _, _, site, _, _ = installed
    (dist,) = list(metadata.distributions(path=[str(site)]))
    assert dist.metadata["Name"] == "masters-contains-reference"
    eps = [ep for ep in dist.entry_points if ep.group == "masters"]
    assert [(ep.name, ep.value) for ep in eps] == [("contains_reference", "masters_contains_reference.hooks")]


def test_filled_package_passes_its_own_tests_when_installed(installed):
    root, package_dir, site, values, _ = installed
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(package_dir / "tests"), "-v", "-p", "no:cacheprovider"],
        cwd=root, env=_env(site, MASTERS_PLUGINS=values["component"]), capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 passed" in result.stdout
    # the conformance kits ran over the package's own component, one test per check
    for check in ("protocol", "score_contract"):
        assert f"test_conformance[reward:{values['component']}:{check}] PASSED" in result.stdout, result.stdout
    # the code under test is the installed copy, not the source folder
    where = subprocess.run(
        [sys.executable, "-c", f"import {values['package']} as m; print(m.__file__)"],
        cwd=root, env=_env(site), capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(site)


def test_filled_package_tests_fail_clearly_when_not_installed(installed):
    root, package_dir, _, _, _ = installed
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(package_dir / "tests"), "-q", "-p", "no:cacheprovider"],
        cwd=root, env=_env(root / "empty-site"), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "masters-contains-reference is not installed" in result.stdout
    assert "pip install -e" in result.stdout


def test_filled_package_conformance_fails_when_it_registers_nothing(installed, tmp_path):
    """The template's conformance test checks what the package registers, and fails (not passes
    vacuously) when hooks.py registers nothing."""
    import shutil

    root, package_dir, site, values, _ = installed
    empty_site = tmp_path / "site"
    shutil.copytree(site, empty_site)
    (empty_site / values["package"] / "hooks.py").write_text(
        "from masters import hookimpl\n\n\n@hookimpl\ndef masters_register_rewards(register):\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(package_dir / "tests"), "-q", "-p", "no:cacheprovider",
         "-k", "test_conformance"],
        cwd=root, env=_env(empty_site, MASTERS_PLUGINS=values["component"]), capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "test_conformance[no-components]" in result.stdout
    assert "registers nothing" in result.stdout
