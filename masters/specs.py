"""Strict pydantic specs for components and for a whole run. No torch import here.

Every component spec is a frozen pydantic model with ``extra="forbid"`` whose ``name`` field is a
``Literal``: that literal is the registry key and the discriminator of the per-kind union. The
unions (and so ``RunSpec``) are assembled after plugins load: :func:`run_spec_model`.
"""

from __future__ import annotations

import functools
import importlib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from masters.errors import ConfigError, MastersError, SpecError, unknown_name_message
from masters.interfaces import VLMPart
from masters.ratios import Ratio


class StrictModel(BaseModel):
    """Frozen, no unknown fields: a typo in a config is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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
    """Base for restore schedules: a largest ratio and the step that quantises the levels."""

    kind: ClassVar[str] = "schedule"
    r_max: Ratio = Field(Ratio(2000), description="Mask ratio at the start of training (paper default 0.2).")
    step: Ratio = Field(Ratio(500), description="Restore step s; levels are multiples of it (paper default 0.05).")

    @model_validator(mode="after")
    def _step_divides_r_max(self) -> ScheduleSpec:
        if self.r_max.bp >= 10_000:
            raise ValueError(f"r_max must be below 1, got {self.r_max}")
        if self.r_max.bp > 0:
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
    seed: int = Field(0, description="Bank seed: sampling and which questions each stage gets. Shared across "
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


# How responses with a negative advantage enter the policy term (see masters.engine.losses).
NegativeAdvantages = Literal["full", "probability_weighted", "zero"]


class TrainingSpec(StrictModel):
    """The offline RL step (method.md section 6); defaults are the paper's."""

    method: Literal["masters", "sft", "naive_kd", "progressive_kd", "masters_no_distill_reward", "fixed_mask"] = Field(
        "masters", description="The full method or one of the baselines run by the same engine."
    )
    negative_advantages: NegativeAdvantages = Field(
        "full", description="How responses with a negative advantage enter the policy term: full (the paper's "
        "-A log p), probability_weighted (each token's push-down scaled by the student's probability of it, so "
        "it fades as that probability goes to 0), zero (negative advantages set to 0: reinforce only)."
    )
    learning_rate: float = Field(1e-6, gt=0, description="AdamW learning rate, constant (paper: 1e-6).")
    weight_decay: float = Field(0.0, ge=0)
    n_teacher: int = Field(4, ge=0, description="Teacher responses per group (paper best: 4).")
    n_student: int = Field(4, ge=0, description="Student responses per group (paper best: 4).")
    questions_per_step: int = Field(1, ge=1, description="Question groups per micro-batch.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    passes: int = Field(1, ge=1, description="Passes over the training questions across all stages.")
    beta: float = Field(0.1, ge=0, description="KL weight to the reference (initial) student, k3 estimator.")
    distill_loss_weight: float = Field(1.0, ge=0, description="Weight of the JSD distillation loss.")
    token_averaging: Literal["sequence", "token"] = Field(
        "sequence", description="sequence: mean over each response's tokens, then over the group."
    )
    max_grad_norm: Optional[float] = Field(1.0, gt=0, description="Gradient clipping; null disables.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no")
    gradient_checkpointing: bool = Field(False)
    lora: Optional[LoraSpec] = Field(None, description="Train a LoRA adapter instead of the full student.")
    teacher_signal: Literal["online", "cached"] = Field(
        "online", description="online: masked teacher in memory; cached: precomputed top-k log-probs."
    )
    cache_top_k: int = Field(64, ge=1, description="Teacher log-probs kept per token in cached mode.")
    checkpoint_every: int = Field(50, ge=1, description="Optimizer steps between checkpoints.")

    @model_validator(mode="after")
    def _group_not_empty(self) -> TrainingSpec:
        if self.n_teacher + self.n_student == 0:
            raise ValueError("n_teacher + n_student must be at least 1")
        return self


class ShapesData(StrictModel):
    """The synthetic shapes VQA task generated by masters (deterministic by seed)."""

    source: Literal["shapes"] = "shapes"
    n_train: int = Field(512, ge=1)
    n_validation: int = Field(128, ge=0)
    n_test: int = Field(256, ge=1)
    image_size: int = Field(32, ge=16)
    seed: int = 0
    forms: tuple[Literal["open", "multiple_choice"], ...] = ("open", "multiple_choice")
    question_types: tuple[Literal["color", "shape", "count", "size", "position", "exists"], ...] = Field(
        ("color", "shape", "count", "size", "position", "exists"),
        description="Kinds of question asked; fewer kinds make the task easier to learn.",
    )
    max_shapes: int = Field(3, ge=1, le=4, description="Most shapes in one image (one per quadrant).")


class LlavaJsonData(StrictModel):
    """LLaVA-style JSON conversations with image paths."""

    source: Literal["llava_json"] = "llava_json"
    path: str = Field(description="JSON or JSONL file of records with `image` and `conversations`.")
    image_root: str = Field(".", description="Directory image paths are relative to.")
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)


