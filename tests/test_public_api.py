"""Plugins need only the public API: ``masters.api`` (plus ``masters.testing`` in their tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
# `from masters import hookimpl` is the package root's one re-export, kept for older plugins.
ALLOWED = {"src": {"masters", "masters.api"}, "tests": {"masters", "masters.api", "masters.testing"}}
IMPORT = re.compile(r"^\s*(?:from\s+(masters(?:\.[\w.]+)?)\s+import|import\s+(masters(?:\.[\w.]+)?))", re.M)


def plugin_files() -> list[Path]:
    return sorted(p for p in PLUGINS.glob("*/**/*.py") if "/build/" not in str(p))


def test_there_are_first_party_plugins():
    assert {p.relative_to(PLUGINS).parts[0] for p in plugin_files()} >= {"template", "masters-semantic-reward",
                                                                           "masters-llava-next"}


@pytest.mark.parametrize("path", plugin_files(), ids=lambda p: str(p.relative_to(PLUGINS)))
def test_first_party_plugins_import_only_the_public_api(path):
    part = "tests" if "tests" in path.relative_to(PLUGINS).parts else "src"
    text = path.read_text(encoding="utf-8")
    # imports inside strings (subprocess snippets) count too: the regex reads every line
    used = {m.group(1) or m.group(2) for m in IMPORT.finditer(text)}
    used |= set(re.findall(r"(?:from|import) (masters(?:\.[\w.]+)?)[ \\n]", text))
    outside = sorted(m for m in used if m not in ALLOWED[part] and not m.startswith("masters.testing")
                     or (part == "src" and m.startswith("masters.testing")))
    assert not outside, f"{path.name} imports {outside}; plugins import from masters.api only"


def test_every_public_name_resolves_without_importing_torch():
    code = ("import sys, masters.api as api\n"
            "light = [n for n in api.__all__ if api._LAZY.get(n, 'masters.api') not in "
            "('masters.adapters.base', 'masters.adapters.resolve', 'masters.adapters.compat', 'masters.models.tiny', "
            "'masters.objectives.losses', 'masters.rewards.jsd', 'masters.masking.maskers', "
            "'masters.masking.runtime')]\n"
            "[getattr(api, n) for n in light]\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "[getattr(api, n) for n in api.__all__]\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
