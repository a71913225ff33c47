"""Every user-facing error of masters, and the one place their messages are shaped.

A ``MastersError`` is bad input, not a bug: the CLI prints it as one short message naming the
place and the fix, exits with status 2 and shows no traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class MastersError(Exception):
    """Bad input or an unusable environment: ``where`` names the place, ``fix`` the way out."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.where}: {self.message}" if self.where else self.message
        return f"{head}\n  fix: {self.fix}" if self.fix else head


class ConfigNote(UserWarning):
    """An older config form that was accepted and mapped; the message prints the new form."""


class ConfigError(MastersError):
    """A config file that is missing, unreadable or not valid YAML."""


class SpecError(MastersError):
    """One or more fields of a spec are invalid; ``problems`` holds (location, message) pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]], *, source: str | None = None):
        self.problems = list(problems)
        lines = [f"  {loc}: {msg}" for loc, msg in self.problems]
        count = len(self.problems)
        head = f"{count} invalid field{'s' if count != 1 else ''}"
        super().__init__(
            head + "\n" + "\n".join(lines),
            where=source,
            fix="correct the fields listed above (`masters describe NAME` shows a component's fields)",
        )


class UnknownComponentError(MastersError):
    """A component name that no registry holds."""

    def __init__(self, kind: str, name: str, available: Iterable[str], *, where: str | None = None,
                 hint: str | None = None):
        self.kind, self.name = kind, name
        self.available = sorted(available)
        super().__init__(
            unknown_name_message(kind, name, self.available),
            where=where,
            fix=hint or f"use one of the available {kind} names, or install the plugin that provides it "
            f"(`masters plugins` lists what is installed)",
        )


class DuplicateComponentError(MastersError):
    """Two origins registered the same name for one kind."""


class PluginLoadError(MastersError):
    """A plugin that failed to import, or that implements a hook masters does not define."""


class IncompatibleModelsError(MastersError):
    """Teacher and student cannot be distilled together (tokenizers differ, ...)."""


class DataError(MastersError):
    """A malformed record, a missing image or a corrupt bank file."""


def unknown_name_message(kind: str, name: str, available: Sequence[str]) -> str:
    """``Unknown masker 'magnitud'. Did you mean: magnitude? Available: a, b (2 total)``."""
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    parts = [f"unknown {kind} {name!r}."]
    if close:
        parts.append(f"Did you mean: {', '.join(close)}?")
    shown = ", ".join(available) if available else "(none registered)"
    parts.append(f"Available: {shown} ({len(available)} total)")
    return " ".join(parts)


class ImageTokenMismatchError(MastersError):
    """The prompt's image-token count differs from what the vision tower produces."""