class HFDatasetData(StrictModel):
    """A Hugging Face `datasets` table saved on disk (``save_to_disk``) or Parquet files."""

    source: Literal["hf_datasets"] = "hf_datasets"
    path: str
    split: str = "train"
    image_column: str = "image"
    question_column: str = "question"
    answer_column: str = "answer"
    choices_column: Optional[str] = None
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)


DataSpec = Annotated[Union[ShapesData, LlavaJsonData, HFDatasetData], Field(discriminator="source")]


class RunSpecBase(StrictModel):
    output_dir: str = Field("runs/default", description="Where every stage writes its outputs.")
    bank_dir: Optional[str] = Field(
        None, description="Where the response bank lives (default: output_dir/bank). Runs that share "
        "generation settings (seeds, ablation cells) can share one bank; rows are keyed, so each adds what it needs.")
    seed: int = Field(0, description="Student initialisation and data order; teacher and bank are shared.")
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    data: DataSpec = Field(default_factory=ShapesData)

    @model_validator(mode="before")
    @classmethod
    def _teacher_shorthand(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "teacher" in data:
            data = dict(data)
            if "teachers" in data:
                raise ValueError("give either `teacher` or `teachers`, not both")
            data["teachers"] = [data.pop("teacher")]
        return data


COMPONENT_FIELDS: dict[str, str] = {"masker": "masker", "schedule": "schedule", "rewards": "reward", "adapter": "adapter"}
DEFAULT_COMPONENTS: dict[str, Any] = {
    "masker": {"name": "magnitude"},
    "schedule": {"name": "staircase"},
    "rewards": [{"name": "exact_match"}, {"name": "jsd_distill"}],
}


def _name_shorthand(value: Any) -> Any:
    """``masker: magnitude`` means ``masker: {name: magnitude}``."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, (list, tuple)):
        return [_name_shorthand(v) for v in value]
    return value


def _check_component_name(kind: str, item: Any) -> None:
    """Unknown names get did-you-mean and the failed-plugin hint, whatever the union's size."""
    from masters.plugins import get_components

    if item is None or not isinstance(item, Mapping):
        return  # pydantic reports the wrong type
    if "name" not in item:
        raise ValueError(f"missing `name`: which {kind} to use (`masters list {kind}s`)")
    registry = get_components().registry(kind)
    if str(item["name"]) not in registry:
        raise ValueError(unknown_name_message(kind, str(item["name"]), registry.names()) + _failed_plugins_hint())


def _union(kind: str) -> Any:
    from masters.plugins import get_components

    classes = tuple(entry.spec_cls for entry in get_components().registry(kind))
    if not classes:
        raise MastersError(f"no {kind} is registered", fix="reinstall masters-distill: built-ins are missing")
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="name")]


@functools.lru_cache(maxsize=1)
def run_spec_model() -> type[StrictModel]:
    """Build ``RunSpec`` with one discriminated union per component kind from the registries."""
    masker_u, schedule_u, reward_u, adapter_u = (_union(k) for k in ("masker", "schedule", "reward", "adapter"))

    def shorthand(cls: Any, value: Any, info: Any) -> Any:
        value = _name_shorthand(value)
        kind = "adapter" if info.field_name == "adapter" else COMPONENT_FIELDS[info.field_name]
        for item in value if isinstance(value, list) else [value]:
            _check_component_name(kind, item)
        return value

    model_spec = create_model(
        "ModelSpec",
        __base__=ModelSpecBase,
        __validators__={"_adapter_name": field_validator("adapter", mode="before")(classmethod(shorthand))},
        adapter=(Optional[adapter_u], Field(None, description="Adapter; omitted: claimed from config.json.")),
    )
    teacher_spec = create_model(
        "TeacherSpec",
        __base__=model_spec,
        __validators__={"_schedule_name": field_validator("schedule", mode="before")(classmethod(shorthand))},
        schedule=(Optional[schedule_u], Field(None, description="This teacher's own restore schedule.")),
        share=(float, Field(1.0, gt=0, description="Relative share of training steps for this teacher.")),
    )
    run_spec = create_model(
        "RunSpec",
        __base__=RunSpecBase,
        __validators__={
            "_component_names": field_validator("masker", "schedule", "rewards", mode="before")(
                classmethod(shorthand)
            )
        },
        teachers=(list[teacher_spec], Field(min_length=1, description="Teacher chain, smallest first.")),
        student=(model_spec, Field(description="The student model to distil into.")),
        masker=(masker_u, Field(default_factory=lambda: DEFAULT_COMPONENTS["masker"])),
        schedule=(schedule_u, Field(default_factory=lambda: DEFAULT_COMPONENTS["schedule"])),
        rewards=(list[reward_u], Field(default_factory=lambda: list(DEFAULT_COMPONENTS["rewards"]), min_length=1)),
    )
    run_spec.__doc__ = "A whole distillation run: models, components, generation, training and data."
    return run_spec


