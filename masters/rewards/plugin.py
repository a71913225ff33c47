"""Built-in rewards, registered through the same hook as any plugin."""

from __future__ import annotations

from masters.hookspecs import hookimpl
from masters.rewards.specs import BUILTIN_REWARD_SPECS


@hookimpl
def masters_register_rewards(register):
    for spec_cls in BUILTIN_REWARD_SPECS:
        register(spec_cls)
