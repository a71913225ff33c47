"""Specs of the built-in rewards (torch-free)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field, field_validator, model_serializer, model_validator

from masters.rewards.judge_prompts import DEFAULT_JUDGE_PROMPT, DEFAULT_PARSE_PROMPT
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


class FinalAnswerRewardSpec(RewardSpec):
    """1 when the response's last ``answer : X`` states the reference's final answer exactly (trace answers)."""

    implementation: ClassVar[str] = "masters.rewards.trace:FinalAnswerReward"
    name: Literal["final_answer"] = "final_answer"
    marker: str = Field("answer :", min_length=1, description="Words that introduce the final answer.")
    use_metadata: bool = Field(True, description="Take the reference's answer from metadata['answer_text'] when "
                               "the task records it (else from the reference's own marked answer).")
    case_sensitive: bool = Field(False, description="Compare letter case too.")


class TraceFaithfulnessRewardSpec(RewardSpec):
    """Share of a trace's listed objects and intermediate counts the scene bears out (shapes_reason metadata)."""

    implementation: ClassVar[str] = "masters.rewards.trace:TraceFaithfulnessReward"
    name: Literal["trace_faithfulness"] = "trace_faithfulness"


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
    relative_tie_tolerance: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="A group whose span of D_j is below this fraction of its mean D_j is a tie (reward 0 for "
        "every response): a span that small is noise stretched to [0, 1]. 0: the paper's (only exact ties).",
    )

    @model_serializer(mode="wrap")
    def _later_fields_at_default(self, handler: Any) -> Any:
        """Fields added after results were published stay out of dumps (and so of stage identities)
        while at their default: adding a knob does not invalidate finished stages."""
        data = handler(self)
        if isinstance(data, dict) and self.relative_tie_tolerance == 0.0:
            data.pop("relative_tie_tolerance", None)
        return data


class LLMJudgeRewardSpec(RewardSpec):
    """LLM-as-a-judge (the paper's accuracy reward): a reasoned 0/1 verdict, then a parsing prompt if unclear."""

    implementation: ClassVar[str] = "masters.rewards.judge:LLMJudgeReward"
    name: Literal["llm_judge"] = "llm_judge"
    operational_fields: ClassVar[frozenset[str]] = frozenset(
        {"batch_size", "api_key_env", "timeout_s", "max_retries", "retry_backoff_s", "concurrency", "give_up_after",
         "generation_backend"}
    )
    """Fields that change how the judge is reached, not what it answers (a score key may ignore them)."""

    @classmethod
    def conformance_example(cls, tmp_dir: Any) -> Any:
        """For the conformance kit (masters.testing): judged by a stand-in adapter, no model, no network."""
        from masters.rewards.testing import AgreeingJudge
        from masters.testing.examples import ConformanceExample

        return ConformanceExample(context={"judge_adapter": AgreeingJudge()})

    backend: Literal["adapter", "http"] = Field(
        "adapter",
        description="adapter: a local VLM judges, text only, greedy; http: an OpenAI-compatible endpoint "
        "(POST {base_url}/chat/completions, e.g. a vLLM server).",
    )
    model: Optional[str] = Field(
        None,
        description="adapter: local checkpoint directory of the judge; null judges with the run's unmasked "
        "teacher (the paper's choice).",
    )
    generation_backend: Optional[Union[str, dict[str, Any]]] = Field(
        None, description="adapter: decode through this generation backend (a name such as vllm, whose greedy rows "
        "equal hf's, or {name: ..., fields}) instead of the adapter's transformers generate; null: the adapter's.",
    )
    max_new_tokens: int = Field(256, ge=1, description="Longest judge reply in tokens (both prompts).")
    batch_size: int = Field(16, ge=1, description="adapter: prompts per generate() call.")
    base_url: Optional[str] = Field(
        None, description="http: the API root, e.g. http://localhost:8000/v1 (vLLM's default).",
    )
    model_name: Optional[str] = Field(
        None, description="http: the served model name sent as `model`; null omits it (vLLM then uses its only model).",
    )
    api_key_env: Optional[str] = Field(
        None, description="http: name of the environment variable holding the API key (never the key itself).",
    )
    timeout_s: float = Field(120.0, gt=0, description="http: seconds to wait for one reply.")
    max_retries: int = Field(
        3, ge=0, description="http: retries of a request after a 429, 5xx, dropped connection or timeout.",
    )
    retry_backoff_s: float = Field(
        1.0,
        ge=0,
        description="http: first wait between retries in seconds, doubled each retry (Retry-After wins when longer).",
    )
    concurrency: int = Field(4, ge=1, description="http: requests in flight at once.")
    give_up_after: int = Field(
        5, ge=0, description="http: after this many prompts in a row fail every retry, the rest of the batch is left "
        "unscored without being sent (0: never give up).",
    )
    judge_prompt: str = Field(
        DEFAULT_JUDGE_PROMPT,
        description="Judging prompt; slots {question} {reference} {response} {choices}. It should ask for a "
        "short justification then the score inside <answer></answer>.",
    )
    parse_prompt: str = Field(
        DEFAULT_PARSE_PROMPT,
        description="Parsing prompt for an unclear verdict; slots {judgment} (the judge's reply) and the "
        "judging slots.",
    )
    unparseable: Literal["unscored", "zero"] = Field(
        "unscored",
        description="A verdict neither prompt makes clear: unscored (judged again next run) or zero.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {value!r} (e.g. http://localhost:8000/v1)")
        if parts.path.rstrip("/").endswith("/chat/completions"):
            raise ValueError("give the API root (e.g. http://localhost:8000/v1); /chat/completions is added")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: Optional[str]) -> Optional[str]:
        import re

        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("give the name of an environment variable (e.g. OPENAI_API_KEY), not the key itself")
        return value

    @field_validator("judge_prompt", "parse_prompt")
    @classmethod
    def _slots(cls, value: str, info: Any) -> str:
        from masters.rewards.judge_prompts import template_problems

        problems = template_problems(value, "judge" if info.field_name == "judge_prompt" else "parse")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _backend_fields(self) -> "LLMJudgeRewardSpec":
        http_only = ("base_url", "model_name", "api_key_env")
        if self.backend == "http":
            if not self.base_url:
                raise ValueError("backend http needs base_url (e.g. http://localhost:8000/v1)")
            if self.model is not None:
                raise ValueError("`model` is a checkpoint path for backend adapter; for http set model_name")
        else:
            given = [f for f in http_only if getattr(self, f) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to backend http (set backend: http)")
        return self


BUILTIN_REWARD_SPECS: tuple[type[RewardSpec], ...] = (
    ExactMatchRewardSpec,
    FinalAnswerRewardSpec,
    TraceFaithfulnessRewardSpec,
    MultipleChoiceRewardSpec,
    NumericRewardSpec,
    RegexRewardSpec,
    JSDDistillRewardSpec,
    LLMJudgeRewardSpec,
)