# ---------------------------------------------------------------------------------------------
# Loading and validating
# ---------------------------------------------------------------------------------------------


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config into a dict, with errors that name the file, line and fix."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError("config file not found", where=str(path), fix="check the path (configs/ has examples)")
    if path.is_dir():
        raise ConfigError("is a directory, not a config file", where=str(path), fix="pass a .yaml file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config: {exc}", where=str(path), fix="pass a readable UTF-8 YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML: {problem}", where=where, fix="fix the YAML syntax at that line") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping of fields, got {type(data).__name__}",
            where=str(path),
            fix="write the config as `field: value` lines (see configs/)",
        )
    return data


def validate_run_spec(data: Mapping[str, Any], *, source: str | None = None) -> Any:
    """Validate a dict into a RunSpec, collecting every error with its location path."""
    model = run_spec_model()
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError([_problem(model, err) for err in exc.errors()], source=source) from None


def load_run_spec(path: str | Path) -> Any:
    return validate_run_spec(read_config(path), source=str(path))


def validate_component(kind: str, data: Any, *, where: str | None = None) -> ComponentSpec:
    """Validate one component spec (``{"name": ..., fields}`` or a bare name) of a kind."""
    from masters.plugins import get_components

    data = _name_shorthand(data)
    if not isinstance(data, Mapping) or "name" not in data:
        raise SpecError([(where or kind, f"expected a mapping with a `name` field, got {data!r}")])
    entry = get_components().registry(kind).get(str(data["name"]), where=where)
    try:
        return entry.spec_cls.model_validate(dict(data))
    except ValidationError as exc:
        prefix = (where or entry.name).split(".")
        raise SpecError([_problem(entry.spec_cls, err, prefix=prefix) for err in exc.errors()]) from None


def _problem(model: type[BaseModel], err: Mapping[str, Any], prefix: Sequence[str] = ()) -> tuple[str, str]:
    loc = [*prefix, *(str(p) for p in err["loc"])]
    kind = err["type"]
    ctx = err.get("ctx") or {}
    msg = err["msg"]
    if kind == "union_tag_invalid":
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        component_kind = _kind_at(loc)
        msg = unknown_name_message(component_kind, str(ctx.get("tag")), sorted(tags))
        msg += _failed_plugins_hint()
    elif kind == "union_tag_not_found":
        msg = f"missing `{ctx.get('discriminator', 'name').strip(chr(39))}` (which component to use)"
    elif kind == "extra_forbidden":
        allowed = _allowed_fields(model, err["loc"][:-1])
        msg = unknown_name_message("field", loc[-1], allowed) if allowed else "unknown field"
    elif kind == "missing":
        msg = "required field is missing"
    elif kind == "value_error" and msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    shown = ".".join(loc) if loc else "(top level)"
    if kind not in ("missing", "extra_forbidden", "union_tag_invalid", "value_error") and "input" in err:
        text = repr(err["input"])
        if len(text) <= 60 and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {text})"
    return shown, msg


def _kind_at(loc: Sequence[str]) -> str:
    for part in reversed(loc):
        if part in COMPONENT_FIELDS:
            return COMPONENT_FIELDS[part]
        if part == "adapter":
            return "adapter"
    return "component"


def _failed_plugins_hint() -> str:
    from masters.plugins import get_components

    hint = get_components().failures_hint()
    return f" Note: {hint}; fix or uninstall that plugin, it may provide this name." if hint else ""


def _allowed_fields(model: Any, loc: Sequence[Any]) -> list[str]:
    """Field names of the model found at ``loc`` (best effort, for did-you-mean on typos)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, tuple):  # a union: the next loc part is the discriminator tag
            current = next((c for c in current if _tag(c) == part), None)
            continue
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is Annotated:
            annotation = args[0]
        elif origin in (list, tuple, Sequence):
            annotation = args[0]
        elif origin is Union:
            members = tuple(a for a in args if a is not type(None))
            if len(members) == 1:
                annotation = members[0]
            else:
                return tuple(_unwrap(m) for m in members)
        else:
            return annotation


def _tag(cls: Any) -> Any:
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        for key in ("name", "source"):
            field = cls.model_fields.get(key)
            if field is not None and typing.get_origin(field.annotation) is Literal:
                return typing.get_args(field.annotation)[0]
    return None


def schema_for(kind: str | None = None) -> dict[str, Any]:
    """JSON Schema of the whole RunSpec, or of every component of one kind."""
    from masters.plugins import get_components

    if kind is None:
        return run_spec_model().model_json_schema()
    registry = get_components().registry(kind)
    return {entry.name: entry.spec_cls.model_json_schema() for entry in registry}
