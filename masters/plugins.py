"""The pluggy manager: built-ins first, then entry points of group ``masters``, each guarded.

Environment variables (as pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` and ``-p``):

* ``MASTERS_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry point except those allow-listed.
* ``MASTERS_PLUGINS=a,b``: allow-list; only these entry points load (by entry-point name or
  distribution name). With autoload disabled, this is how a plugin is loaded explicitly.
* ``MASTERS_BLOCK_PLUGINS=a,b``: block-list; never load these.
* ``MASTERS_STRICT_PLUGINS=1``: a plugin that fails to load is an error, not a warning.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from masters import hookspecs
from masters.errors import MastersError, PluginLoadError
from masters.registry import KIND_PLURALS, KINDS, Entry, Origin, Registry

ENTRY_POINT_GROUP = "masters"

# Core modules that register the built-in components through the same hooks as any plugin.
# Each must stay torch-free at import time: they register spec classes only.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "masters.masking.plugin",
    "masters.schedules.plugin",
    "masters.rewards.plugin",
    "masters.adapters.plugin",
    "masters.objectives.plugin",
    "masters.tasks.plugin",
    "masters.backends.plugin",
)


class PluginWarning(UserWarning):
    """A plugin that could not be loaded and was skipped."""


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that failed to load or to register: kept to explain unknown names later."""

    entry_point: str
    distribution: str
    version: str
    error: str

    def describe(self) -> str:
        return f"plugin {self.entry_point!r} ({self.distribution} {self.version}) failed to load: {self.error}"


@dataclass
class FilteredPlugin:
    """An installed entry point that the MASTERS_* switches kept out."""

    entry_point: metadata.EntryPoint
    distribution: str
    reason: str
    _registers: dict[str, list[str]] = field(default_factory=dict)

    def registers(self, kind: str) -> list[str]:
        if kind not in self._registers:
            names: list[str] = []
            try:
                module = self.entry_point.load()
                hook = getattr(module, f"masters_register_{KIND_PLURALS[kind]}", None)
                if hook is not None:
                    hook(register=lambda spec_cls: names.append(_spec_name(spec_cls)))
            except Exception:  # noqa: BLE001 - only a hint; a broken plugin just gives none
                pass
            self._registers[kind] = names
        return self._registers[kind]


def _spec_name(spec_cls: type) -> str:
    from masters.specs import component_name

    return component_name(spec_cls)


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str
    builtin: bool
    registers: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)


def _env_list(name: str) -> set[str]:
    return {item.strip() for item in os.environ.get(name, "").split(",") if item.strip()}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def strict_plugins() -> bool:
    return _env_flag("MASTERS_STRICT_PLUGINS")


