"""One generic registry per component kind: register, get, names, describe, origin.

Entries are spec classes (pydantic, torch-free); the implementation each spec builds is imported
only when it is built, so listing and describing components stays fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from masters.errors import DuplicateComponentError, PluginLoadError, UnknownComponentError

# The seven kinds of component: everything an ablation swaps. Each has its own registration hook
# (``masters_register_<plural>`` in masters.hookspecs), its own registry and its own spec base class.
KINDS: tuple[str, ...] = ("masker", "schedule", "reward", "adapter", "objective", "task", "backend")
KIND_PLURALS = {kind: f"{kind}s" for kind in KINDS}


@dataclass(frozen=True)
class Origin:
    """Where a component came from: the distribution that shipped it and the plugin module that registered it."""

    plugin: str
    distribution: str
    version: str
    module: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} ({self.module})"


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    spec_cls: type
    origin: Origin

    @property
    def summary(self) -> str:
        doc = (self.spec_cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


T = TypeVar("T")


class Registry(Generic[T]):
    """Components of one kind, keyed by name."""

    def __init__(self, kind: str, *, hint: Callable[[str], str | None] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._hint = hint  # explains an unknown name (e.g. a plugin filtered out by the switches)

    def register(self, spec_cls: type, origin: Origin) -> Entry:
        from masters.specs import ComponentSpec, component_name

        if not (isinstance(spec_cls, type) and issubclass(spec_cls, ComponentSpec)):
            raise PluginLoadError(
                f"register() takes a ComponentSpec subclass, got {spec_cls!r}",
                where=f"plugin {origin.plugin} ({origin.module})",
                fix="pass the spec class itself, e.g. register(MyMaskerSpec)",
            )
        if spec_cls.kind != self.kind:
            raise PluginLoadError(
                f"{spec_cls.__name__} is a {spec_cls.kind!r} spec but was registered as a {self.kind}",
                where=f"plugin {origin.plugin} ({origin.module})",
                fix=f"register it from masters_register_{KIND_PLURALS[spec_cls.kind]}",
            )
        name = component_name(spec_cls)
        if name in self._entries:
            first = self._entries[name].origin
            raise DuplicateComponentError(
                f"{self.kind} {name!r} is registered twice: by {first} and by {origin}",
                fix="uninstall or block one of the two plugins (MASTERS_BLOCK_PLUGINS=name)",
            )
        entry = Entry(name=name, kind=self.kind, spec_cls=spec_cls, origin=origin)
        self._entries[name] = entry
        return entry

    def get(self, name: str, *, where: str | None = None) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self.kind, name, self._entries, where=where,
                                        hint=self.unknown_hint(name)) from None

    def unknown_hint(self, name: str) -> str | None:
        return self._hint(name) if self._hint is not None else None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def origin(self, name: str) -> Origin:
        return self.get(name).origin

    def describe(self, name: str) -> dict[str, Any]:
        """Fields (type, default, description), summary, origin and JSON Schema of one component."""
        from masters.specs import describe_fields

        entry = self.get(name)
        return {
            "name": entry.name,
            "kind": self.kind,
            "summary": entry.summary,
            "description": inspect.cleandoc(entry.spec_cls.__doc__ or ""),
            "origin": {
                "plugin": entry.origin.plugin,
                "distribution": entry.origin.distribution,
                "version": entry.origin.version,
                "module": entry.origin.module,
            },
            "fields": describe_fields(entry.spec_cls),
            "json_schema": entry.spec_cls.model_json_schema(),
        }

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self._entries)
