"""The spec of ``{{component}}``: its name, fields, defaults and docs. Torch-free on purpose.

masters validates configs and lists components from specs alone; ``implementation`` names the
class that ``spec.build()`` imports only when a run actually scores with this reward.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

from masters.api import RewardSpec


class {{class_prefix}}Spec(RewardSpec):
    """1 when the reference answer appears in the response as a whole phrase, else 0."""

    implementation: ClassVar[str] = "{{package}}.reward:{{class_prefix}}Reward"
    name: Literal["{{component}}"] = "{{component}}"
    case_sensitive: bool = Field(False, description="Compare letter case too.")
    ignore_punctuation: bool = Field(True, description="Treat punctuation as spaces before matching.")
    max_words: Optional[int] = Field(
        64,
        ge=1,
        description="Responses with more words score 0, so listing every candidate answer does not "
        "pay; null disables the limit.",
    )
