"""What every conformance kit shares: how a component under test is named, built and reported.

A kit accepts a component as a registered name, a ``{"name": ..., field: ...}`` mapping, a spec
class or a spec instance (an unregistered, third-party spec works too). A name or class is built
from its **conformance example**:

* ``conformance_example`` on the spec class, when it has one: a mapping of field values, or a
  callable (a ``classmethod`` or ``staticmethod``) taking a fresh temporary directory, where it may
  write a small dataset or checkpoint, and returning such a mapping or a :class:`ConformanceExample`
  (field values plus the keyword context ``spec.build(**context)`` needs, such as a judge model);
* otherwise the defaults, plus the first ``Field(examples=[...])`` of each required field.

A spec with a required field and neither fails with :class:`MissingExampleError` naming the field
and the fix: a kit never silently skips a component it cannot build. A check that does not apply
to a component (a rule the component declares it does not keep) raises :class:`NotApplicable`,
which the pytest plugin reports as a skip with the reason.
"""

from __future__ import annotations

import contextlib
import inspect
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from masters.testing.adapters import ConformanceError

__all__ = ["ConformanceExample", "MissingExampleError", "NotApplicable", "example_for", "resolve_spec",
           "require", "spec_label", "workdir"]


class NotApplicable(Exception):
    """This check does not apply to this component (it declares that it does not keep the rule)."""


class MissingExampleError(ConformanceError):
    """A component with required fields gave the kit no way to build it."""


@dataclass(frozen=True)
class ConformanceExample:
    """A buildable example of a component: spec field values and the build context."""

    fields: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


def run_checks(kind: str, table: Mapping[str, Callable[[Any], None]], case: Any, checks: Iterable[str]
               ) -> dict[str, str]:
    """Run ``checks`` from a kit's ``{name: check}`` table on one case: ``{check: "ok" | "n/a: why"}``;
    the first failure raises (one report shape for every kit)."""
    report = {}
    for check in checks:
        if check not in table:
            raise ValueError(f"unknown {kind} check {check!r}; checks: {', '.join(table)}")
        try:
            table[check](case)
            report[check] = "ok"
        except NotApplicable as exc:
            report[check] = f"n/a: {exc}"
    return report


def require(condition: bool, error: type[ConformanceError], check: str, label: str, message: str) -> None:
    """Raise ``error("[check] label: message")`` unless ``condition``."""
    if not condition:
        raise error(f"[{check}] {label}: {message}")


def spec_label(spec: Any) -> str:
    return f"{getattr(type(spec), 'kind', '') or 'component'} {getattr(spec, 'name', type(spec).__name__)!r}"


@contextlib.contextmanager
def workdir(prefix: str = "masters-conformance-") -> Iterator[Path]:
    """A temporary directory for one check (datasets an example writes live as long as the check)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def _defaults_and_field_examples(spec_cls: type) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    missing = []
    for name, info in spec_cls.model_fields.items():
        if name == "name" or not info.is_required():
            continue
        if info.examples:
            fields[name] = info.examples[0]
        else:
            missing.append(name)
    if missing:
        kind = getattr(spec_cls, "kind", "component")
        raise MissingExampleError(
            f"[example] {kind} spec {spec_cls.__name__} has required field(s) {', '.join(missing)} and no "
            "conformance example, so the kit cannot build it. Give the spec class a `conformance_example`: a "
            "dict of field values, or a classmethod `conformance_example(cls, tmp_dir)` that writes what the "
            "fields point at (a small dataset, a checkpoint) under tmp_dir and returns the field values "
            "(or a masters.testing.ConformanceExample(fields=..., context=...)); or give each required field "
            "Field(examples=[...])."
        )
    return fields


def example_for(spec_cls: type, tmp_dir: Path | None = None) -> ConformanceExample:
    """The conformance example of a spec class (see the module docstring)."""
    provided = getattr(spec_cls, "conformance_example", None)
    if provided is None:
        return ConformanceExample(_defaults_and_field_examples(spec_cls))
    if callable(provided):
        if tmp_dir is None:
            raise ValueError("this spec's conformance_example needs a temporary directory")
        takes_dir = any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                        for p in inspect.signature(provided).parameters.values())
        provided = provided(Path(tmp_dir)) if takes_dir else provided()
    if isinstance(provided, ConformanceExample):
        return provided
    if isinstance(provided, Mapping):
        return ConformanceExample(dict(provided))
    raise TypeError(f"{spec_cls.__name__}.conformance_example gave {type(provided).__name__}; expected a mapping "
                    "of field values or a masters.testing.ConformanceExample")


def resolve_spec(kind: str, component: Any, tmp_dir: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """``(spec, build context)`` of a component given as a registered name, a mapping with ``name``,
    a spec class or a spec instance (an instance is used as given, with no context)."""
    from masters.specs import ComponentSpec

    if isinstance(component, ComponentSpec):
        return component, {}
    given: dict[str, Any] = {}
    if isinstance(component, type) and issubclass(component, ComponentSpec):
        spec_cls = component
    else:
        if isinstance(component, str):
            component = {"name": component}
        if not isinstance(component, Mapping) or "name" not in component:
            raise TypeError(f"expected a {kind} name, a mapping with `name`, a spec class or a spec, got {component!r}")
        from masters.plugins import get_components

        given = dict(component)
        spec_cls = get_components().registry(kind).get(str(given["name"])).spec_cls
    if spec_cls.kind != kind:
        raise TypeError(f"{spec_cls.__name__} is a {spec_cls.kind} spec, not a {kind}")
    try:
        example = example_for(spec_cls, tmp_dir)
    except MissingExampleError:
        if not set(_required(spec_cls)) <= set(given):
            raise
        example = ConformanceExample()
    fields = {**example.fields, **{k: v for k, v in given.items() if k != "name"}}
    return spec_cls(**fields), dict(example.context)


def _required(spec_cls: type) -> list[str]:
    return [n for n, info in spec_cls.model_fields.items() if n != "name" and info.is_required()]
