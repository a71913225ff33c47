"""The demo's own config: a small strict spec (torch-free), separate from RunSpec.

The demo composes several runs (teacher training, student warm-up, Masters, two baselines), so it
has its own fields; each phase becomes an ordinary RunSpec handed to the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, model_validator

from masters.specs import StrictModel
from masters.tasks.specs import ShapesTaskSpec

# Questions a tiny model answers from colour, count, size and place; "shape" and "exists" need
# shape recognition at 3-7 px, which a from-scratch teacher learns far more slowly (measured).
DEMO_QUESTION_TYPES = ("color", "count", "size", "position")
PHASES: tuple[str, ...] = ("data", "teacher", "student", "masters", "baselines", "evaluate")


class DemoModel(StrictModel):
    """A tiny VLM built from scratch and trained with SFT on the shapes task's reference answers."""

    family: str = Field("llava", description="Tiny model family (masters.models.tiny.TINY_FAMILIES).")
    size: Literal["tiny", "small"] = Field("tiny", description="Base dimensions (masters.models.tiny.SIZES).")
    dims: dict[str, int] = Field(default_factory=dict, description="Overrides of single Dims fields.")
    patch: int = Field(16, ge=4, description="Vision patch size in pixels (the images are 32 px).")
    seed: int = Field(0, ge=0, lt=2**63, description="Initialisation seed.")
    n_train: int = Field(1024, ge=1, description="Training questions (a prefix of the shapes train split).")
    passes: int = Field(1, ge=1, description="Passes over those questions.")
    batch_size: int = Field(32, ge=1, description="Questions per optimizer step.")
    learning_rate: float = Field(5e-4, gt=0, description="AdamW learning rate (constant).")


class DemoDistill(StrictModel):
    """The Masters run and the baselines trained beside it (same questions, steps and learning rate)."""

    n_train: int = Field(512, ge=1, description="Training questions for Masters and the baselines.")
    questions_per_step: int = Field(4, ge=1, description="Question groups per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, description="AdamW learning rate (paper: 1e-6).")
    r_max: float = Field(0.2, ge=0, lt=1, description="Largest mask ratio (paper default 0.2).")
    step: float = Field(0.05, gt=0, lt=1, description="Restore step (paper default 0.05).")
    n_teacher: int = Field(4, ge=0, description="Teacher responses per group (paper: 4).")
    n_student: int = Field(4, ge=0, description="Student responses per group (paper: 4).")
    n_teacher_responses: int = Field(4, ge=1, description="Banked responses per question per level (paper: 8).")
    n_student_responses: int = Field(4, ge=0, description="Banked student responses per question (paper: 8).")
    max_new_tokens: int = Field(4, ge=1, description="Longest banked response (answers are one word + EOS).")
    baselines: tuple[Literal["sft", "naive_kd"], ...] = Field(("sft", "naive_kd"))


class DemoBudgets(StrictModel):
    """Seconds each phase should take on 2 CPU cores; exceeding one prints a warning, never stops."""

    data: float = Field(10, gt=0)
    teacher: float = Field(120, gt=0)
    student: float = Field(20, gt=0)
    masters: float = Field(70, gt=0)
    baselines: float = Field(40, gt=0)
    evaluate: float = Field(20, gt=0)

    def of(self, phase: str) -> float:
        return float(getattr(self, phase))


class DemoSpec(StrictModel):
    """Everything ``masters demo`` does: the task, the teacher, the student, the distillation runs."""

    output_dir: str = Field("runs/demo", description="Run directory: models, banks, plots, report.")
    cache_dir: Optional[str] = Field(
        None, description="Where trained teachers and base students are kept for later runs "
        "(default: OUTPUT_DIR/cache). Keyed by their settings, so a changed setting trains anew.")
    threads: int = Field(1, ge=1, description="torch intra-op threads (1 is fastest for tiny models).")
    seed: int = Field(0, ge=0, lt=2**63, description="Run seed of the distillation runs (student data order, groups).")
    data: ShapesTaskSpec = Field(
        default_factory=lambda: ShapesTaskSpec(forms=("open",), question_types=DEMO_QUESTION_TYPES),
        description="The shapes task (n_train / n_test here are ignored: each phase sets its own).")
    n_test: int = Field(300, ge=1, description="Test questions every model is evaluated on.")
    teacher: DemoModel = Field(default_factory=lambda: DemoModel(size="small", n_train=4000, passes=4, seed=1))
    student: DemoModel = Field(default_factory=lambda: DemoModel(size="tiny", n_train=2048, passes=1, seed=2))
    distill: DemoDistill = Field(default_factory=DemoDistill)
    budgets: DemoBudgets = Field(default_factory=DemoBudgets)
    min_teacher_accuracy: float = Field(0.8, ge=0, le=1, description="Warn below this teacher accuracy.")
    min_teacher_margin: float = Field(0.2, ge=0, le=1, description="Warn when the teacher leads the base "
                                      "student by less than this.")

    @model_validator(mode="before")
    @classmethod
    def _older_data_form(cls, data: object) -> object:
        """``data: {source: shapes}`` (before tasks were components) means ``data: {name: shapes}``."""
        if isinstance(data, dict) and isinstance(data.get("data"), dict) and "source" in data["data"]:
            task = dict(data["data"])
            task.setdefault("name", task.pop("source"))
            data = {**data, "data": task}
        return data

    @model_validator(mode="after")
    def _check(self) -> DemoSpec:
        from fractions import Fraction

        r, s = Fraction(str(self.distill.r_max)), Fraction(str(self.distill.step))
        if r and r % s:
            raise ValueError(f"distill.step {self.distill.step} does not divide distill.r_max {self.distill.r_max}")
        if self.distill.n_teacher + self.distill.n_student == 0:
            raise ValueError("distill.n_teacher + distill.n_student must be at least 1")
        if self.distill.n_teacher > self.distill.n_teacher_responses:
            raise ValueError("distill.n_teacher exceeds distill.n_teacher_responses (groups draw from the bank)")
        if self.distill.n_student > self.distill.n_student_responses:
            raise ValueError("distill.n_student exceeds distill.n_student_responses (groups draw from the bank)")
        return self

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.output_dir) / "cache"


def load_demo_spec(path: str | Path | None = None, **overrides: object) -> DemoSpec:
    """The demo spec from a YAML file (or the defaults), with top-level ``overrides`` applied."""
    from pydantic import ValidationError

    from masters.errors import SpecError
    from masters.config import _problem
    from masters.config import read_config

    data = dict(read_config(path)) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return DemoSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_problem(DemoSpec, err) for err in exc.errors()], source=str(path) if path else None) from None
