"""The run spec, assembled after plugins load, and loading and validating configs.

``RunSpec`` holds one discriminated union per component kind, built from the registries
(:func:`run_spec_model`). Older configs keep working: ``training.method`` and ``data.source`` are
shorthand for the top-level ``objective`` and ``task`` (:mod:`masters.legacy` maps them and prints
the new form). Nothing here imports torch.
"""

from __future__ import annotations

import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from masters.errors import ConfigError, ConfigNote, MastersError, SpecError, unknown_name_message
from masters.plugins import get_components
from masters.specs import ComponentSpec, ModelSpecBase, RunSpecBase, StrictModel

# Run-spec field -> the component kind it holds.
COMPONENT_FIELDS: dict[str, str] = {
    "masker": "masker", "schedule": "schedule", "rewards": "reward", "adapter": "adapter",
    "objective": "objective", "task": "task", "backend": "backend",
}
DEFAULT_COMPONENTS: dict[str, Any] = {
    "masker": {"name": "magnitude"},
    "schedule": {"name": "staircase"},
    "objective": {"name": "masters"},
    "task": {"name": "shapes"},
    "backend": {"name": "hf"},
}
# With no `rewards:` in a config: the task's default accuracy rewards plus this distillation reward.
DEFAULT_DISTILLATION_REWARD = "jsd_distill"


def _name_shorthand(value: Any) -> Any:
    """``masker: magnitude`` means ``masker: {name: magnitude}``."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, (list, tuple)):
        return [_name_shorthand(v) for v in value]
    return value


def _check_component_name(kind: str, item: Any) -> None:
    """Unknown names get did-you-mean and the failed-plugin hint, whatever the union's size."""
    if item is None or not isinstance(item, Mapping):
        return  # pydantic reports the wrong type
    if "name" not in item:
        raise ValueError(f"missing `name`: which {kind} to use (`masters list {kind}s`)")
    registry = get_components().registry(kind)
    if str(item["name"]) not in registry:
        hint = registry.unknown_hint(str(item["name"]))
        raise ValueError(unknown_name_message(kind, str(item["name"]), registry.names())
                         + (f" Note: {hint}." if hint else "") + _failed_plugins_hint())


def _union(kind: str) -> Any:
    classes = tuple(entry.spec_cls for entry in get_components().registry(kind))
    if not classes:
        raise MastersError(f"no {kind} is registered", fix="reinstall masters-distill: built-ins are missing")
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="name")]


def run_spec_model() -> type[StrictModel]:
    """``RunSpec`` with one discriminated union per component kind, built once per plugin set."""
    components = get_components()
    model = components.cache.get("run_spec")
    if model is None:
        model = components.cache["run_spec"] = _build_run_spec()
    return model


def default_rewards(task: Any) -> list[dict[str, Any]]:
    """The rewards of a config that lists none: the task's accuracy rewards and the distillation reward."""
    names: tuple[str, ...] = ("exact_match",)
    if isinstance(task, Mapping) and "name" in task and str(task["name"]) in get_components().registry("task"):
        names = tuple(get_components().registry("task").get(str(task["name"])).spec_cls.default_rewards)
    return [{"name": n} for n in (*names, DEFAULT_DISTILLATION_REWARD)]


