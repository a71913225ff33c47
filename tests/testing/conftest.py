"""The masters pytest plugin for these tests, until masters' ``pytest11`` entry point registers it.

``pytest_plugins`` is only allowed in a top-level conftest, so this nested one registers the plugin
from ``pytest_configure`` (a no-op once the entry point has registered it; what
``masters.testing.pytest_plugin.register(config)`` does, without importing the module first, so
pytest can still rewrite its asserts).
"""

PLUGIN = "masters.testing.pytest_plugin"


def pytest_configure(config):
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
