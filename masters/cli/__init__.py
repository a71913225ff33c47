"""The ``masters`` command line. Sub-commands live in small modules listed in COMMAND_MODULES.

Each module defines ``add_commands(subparsers)``, adding parsers whose ``func`` default is a
handler ``(args) -> int``. Handlers import heavy libraries (torch, transformers) inside their
bodies: ``list``, ``describe``, ``validate`` and ``schema`` must stay light.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

COMMAND_MODULES: tuple[str, ...] = (
    "masters.cli.components",
    "masters.cli.pipeline",
    "masters.cli.masking",
    "masters.cli.demo",
    "masters.cli.bank",
    "masters.cli.probe",
)


def build_parser() -> argparse.ArgumentParser:
    from masters import __version__

    parser = argparse.ArgumentParser(
        prog="masters",
        description="Distil vision-language models with Masters (Masking Teacher and Reinforcing Student).",
    )
    parser.add_argument("--version", action="version", version=f"masters {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from masters.cli.output import print_error
    from masters.errors import MastersError
    from masters.plugins import PluginWarning

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    if hasattr(signal, "SIGXFSZ"):
        # Past the file-size limit (ulimit -f) a write must fail with EFBIG, not kill the process.
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with warnings.catch_warnings(), _sigterm_as_interrupt():
        warnings.simplefilter("default", PluginWarning)
        warnings.showwarning = _one_line_warning
        try:
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe (`masters schema | head`) surfaces here, not at exit
            return code
        except MastersError as exc:
            print_error(exc)
            return exc.exit_code
        except BrokenPipeError:
            # The reader went away (head, less): end quietly, as a Unix tool does.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except OSError as exc:
            # The file system refused (full disk, read-only, permission, file-size limit, a path
            # through a regular file): every output is atomic, so nothing written is lost; one message.
            from masters.files import os_error

            error = os_error(exc)
            print_error(error)
            return error.exit_code
        except Exception as exc:
            if type(exc).__name__ != "SafetensorError":  # safetensors wraps a failed write (a full disk)
                raise
            from masters.errors import MastersError as _Error

            error = _Error(f"cannot write or read a safetensors file: {exc}",
                           fix="check free disk space and permissions, then run the same command again")
            print_error(error)
            return error.exit_code
        except KeyboardInterrupt as exc:
            signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
            what = "terminated" if signum == signal.SIGTERM else "interrupted"
            print(f"{what}: run the same command again to resume", file=sys.stderr)
            return 128 + int(signum)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (how schedulers pre-empt a job), handled like Ctrl-C: every stage resumes."""


def _in_finaliser(frame: Any) -> bool:
    """True inside a ``__del__``: Python prints and drops an exception raised there ("Exception
    ignored in ..."), so a SIGTERM raised into one would be lost and the process would run on
    until the launcher's SIGKILL (seen when GC ran a finaliser while a rank waited for another)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        if _in_finaliser(frame) and hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0.05)  # raise it again once the finaliser is done
            return
        raise _Terminated(signal.SIGTERM)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding program): leave signals alone
        yield
        return
    previous_alarm = signal.signal(signal.SIGALRM, handler) if hasattr(signal, "SIGALRM") else None
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_alarm is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_alarm)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    from masters.errors import ConfigNote

    print(f"{'note' if issubclass(category, ConfigNote) else 'warning'}: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