class Components:
    """The loaded plugin manager and the registries it filled, one per kind."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registries: dict[str, Registry[Any]] = {
            kind: Registry(kind, hint=functools.partial(self._unknown_hint, kind)) for kind in KINDS}
        self.failures: list[PluginFailure] = []
        self.plugins: dict[str, PluginInfo] = {}
        self.filtered: list[FilteredPlugin] = []
        # What is derived from this plugin set (the assembled RunSpec): rebuilt with the manager.
        self.cache: dict[str, Any] = {}
        self._load()

    # -- loading -----------------------------------------------------------------------------
    def _load(self) -> None:
        import importlib

        from masters import __version__

        for module_name in BUILTIN_PLUGINS:
            module = importlib.import_module(module_name)
            self.pm.register(module, name=module_name)
            self.plugins[module_name] = PluginInfo(
                module_name, "masters-distill", __version__, module_name, builtin=True
            )
        for ep in self._selected_entry_points():
            dist = ep.dist
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must not take the host down
                self._fail(PluginFailure(ep.name, dist_name, version, f"{type(exc).__name__}: {exc}"))
                continue
            module = getattr(plugin, "__name__", ep.value)
            self.plugins[ep.name] = PluginInfo(ep.name, dist_name, version, module, builtin=False)
        self._check_pending()
        self._collect()

    def _selected_entry_points(self) -> list[metadata.EntryPoint]:
        allow = _env_list("MASTERS_PLUGINS")
        block = _env_list("MASTERS_BLOCK_PLUGINS")
        autoload = not _env_flag("MASTERS_DISABLE_PLUGIN_AUTOLOAD")
        selected = []
        seen: set[str] = set()
        known: set[str] = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist_name = ep.dist.metadata["Name"] if ep.dist is not None else ""
            keys = {ep.name, dist_name}
            known |= keys
            if ep.name in seen:
                continue
            reason = None
            if keys & block:
                reason = "blocked by MASTERS_BLOCK_PLUGINS"
            elif allow and not keys & allow:
                reason = "not in MASTERS_PLUGINS"
            elif not autoload and not keys & allow:
                reason = "MASTERS_DISABLE_PLUGIN_AUTOLOAD is set"
            seen.add(ep.name)
            if reason:
                self.filtered.append(FilteredPlugin(ep, dist_name, reason))
            else:
                selected.append(ep)
        for variable, names in (("MASTERS_PLUGINS", allow), ("MASTERS_BLOCK_PLUGINS", block)):
            for name in sorted(names - known):
                self._unmatched(variable, name, sorted(known))
        return selected

    def _unmatched(self, variable: str, name: str, installed: list[str]) -> None:
        from masters.errors import unknown_name_message

        message = (f"{variable} names {name!r}, which matches no installed plugin: "
                   + unknown_name_message("plugin", name, installed).split(".", 1)[1].strip())
        if strict_plugins():
            raise PluginLoadError(message, where=variable,
                                  fix="correct the name (`masters plugins` lists what is installed), or install it")
        warnings.warn(message, PluginWarning, stacklevel=4)

    def filtered_providers(self, kind: str, name: str) -> list[str]:
        """Installed plugins that the switches filtered out and that would register ``name`` as a
        ``kind``: loaded on demand, only to explain an unknown name (a failure there is ignored)."""
        found = []
        for plugin in self.filtered:
            if name in plugin.registers(kind):
                found.append(f"plugin {plugin.entry_point.name!r} ({plugin.distribution}) provides {kind} "
                             f"{name!r} but is not loaded: {plugin.reason}")
        return found

    def _fail(self, failure: PluginFailure) -> None:
        self.failures.append(failure)
        if strict_plugins():
            raise PluginLoadError(
                failure.describe(),
                fix="fix or uninstall the plugin, or unset MASTERS_STRICT_PLUGINS to skip it with a warning",
            )
        warnings.warn(failure.describe() + " (skipped)", PluginWarning, stacklevel=3)

    def _check_pending(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or str(exc.plugin)
            info = self.plugins.get(name)
            hooks = ", ".join(
                n for n in dir(exc.plugin) if n.startswith("masters_") and not hasattr(self.pm.hook, n)
            ) or str(exc)
            failure = PluginFailure(
                name,
                info.distribution if info else "?",
                info.version if info else "?",
                f"implements unknown hook(s) {hooks}: misspelt? "
                f"Known hooks: {', '.join(sorted(h for h in dir(hookspecs) if h.startswith('masters_')))}",
            )
            self.pm.unregister(exc.plugin)
            self.plugins.pop(name, None)
            self._fail(failure)
            self._check_pending()  # report every offending plugin, one at a time

    def _collect(self) -> None:
        for kind in KINDS:
            hook = getattr(self.pm.hook, f"masters_register_{KIND_PLURALS[kind]}")
            # pluggy calls implementations last-registered first; register in load order instead
            # so that built-ins come first and duplicate errors name the later plugin second.
            for impl in hook.get_hookimpls():
                info = self.plugins.get(impl.plugin_name)
                if info is None:
                    continue
                origin = Origin(info.name, info.distribution, info.version, info.module)
                registered: list[str] = []

                def register(spec_cls: type, _origin: Origin = origin, _kind: str = kind,
                             _seen: list[str] = registered) -> None:
                    entry = self.registries[_kind].register(spec_cls, _origin)
                    _seen.append(entry.name)

                try:
                    impl.function(register=register)
                except MastersError:
                    raise  # duplicate names and wrong kinds are errors whatever the mode
                except Exception as exc:
                    if info.builtin:
                        raise
                    self._fail(PluginFailure(info.name, info.distribution, info.version,
                                             f"{impl.function.__name__} raised {type(exc).__name__}: {exc}"))
                    continue
                if registered:
                    info.registers.setdefault(kind, []).extend(registered)
        for name, info in self.plugins.items():
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                info.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])

    # -- queries ------------------------------------------------------------------------------
    def registry(self, kind: str) -> Registry[Any]:
        if kind in KIND_PLURALS.values():
            kind = next(k for k, p in KIND_PLURALS.items() if p == kind)
        if kind not in self.registries:
            from masters.errors import UnknownComponentError

            raise UnknownComponentError("kind", kind, list(KINDS) + list(KIND_PLURALS.values()))
        return self.registries[kind]

    def find(self, name: str) -> list[Entry]:
        """Every entry with this name, across kinds."""
        return [reg.get(name) for reg in self.registries.values() if name in reg]

    def failures_hint(self) -> str | None:
        if not self.failures:
            return None
        return "; ".join(f.describe() for f in self.failures)

    def _unknown_hint(self, kind: str, name: str) -> str | None:
        """Why a name may be unknown: a filtered-out plugin provides it, or a plugin failed to load."""
        parts = self.filtered_providers(kind, name)
        if parts:
            return "; ".join(parts) + " (set MASTERS_PLUGINS to include it, or unset the switch that excludes it)"
        return None

    def claim_checkpoint(self, config: dict[str, Any], *, where: str | None = None) -> str | None:
        """Ask every plugin; the first answer (pluggy order) wins; warn when several claim it."""
        claims: list[tuple[str, str]] = []
        for impl in reversed(self.pm.hook.masters_claim_checkpoint.get_hookimpls()):
            answer = impl.function(config=config)
            if answer is not None:
                claims.append((impl.plugin_name, answer))
        if len({adapter for _, adapter in claims}) > 1:
            who = ", ".join(f"{plugin} -> {adapter}" for plugin, adapter in claims)
            warnings.warn(
                f"{where or 'checkpoint'}: several plugins claim this checkpoint ({who}); using "
                f"{claims[0][1]!r}. Set `adapter:` in the spec to choose.",
                PluginWarning,
                stacklevel=2,
            )
        return claims[0][1] if claims else None


@functools.lru_cache(maxsize=1)
def get_components() -> Components:
    """The process-wide plugin manager (built once; ``reset_components`` rebuilds it)."""
    return Components()


@contextlib.contextmanager
def only_plugins(*names: str, strict: bool = True) -> Iterator[Components]:
    """Load exactly these installed plugins (by entry-point or distribution name) for the block.

    Autoloading is off inside it, so other installed plugins stay out; ``strict`` makes a plugin
    that fails to load an error. Yields the components; the previous environment and components
    come back afterwards.
    """
    keys = ("MASTERS_DISABLE_PLUGIN_AUTOLOAD", "MASTERS_PLUGINS", "MASTERS_STRICT_PLUGINS", "MASTERS_BLOCK_PLUGINS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(MASTERS_DISABLE_PLUGIN_AUTOLOAD="1", MASTERS_PLUGINS=",".join(names),
                      MASTERS_STRICT_PLUGINS="1" if strict else "0")
    os.environ.pop("MASTERS_BLOCK_PLUGINS", None)
    reset_components()
    try:
        yield get_components()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_components()


def reset_components() -> None:
    """Forget the loaded plugins (tests change the environment variables and reload)."""
    get_components.cache_clear()