def _build_run_spec() -> type[StrictModel]:
    unions = {kind: _union(kind) for kind in set(COMPONENT_FIELDS.values())}

    def shorthand(cls: Any, value: Any, info: Any) -> Any:
        value = _name_shorthand(value)
        kind = COMPONENT_FIELDS[info.field_name]
        for item in value if isinstance(value, list) else [value]:
            _check_component_name(kind, item)
        return value

    def rewards_default(cls: Any, data: Any) -> Any:
        if isinstance(data, Mapping) and "rewards" not in data:
            data = {**data, "rewards": default_rewards(_name_shorthand(data.get("task", DEFAULT_COMPONENTS["task"])))}
        return data

    model_spec = create_model(
        "ModelSpec",
        __base__=ModelSpecBase,
        __validators__={"_adapter_name": field_validator("adapter", mode="before")(classmethod(shorthand))},
        adapter=(Optional[unions["adapter"]], Field(None, description="Adapter; omitted: claimed from config.json.")),
    )
    teacher_spec = create_model(
        "TeacherSpec",
        __base__=model_spec,
        __validators__={"_schedule_name": field_validator("schedule", mode="before")(classmethod(shorthand))},
        schedule=(Optional[unions["schedule"]], Field(None, description="This teacher's own restore schedule.")),
        share=(float, Field(1.0, gt=0, description="Relative share of training steps for this teacher.")),
    )
    components = ("masker", "schedule", "rewards", "objective", "task", "backend")

    def default(field: str) -> Any:
        return Field(default_factory=lambda: dict(DEFAULT_COMPONENTS[field]),
                     description=f"The {field} (a name, or a mapping with `name` and its fields); "
                     f"`masters list {COMPONENT_FIELDS[field]}s` shows the choices.")

    run_spec = create_model(
        "RunSpec",
        __base__=RunSpecBase,
        __validators__={
            "_component_names": field_validator(*components, mode="before")(classmethod(shorthand)),
            "_rewards_default": model_validator(mode="before")(classmethod(rewards_default)),
        },
        teachers=(list[teacher_spec], Field(min_length=1, description="Teacher chain, smallest first.")),
        student=(model_spec, Field(description="The student model to distil into.")),
        masker=(unions["masker"], default("masker")),
        schedule=(unions["schedule"], default("schedule")),
        rewards=(list[unions["reward"]], Field(min_length=1, description="Accuracy and distillation rewards; "
                                               "omitted: the task's accuracy rewards plus jsd_distill.")),
        objective=(unions["objective"], default("objective")),
        task=(unions["task"], default("task")),
        backend=(unions["backend"], default("backend")),
    )
    run_spec.__doc__ = "A whole distillation run: models, components, generation, training and the task."
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
    if len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config is larger than {MAX_CONFIG_BYTES // 2**20} MiB", where=str(path),
                          fix="a run config is a few dozen lines: pass the right file")
    data = parse_yaml(text, where=str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping of fields, got {type(data).__name__}",
            where=str(path),
            fix="write the config as `field: value` lines (see configs/)",
        )
    return data


MAX_CONFIG_BYTES = 2**20
MAX_YAML_DEPTH = 64
MAX_ALIAS_EXPANSIONS = 10_000


def parse_yaml(text: str, *, where: str) -> Any:
    """Safe YAML with what a config never needs refused: duplicate keys (a second ``training:`` block
    would silently replace the first), nesting deeper than 64, more than 10,000 alias expansions."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _YamlLimit(f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, (str, int, float, bool)) or key is None:
                    if key in seen:
                        raise _YamlLimit(f"duplicate key {key!r} (first at line {seen[key].line + 1})",
                                         key_node.start_mark)
                    seen[key] = key_node.start_mark
            return super().construct_mapping(node, deep=deep)

    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _YamlLimit as exc:
        raise ConfigError(f"refused YAML: {exc.problem}", where=f"{where}:{exc.mark.line + 1}:{exc.mark.column + 1}",
                          fix="write each field once, without deep nesting or alias chains") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML: {problem}", where=at, fix="fix the YAML syntax at that line") from None
    except RecursionError:
        raise ConfigError(f"refused YAML: nested deeper than {MAX_YAML_DEPTH} levels", where=where,
                          fix="write the config without deep nesting") from None
    if _expanded_size(data, {}) - _unique_nodes(data, set()) > MAX_ALIAS_EXPANSIONS:
        raise ConfigError(f"refused YAML: more than {MAX_ALIAS_EXPANSIONS:,} alias expansions", where=where,
                          fix="write the values out instead of chaining YAML aliases")
    nul = _nul_location(data, [], set())
    if nul is not None:
        raise ConfigError(f"{nul or '(top level)'}: a string holds a NUL byte (\\0), which no path or name may hold",
                          where=where, fix="remove the \\0 (or \\x00) escape from that value")
    return data


def _nul_location(value: Any, at: list[str], seen: set[int]) -> str | None:
    """The dotted place of the first string (key or value) holding a NUL byte; None when there is none."""
    if isinstance(value, str):
        return ".".join(at) if "\x00" in value else None
    if isinstance(value, (dict, list)):
        if id(value) in seen:
            return None
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            if isinstance(key, str) and "\x00" in key:
                return ".".join([*at, repr(key)])
            found = _nul_location(child, [*at, str(key)], seen)
            if found is not None:
                return found
    return None


class _YamlLimit(Exception):
    def __init__(self, problem: str, mark: Any):
        super().__init__(problem)
        self.problem, self.mark = problem, mark


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """Nodes the value has once every shared (aliased) container is copied out; memoised by identity,
    so a billion-laughs document is measured in microseconds."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key not in memo:
        memo[key] = 0  # a (self-referencing) cycle counts once
        children = value.values() if isinstance(value, dict) else value
        memo[key] = 1 + sum(_expanded_size(v, memo) for v in children)
    return memo[key]


