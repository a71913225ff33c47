"""Hook implementations: what masters calls after loading the ``{{component}}`` entry point.

Register spec *classes* through the ``register`` callback; never register by import side effect.
Importing this module must stay cheap (no torch, no model files): it runs on every ``masters list``.
"""

from __future__ import annotations

from masters.api import hookimpl

from {{package}}.spec import {{class_prefix}}Spec


@hookimpl
def masters_register_rewards(register):
    register({{class_prefix}}Spec)
