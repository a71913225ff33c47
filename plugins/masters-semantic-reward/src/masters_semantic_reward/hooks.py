"""Hook implementations: what masters calls after loading the ``semantic_similarity`` entry point.

Importing this module must stay cheap (no torch, no model files): it runs on every ``masters list``.
"""

from __future__ import annotations

from masters import hookimpl

from masters_semantic_reward.spec import SemanticSimilarityRewardSpec


@hookimpl
def masters_register_rewards(register):
    register(SemanticSimilarityRewardSpec)
