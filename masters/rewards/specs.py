"""Specs of the built-in rewards (torch-free)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from masters.specs import RewardSpec


class ExactMatchRewardSpec(RewardSpec):
    """1 when the normalised response equals the normalised reference answer, else 0."""

    implementation: ClassVar[str] = "masters.rewards.rules:ExactMatchReward"
    name: Literal["exact_match"] = "exact_match"
    case_sensitive: bool = Field(False, description="Compare letter case too.")
    strip_punctuation: bool = Field(True, description="Ignore punctuation and articles (a, an, the).")
    numbers_as_words: bool = Field(True, description="Treat 'three' and '3' as the same answer.")
    extract_answer: bool = Field(
        True,
        description="Also try the response's marked final answer (<answer>..</answer>, \\boxed{..}, 'answer: ..').",
    )


class MultipleChoiceRewardSpec(RewardSpec):
    """1 when the response picks the reference option, by letter ('B', '(b)') or by option text."""

    implementation: ClassVar[str] = "masters.rewards.rules:MultipleChoiceReward"
    name: Literal["multiple_choice"] = "multiple_choice"


class NumericRewardSpec(RewardSpec):
    """1 when the response's number (its marked final answer, else its last) is within tolerance of the reference."""

    implementation: ClassVar[str] = "masters.rewards.rules:NumericReward"
    name: Literal["numeric"] = "numeric"
    rel_tol: float = Field(1e-2, ge=0, description="Relative tolerance.")
    abs_tol: float = Field(0.0, ge=0, description="Absolute tolerance.")
    position: Literal["first", "last"] = Field(
        "last", description="Which number of a response without a marked final answer is its answer."
    )


class RegexRewardSpec(RewardSpec):
    """1 when the response matches a pattern; ``{reference}`` in it stands for the escaped reference."""

    implementation: ClassVar[str] = "masters.rewards.rules:RegexReward"
    name: Literal["regex"] = "regex"
    pattern: str = Field(
        description=r"Python regular expression, e.g. '^\s*{reference}\s*\.?$'.",
        examples=[r"^\s*{reference}\s*\.?$"],
    )
    full_match: bool = Field(False, description="Require the whole response to match.")
    ignore_case: bool = Field(True)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        import re

        try:
            re.compile(value.replace("{reference}", "x"))
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class JSDDistillRewardSpec(RewardSpec):
    """Group-normalised JSD between masked teacher and student (computed in the training step)."""

    implementation: ClassVar[str] = "masters.rewards.distill:JSDDistillReward"
    signal: ClassVar[Literal["accuracy", "distillation"]] = "distillation"
    name: Literal["jsd_distill"] = "jsd_distill"
    chunk_size: int = Field(128, ge=1, description="Tokens per fp32 chunk when computing the divergence.")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of both distributions (1 in the paper).")
    tie_tolerance: float = Field(
        0.0,
        ge=0,
        description="A group whose mean divergences span at most this gets reward 0 for every response.",
    )


BUILTIN_REWARD_SPECS: tuple[type[RewardSpec], ...] = (
    ExactMatchRewardSpec,
    MultipleChoiceRewardSpec,
    NumericRewardSpec,
    RegexRewardSpec,
    JSDDistillRewardSpec,
)