def _unique_nodes(value: Any, seen: set[int]) -> int:
    if not isinstance(value, (dict, list)):
        return 1
    if id(value) in seen:
        return 0
    seen.add(id(value))
    children = value.values() if isinstance(value, dict) else value
    return 1 + sum(_unique_nodes(v, seen) for v in children)


def validate_run_spec(data: Mapping[str, Any], *, source: str | None = None, notes: bool = True) -> Any:
    """Validate a dict into a RunSpec, collecting every error with its location path.

    Older forms (``training.method``, ``data.source``) are mapped to the new ones first; with
    ``notes`` each mapping is reported once as a :class:`ConfigNote` that prints the new form.
    """
    from masters.legacy import upgrade_config, written_location

    model = run_spec_model()
    written = dict(data)
    data, mapped = upgrade_config(written, where=source)
    if notes:
        for note in mapped:
            warnings.warn(ConfigNote(note), stacklevel=2)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(model, err) for err in exc.errors()]
        raise SpecError([(written_location(loc, written), msg) for loc, msg in problems], source=source) from None


def path_problems(spec: Any) -> list[tuple[str, str]]:
    """(location, problem) for every path of a run spec that cannot be what it should be: a model
    directory without config.json, a missing data file or image root, an output or bank directory
    that is a regular file or a non-empty directory of other files. Reads, never writes."""
    from masters.files import EARLIER_OUTPUT, OWNER_MARK, LOCK_NAME

    problems: list[tuple[str, str]] = []

    def model(loc: str, path: str) -> None:
        p = Path(path)
        if not p.exists():
            problems.append((loc, f"model directory {path!r} not found (a local save_pretrained directory)"))
        elif not p.is_dir():
            problems.append((loc, f"{path!r} is a file, not a model directory"))
        elif not (p / "config.json").is_file():
            problems.append((loc, f"{path!r} has no config.json: not a saved checkpoint"))

    for i, teacher in enumerate(spec.teachers):
        model(f"teachers.{i}.path" if len(spec.teachers) > 1 else "teacher", teacher.path)
    model("student", spec.student.path)
    task = spec.task
    for field, kind in (("path", "data"), ("image_root", "dir")):
        value = getattr(task, field, None)
        if not isinstance(value, str) or not value:
            continue
        p = Path(value)
        if not p.exists():
            problems.append((f"task.{field}", f"{value!r} not found"))
        elif kind == "dir" and not p.is_dir():
            problems.append((f"task.{field}", f"{value!r} is not a directory"))
    outputs = [("output_dir", spec.output_dir)] + ([("bank_dir", spec.bank_dir)] if spec.bank_dir else [])
    for loc, value in outputs:
        p = Path(value)
        if p.exists() and not p.is_dir():
            problems.append((loc, f"{value!r} is a regular file, not a directory"))
        elif p.is_dir():
            others = [c for c in p.iterdir() if c.name not in (OWNER_MARK, LOCK_NAME)]
            if others and not any((p / m).exists() for m in EARLIER_OUTPUT):
                problems.append((loc, f"{value!r} is a non-empty directory without earlier masters output "
                                 "(masters never writes among other files)"))
        else:
            parent = next((a for a in p.absolute().parents if a.exists()), None)
            if parent is not None and not parent.is_dir():
                problems.append((loc, f"{str(parent)!r} on the path is a regular file"))
    return problems


def load_run_spec(path: str | Path) -> Any:
    return validate_run_spec(read_config(path), source=str(path))


def validate_component(kind: str, data: Any, *, where: str | None = None) -> ComponentSpec:
    """Validate one component spec (``{"name": ..., fields}`` or a bare name) of a kind."""
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
    return "component"


def _failed_plugins_hint() -> str:
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
        for key in ("name",):
            field = cls.model_fields.get(key)
            if field is not None and typing.get_origin(field.annotation) is Literal:
                return typing.get_args(field.annotation)[0]
    return None


def schema_for(kind: str | None = None) -> dict[str, Any]:
    """JSON Schema of the whole RunSpec, or of every component of one kind."""
    if kind is None:
        return run_spec_model().model_json_schema()
    registry = get_components().registry(kind)
    return {entry.name: entry.spec_cls.model_json_schema() for entry in registry}
