"""Make real (file-based) distributions with ``masters`` entry points inside a test's tmp dir.

importlib.metadata finds ``*.dist-info`` folders on sys.path, so these behave exactly like
installed plugin packages: same discovery path, same distribution name and version.
"""

from __future__ import annotations

import textwrap
from pathlib import Path


def install_fake_plugin(root: Path, *, dist: str, version: str = "1.0", module: str, source: str,
                        entry_point: str | None = None) -> str:
    """Write ``module.py`` and a dist-info for ``dist`` under ``root``; return the entry-point name."""
    entry_point = entry_point or module
    (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[masters]\n{entry_point} = {module}\n", encoding="utf-8")
    return entry_point


MASKER_PLUGIN = '''
from typing import ClassVar, Literal
from masters import hookimpl
from masters.specs import MaskerSpec

class {cls}(MaskerSpec):
    """A test masker."""
    implementation: ClassVar[str] = "masters.masking.maskers:MagnitudeMasker"
    name: Literal["{name}"] = "{name}"
    strength: float = 1.0

@hookimpl
def masters_register_maskers(register):
    register({cls})
'''


def masker_plugin_source(name: str, cls: str = "TestMaskerSpec") -> str:
    return MASKER_PLUGIN.format(name=name, cls=cls)
