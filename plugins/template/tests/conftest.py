"""Test settings for {{plugin_name}}: no plugin autoloading, nothing from the network.

The plugin is loaded the way a user would load it with autoloading off: by allow-listing its
entry point in ``MASTERS_PLUGINS``. That only works for an *installed* distribution, so every test
first checks that it is installed and otherwise fails with the command that installs it.

``masters.testing.pytest_plugin`` runs masters' conformance kits over this package's components
(``test_conformance``); masters registers it with a ``pytest11`` entry point, and listing it here
too is harmless (it is registered once) and keeps older masters versions working.
"""

from __future__ import annotations

import os
import sys

os.environ["MASTERS_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # other installed plugins stay out
os.environ.pop("MASTERS_BLOCK_PLUGINS", None)
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

pytest_plugins = ["masters.testing.pytest_plugin"]

DISTRIBUTION = "{{plugin_name}}"
ENTRY_POINT = "{{component}}"


@pytest.fixture(scope="session")
def distribution():
    """The installed distribution; a clear failure (not a skip) when it is missing."""
    from importlib import metadata

    try:
        return metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    pytest.fail(
        f"{DISTRIBUTION} is not installed in this Python ({sys.executable}): masters finds plugins "
        f"through installed entry points. Install it with:  pip install -e <path to {DISTRIBUTION}>",
        pytrace=False,
    )


@pytest.fixture
def components(distribution, monkeypatch):
    """masters' components with exactly this plugin allow-listed (autoload stays off)."""
    from masters.api import get_components, reset_components

    monkeypatch.setenv("MASTERS_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("MASTERS_PLUGINS", ENTRY_POINT)
    monkeypatch.setenv("MASTERS_STRICT_PLUGINS", "1")
    reset_components()
    yield get_components()
    monkeypatch.undo()
    reset_components()
