"""Hook implementations: what masters calls after loading the ``llava_next`` entry point.

Importing this module must stay cheap (no torch, no transformers): it runs on every ``masters list``.
"""

from __future__ import annotations

from masters.api import hookimpl

from masters_llava_next.spec import LlavaNextAdapterSpec


@hookimpl
def masters_register_adapters(register):
    register(LlavaNextAdapterSpec)
