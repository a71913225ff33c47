"""Strict pydantic specs: the base class of every component kind, and the plugin-free parts of a run.

Every component spec is a frozen pydantic model with ``extra="forbid"`` whose ``name`` field is a
``Literal``: that literal is the registry key and the discriminator of the per-kind union. The
unions (and so ``RunSpec``) are assembled after plugins load, in :mod:`masters.config`; this module
imports neither plugins nor torch.
"""

from __future__ import annotations

import importlib
import math
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from masters.errors import MastersError
from masters.interfaces import ObjectiveNeeds, VLMPart
from masters.ratios import Ratio


class StrictModel(BaseModel):
    """Frozen, no unknown fields: a typo in a config is an error, never silently ignored.

    Floats must be finite: ``.inf`` or ``.nan`` in a config is refused wherever a float is read.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class ComponentSpec(StrictModel):
    """Base of every component spec. Subclasses set ``kind``, ``implementation`` and ``name``.

    ``implementation`` is ``"package.module:ClassName"``; it is imported only by :meth:`build`, so
    registering, listing and validating never import what the component needs at run time.
    """

    kind: ClassVar[str] = ""
    implementation: ClassVar[str] = ""
    name: str

    def build(self, **context: Any) -> Any:
        """Import the implementation and construct it from this spec (``Impl(self, **context)``)."""
        module_name, _, attr = self.implementation.partition(":")
        if not module_name or not attr:
            raise MastersError(
                f"{type(self).__name__}.implementation is {self.implementation!r}",
                where=f"{self.kind} {self.name!r}",
                fix="set implementation = 'package.module:ClassName' on the spec class",
            )
        impl = getattr(importlib.import_module(module_name), attr)
        return impl(self, **context)


class MaskerSpec(ComponentSpec):
    """Base for maskers: which tensors are in scope (method.md section 2)."""

    kind: ClassVar[str] = "masker"
    # "weights": the masker scores weights and the runtime zeroes them (every built-in but one, and
    # what the conformance kit checks); "logits": the masker changes the teacher's output instead
    # and brings its own runtime (``teacher(model, levels)``), e.g. the temperature control.
    perturbs: ClassVar[Literal["weights", "logits"]] = "weights"
    parts: tuple[VLMPart, ...] = Field(
        ("vision", "projector", "language"),
        description="VLM parts whose 2-D linear weights are masked.",
    )
    include: tuple[str, ...] = Field(
        (), description="fnmatch patterns of parameter names to mask; empty means every in-scope weight."
    )
    exclude: tuple[str, ...] = Field(
        (), description="fnmatch patterns of parameter names never masked (applied after include)."
    )
    memory: Literal["stored", "indexed", "on_the_fly"] = Field(
        "stored",
        description="stored: zero weights in place, keep the masked values and a bit mask to restore "
        "(about r_max x bytes/weight + 1/8 byte/param); indexed: keep the masked values and their int32 "
        "positions ordered by level (r_max x (bytes/weight + 4)), so a level switch rewrites only the "
        "weights that change; on_the_fly: never modify weights, apply the mask in each forward (no copy, "
        "slower forward).",
    )


class ScheduleSpec(ComponentSpec):
    """Base for restore schedules: a largest ratio and the step that quantises the levels.

    ``uses_step`` says whether the schedule's levels are multiples of ``step``; only then must
    ``step`` divide ``r_max`` (a schedule with levels of its own, e.g. two explicit levels, sets it
    to False and validates whatever ``step`` is).
    """

    kind: ClassVar[str] = "schedule"
    uses_step: ClassVar[bool] = True
    # Levels never rise during training (restoring only); the schedule kit checks it unless False.
    monotone: ClassVar[bool] = True
    r_max: Ratio = Field(Ratio(2000), description="Mask ratio at the start of training (paper default 0.2).")
    step: Ratio = Field(Ratio(500), description="Restore step s; levels are multiples of it (paper default 0.05).")

    @model_validator(mode="after")
    def _step_divides_r_max(self) -> ScheduleSpec:
        if self.r_max.bp >= 10_000:
            raise ValueError(f"r_max must be below 1, got {self.r_max}")
        if self.r_max.bp > 0 and type(self).uses_step:
            if self.step.bp == 0:
                raise ValueError("step must be positive when r_max is above 0")
            if self.r_max.bp % self.step.bp:
                raise ValueError(
                    f"step {self.step} does not divide r_max {self.r_max}: levels would not end at 0"
                )
        return self


class RewardSpec(ComponentSpec):
    """Base for rewards. ``signal`` says when it is computed: offline (accuracy) or in training."""

    kind: ClassVar[str] = "reward"
    signal: ClassVar[Literal["accuracy", "distillation"]] = "accuracy"
    weight: float = Field(1.0, ge=0, description="Weight of this reward in the total reward R.")


class AdapterSpec(ComponentSpec):
    """Base for VLM adapters: how a model family is loaded and fed."""

    kind: ClassVar[str] = "adapter"
    model_types: ClassVar[tuple[str, ...]] = ()
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype when loading; auto keeps the checkpoint's."
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "xformers"] = Field(
        "auto", description="auto: xformers on CUDA when installed, SDPA otherwise."
    )
    min_pixels: Optional[int] = Field(None, gt=0, description="Smallest image area fed to the vision tower.")
    max_pixels: Optional[int] = Field(None, gt=0, description="Largest image area fed to the vision tower.")


class ObjectiveSpec(ComponentSpec):
    """Base for training objectives: what the training step optimises.

    :meth:`requirements` declares (torch-free) what the objective needs from the step; the trainer
    computes exactly that and calls the implementation's ``loss`` (:class:`masters.interfaces.Objective`).
    """

    kind: ClassVar[str] = "objective"

    def requirements(self) -> ObjectiveNeeds:
        """Responses, teacher level and step signals this objective needs (may depend on its fields)."""
        raise NotImplementedError(f"{type(self).__name__} must define requirements()")


class TaskSpec(ComponentSpec):
    """Base for tasks (data sources): build the train, validation and test splits.

    ``default_rewards`` names the accuracy rewards a run uses when its config lists none.
    """

    kind: ClassVar[str] = "task"
    default_rewards: ClassVar[tuple[str, ...]] = ("exact_match",)

    def identity(self) -> dict[str, Any]:
        """What stage identities hash of the task. Identities predate tasks as components (they were
        ``data: {source: NAME, ...}``), so the name enters under ``source``: finished stages stay valid."""
        return {"source": self.name, **self.model_dump(mode="json", exclude={"name"})}


class BackendSpec(ComponentSpec):
    """Base for generation backends: the engine that samples the response bank."""

    kind: ClassVar[str] = "backend"

    def row_identity(self) -> dict[str, Any] | None:
        """What of the backend decides the bank's rows, for the bank's identity. ``None`` means its
        rows equal the ``hf`` backend's row for row (so banks are shared and resumable across them);
        a backend with its own sampler returns its name and fields."""
        return self.model_dump(mode="json")


def component_name(spec_cls: type[ComponentSpec]) -> str:
    """The registry key of a spec class: the single value of its ``name: Literal[...]`` field."""
    field = spec_cls.model_fields.get("name")
    args = typing.get_args(field.annotation) if field is not None else ()
    if field is None or typing.get_origin(field.annotation) is not Literal or len(args) != 1:
        raise MastersError(
            f"{spec_cls.__module__}.{spec_cls.__name__} has no single-valued `name: Literal[...]` field",
            fix='declare it as  name: Literal["my-component"] = "my-component"',
        )
    return str(args[0])


def describe_fields(spec_cls: type[BaseModel]) -> list[dict[str, Any]]:
    """Field name, type, default, description and whether it is required, in declaration order."""
    rows = []
    for fname, info in spec_cls.model_fields.items():
        if fname == "name":
            continue
        default: Any = None
        if not info.is_required():
            value = info.get_default(call_default_factory=True)
            default = _jsonable(value)
        rows.append(
            {
                "field": fname,
                "type": _type_name(info.annotation),
                "required": info.is_required(),
                "default": default,
                "description": info.description or "",
            }
        )
    return rows


def _jsonable(value: Any) -> Any:
    if isinstance(value, Ratio):
        return float(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (Union, getattr(__import__("types"), "UnionType", Union)):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation) if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


# ---------------------------------------------------------------------------------------------
# Run spec: the parts that do not depend on plugins
# ---------------------------------------------------------------------------------------------


class ModelSpecBase(StrictModel):
    path: str = Field(description="Local checkpoint directory (config.json, weights, processor files).")

    @model_validator(mode="before")
    @classmethod
    def _path_shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data


class GenerationSpec(StrictModel):
    """Response bank generation (method.md section 4; the paper's sampling parameters)."""

    n_teacher_responses: int = Field(8, ge=1, description="Responses per question per masked-teacher level.")
    n_student_responses: int = Field(8, ge=0, description="Student responses per question, generated once.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (paper: 1.0).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling (paper: 0.9).")
    top_k: int = Field(50, ge=0, description="Top-k sampling; 0 disables (paper: 50).")
    repetition_penalty: float = Field(1.05, gt=0, description="Repetition penalty (paper: 1.05).")
    max_new_tokens: int = Field(256, ge=1, description="Maximum response length in tokens.")
    batch_size: int = Field(8, ge=1, description="Prompts per generate() call.")
    seed: int = Field(0, ge=0, lt=2**63, description="Bank seed: sampling and which questions each stage gets. Shared across "
                      "run seeds (decision 10), so one bank serves every seed of an experiment.")
    bank_levels: Literal["scheduled", "all"] = Field(
        "scheduled",
        description="scheduled: a question is generated only at the level(s) where training uses it; "
        "all: every level for every question (the paper; sweeps need it).",
    )


class LoraSpec(StrictModel):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha.")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] = Field(("q_proj", "k_proj", "v_proj", "o_proj"))


class TrainingSpec(StrictModel):
    """How the student is trained, whatever the objective (method.md section 6); defaults are the paper's.

    What the step optimises (the Masters objective or a baseline, with its own fields such as
    ``beta``) is the top-level ``objective``; ``training.method`` is accepted as shorthand.
    """

    learning_rate: float = Field(1e-6, gt=0, description="AdamW learning rate, constant (paper: 1e-6).")
    weight_decay: float = Field(0.0, ge=0)
    n_teacher: int = Field(4, ge=0, description="Teacher responses per group (paper best: 4).")
    n_student: int = Field(4, ge=0, description="Student responses per group (paper best: 4).")
    questions_per_step: int = Field(1, ge=1, description="Question groups per micro-batch.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    passes: int = Field(1, ge=1, description="Passes over the training questions across all stages.")
    token_averaging: Literal["sequence", "token"] = Field(
        "sequence", description="sequence: mean over each response's tokens, then over the group."
    )
    max_grad_norm: Optional[float] = Field(1.0, gt=0, description="Gradient clipping; null disables.")
    diagnostics_every: int = Field(
        0, ge=0,
        description="Every N optimizer steps, also the diagnostics that cost extra passes: JSD to the unmasked "
        "teacher (a level-0 teacher forward; diag/jsd0_*) and each loss term's gradient norm (one backward each; "
        "diag/grad_norm_*, in one process only). 0: never. Changes nothing that is trained.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no")
    gradient_checkpointing: bool = Field(False)
    lora: Optional[LoraSpec] = Field(None, description="Train a LoRA adapter instead of the full student.")
    teacher_signal: Literal["online", "cached"] = Field(
        "online", description="online: masked teacher in memory; cached: precomputed top-k log-probs."
    )
    cache_top_k: int = Field(64, ge=1, description="Teacher log-probs kept per token in cached mode.")
    checkpoint_every: int = Field(50, ge=1, description="Optimizer steps between checkpoints.")
    report_to: tuple[Literal["tensorboard", "mlflow"], ...] = Field(
        (), description="Experiment trackers (accelerate's), besides metrics.jsonl: tensorboard, mlflow "
        "(local, under the training directory). Not part of the training identity.")

    @model_validator(mode="after")
    def _group_not_empty(self) -> TrainingSpec:
        if self.n_teacher + self.n_student == 0:
            raise ValueError("n_teacher + n_student must be at least 1")
        return self


class RunSpecBase(StrictModel):
    output_dir: str = Field("runs/default", description="Where every stage writes its outputs.")
    bank_dir: Optional[str] = Field(
        None, description="Where the response bank lives (default: output_dir/bank). Runs that share "
        "generation settings (seeds, ablation cells) can share one bank; rows are keyed, so each adds what it needs.")
    seed: int = Field(0, ge=0, lt=2**63, description="Student initialisation and data order; teacher and bank are shared.")
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    @model_validator(mode="before")
    @classmethod
    def _teacher_shorthand(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "teacher" in data:
            data = dict(data)
            if "teachers" in data:
                raise ValueError("give either `teacher` or `teachers`, not both")
            data["teachers"] = [data.pop("teacher")]
        return data




if TYPE_CHECKING:  # what the assembled RunSpec holds (masters.config builds it after plugins load)

    class ModelSpec(ModelSpecBase):
        adapter: AdapterSpec | None

    class TeacherSpec(ModelSpec):
        schedule: ScheduleSpec | None
        share: float

    class RunSpec(RunSpecBase):
        """A whole run: the type the engine's entry points take."""

        teachers: list[TeacherSpec]
        student: ModelSpec
        masker: MaskerSpec
        schedule: ScheduleSpec
        rewards: list[RewardSpec]
        objective: ObjectiveSpec
        task: TaskSpec
        backend: BackendSpec
else:
    ModelSpec = ModelSpecBase
    RunSpec = RunSpecBase
