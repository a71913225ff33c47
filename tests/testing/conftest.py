"""The masters pytest plugin for these tests, until masters' ``pytest11`` entry point registers it.

``pytest_plugins`` is only allowed in a top-level conftest, so this nested one registers the plugin
from ``pytest_configure`` (a no-op once the entry point has registered it).
"""

from masters.testing.pytest_plugin import register


def pytest_configure(config):
    register(config)
