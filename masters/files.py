"""The one place masters touches the file system for its outputs and guarded loads (issue 14).

Three mechanisms, used by every stage instead of ad-hoc ``open``/``write_text``/``rmtree``:

* **Atomic outputs** (design decision 18). :func:`atomic_path` yields a temporary sibling of the
  final path; the caller writes it (``pq.write_table``, ``savefig``, ``save_file``, ...) and on
  success it is flushed and renamed into place, on any failure removed. :func:`atomic_directory`
  does the same for a whole directory (a saved model): the previous directory stays loadable
  until the new one is complete. Temporary names are the program's own,
  ``.<name>.masters-tmp.<pid>.<random>``, and :func:`clean_temporaries` removes only those (of
  processes that are gone), never a user's ``*.tmp``.
* **Owned output directories**. :func:`claim_output_dir` refuses to write into a non-empty
  directory that holds no earlier masters output, and into a path that is a regular file.
* **Guarded loads and OS errors**. :func:`guarded_load` turns what a corrupt, missing or
  unreadable file raises (OSError, SafetensorError, JSONDecodeError, UnicodeDecodeError,
  DecompressionBombError, refused pickles, YAML errors, Arrow errors) into a
  :class:`~masters.errors.DataError` naming the file and the fix; :func:`os_error` words an
  ``OSError`` of a write (full disk, read-only, permission, file-size limit, a path through a
  regular file) the same way. The CLI passes every uncaught ``OSError`` through it: exit 2.

Torch-free and light: ``validate`` and ``schema`` import it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from masters.errors import DataError, MastersError

TMP_MARK = ".masters-tmp."
OLD_MARK = ".masters-old."
OWNER_MARK = ".masters-output"  # written into every output directory masters claims
LOCK_NAME = ".masters.lock"
_OWN = re.compile(r"^\.(?P<name>.+)\.masters-(?P<kind>tmp|old)\.(?P<pid>\d+)\.[0-9a-f]{8}$")
# Temporaries of earlier masters versions (``part-<hex>.parquet.tmp`` beside the shards,
# ``ref-<hex>.parquet.tmp`` in the reference store, ``step-NNNNNN.tmp/`` among the checkpoints).
_LEGACY = re.compile(r"^((part|scores|cache|ref)-[0-9a-f]{12}\.parquet\.tmp|step-\d{6}\.tmp)$")
# What an earlier masters run leaves in a directory: such a directory may be written again.
EARLIER_OUTPUT = (OWNER_MARK, "stages.json", "bank.json", "bank/bank.json", "student/masters_run.json",
                  ".masters-demo", "masters_run.json", "results.json")


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

_OS_FIXES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free disk space (or choose another output_dir) and run the "
                   "same command again: it resumes, nothing written before is lost"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota and run the same command again"),
    errno.EROFS: ("read-only file system", "choose a writable directory (output_dir, --output) or remount it "
                  "read-write, then run the same command again"),
    errno.EACCES: ("permission denied", "make the path writable/readable for this user (chmod, chown) or "
                   "choose another directory, then run the same command again"),
    errno.EPERM: ("operation not permitted", "make the path writable for this user or choose another directory"),
    errno.EFBIG: ("file too large for the file-size limit", "raise the limit (`ulimit -f unlimited`) or write "
                  "to a file system that allows larger files, then run the same command again"),
    errno.ENOTDIR: ("a part of the path is a regular file, not a directory", "move that file away or choose "
                    "another path"),
    errno.EISDIR: ("is a directory where a file was expected", "pass a file, or move the directory away"),
    errno.EEXIST: ("already exists", "move it away or choose another path"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.ELOOP: ("too many levels of symbolic links", "fix the symbolic links on the path"),
    errno.EIO: ("input/output error from the device", "check the disk, then run the same command again"),
}


def os_error(exc: OSError, path: str | os.PathLike[str] | None = None, *, doing: str = "write") -> MastersError:
    """An ``OSError`` as a MastersError: the file, what went wrong in words, and the way out."""
    where = path if path is not None else (exc.filename if exc.filename is not None else None)
    message, fix = _OS_FIXES.get(exc.errno or -1, (exc.strerror or str(exc), "check the path and its file system"))
    if exc.errno not in _OS_FIXES and exc.strerror is None:
        message = str(exc)
    other = f" (-> {exc.filename2})" if getattr(exc, "filename2", None) else ""
    return MastersError(f"cannot {doing}: {message}{other}", where=None if where is None else str(where), fix=fix)


_LOAD_ERROR_NAMES = {"SafetensorError", "DecompressionBombError", "UnpicklingError", "YAMLError", "ArrowException",
                     "HFValidationError", "JSONDecodeError", "UnidentifiedImageError"}


def is_load_error(exc: BaseException) -> bool:
    """Whether ``exc`` is what reading a corrupt, unreadable or missing file raises (not a bug)."""
    if isinstance(exc, MastersError):
        return False
    if isinstance(exc, (OSError, ValueError, EOFError, UnicodeError)):
        return True
    return any(cls.__name__ in _LOAD_ERROR_NAMES for cls in type(exc).__mro__)


@contextlib.contextmanager
def guarded_load(path: str | os.PathLike[str], what: str, fix: str | None = None) -> Iterator[None]:
    """Every load of a file masters did not just write goes through here: any load error becomes a
    :class:`DataError` naming ``path``, ``what`` it should be and ``fix``."""
    try:
        yield
    except MastersError:
        raise
    except Exception as exc:  # noqa: BLE001 - narrowed by is_load_error, the rest re-raised
        if not is_load_error(exc):
            raise
        if isinstance(exc, OSError) and exc.errno in _OS_FIXES and exc.errno != errno.ENOENT:
            error = os_error(exc, path, doing=f"read the {what}")
            raise DataError(error.message, where=error.where, fix=error.fix) from None
        detail = _one_line(exc)
        raise DataError(f"cannot read the {what}: {type(exc).__name__}: {detail}", where=str(path),
                        fix=fix or f"restore or replace this {what}, or point the config at a valid one") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def read_json(path: str | os.PathLike[str], what: str = "JSON file", fix: str | None = None) -> Any:
    path = Path(path)
    with guarded_load(path, what, fix):
        return json.loads(path.read_text(encoding="utf-8"))


def require_dir(path: str | os.PathLike[str], what: str, fix: str) -> Path:
    """``path`` as a Path when it is an existing directory; else a DataError naming it."""
    path = Path(path)
    with guarded_load(path, what, fix):
        if not path.exists():
            raise DataError(f"{what} not found", where=str(path), fix=fix)
        if not path.is_dir():
            raise DataError(f"{what} is not a directory", where=str(path), fix=fix)
    return path


# ---------------------------------------------------------------------------------------------
# atomic outputs
# ---------------------------------------------------------------------------------------------


def temp_sibling(path: str | os.PathLike[str], kind: str = "tmp") -> Path:
    path = Path(path)
    return path.parent / f".{path.name}.masters-{kind}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path`` atomically."""
    from masters.engine.faults import fs_fault

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise MastersError("is a directory where a file is written", where=str(path),
                           fix="move the directory away or choose another output path")
    tmp = temp_sibling(path)
    try:
        yield tmp
        fs_fault(path)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], data: Any, **dumps: Any) -> Path:
    dumps.setdefault("indent", 2)
    return atomic_write(path, json.dumps(data, **dumps) + "\n")


def content_name(prefix: str, ids: Iterable[str], suffix: str = ".parquet") -> str:
    """A file name for a shard of these ids (sorted and hashed): the same rows written twice (by two
    ranks of a launch, or a rerun) land on one file, never on two. Only for shards written once: a
    rewrite of the same ids (a repair) must take a fresh name, or replacing would delete it."""
    import hashlib

    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
    return f"{prefix}-{digest}{suffix}"


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it becomes ``path``.

    The previous ``path`` is moved aside, the new one renamed in and the old one removed: a failure
    at any point before the swap leaves the previous directory as it was, and a kill between the two
    renames is repaired by :func:`recover_directory` (run here and by :func:`clean_temporaries`).
    """
    from masters.engine.faults import fs_fault

    path = Path(path)
    recover_directory(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise MastersError("is a regular file where a directory is written", where=str(path),
                           fix="move the file away or choose another output path")
    tmp = temp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in_directory(tmp, path)


def swap_in_directory(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Make the complete directory ``tmp`` become ``path``: its files are synced, the previous
    ``path`` is moved aside, ``tmp`` renamed in and the old one removed. A failure removes ``tmp``
    and leaves the previous ``path`` as it was."""
    from masters.engine.faults import fs_fault

    tmp, path = Path(tmp), Path(path)
    old = None
    try:
        fs_fault(path)
        for child in tmp.rglob("*"):
            if child.is_file():
                _fsync_file(child)
        if path.exists():
            old = temp_sibling(path, "old")
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old, path)
        raise
    _fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_directory(path: str | os.PathLike[str]) -> None:
    """Undo a swap that a kill interrupted: the previous directory comes back under its name."""
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return
    olds = sorted(path.parent.glob(f".{glob_escape(path.name)}.masters-old.*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], path)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def own_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary this program made (of a process that is gone)."""
    match = _OWN.match(path.name)
    if match:
        return not _alive(int(match["pid"]))
    return bool(_LEGACY.match(path.name))


def clean_temporaries(directory: str | os.PathLike[str], *, recursive: bool = True) -> int:
    """Remove the temporaries masters left in ``directory`` (killed writers); nothing else.

    Only names of masters' own pattern whose writing process is gone are touched (a live writer's
    in-flight file stays), and a directory moved aside by an interrupted swap is first restored.
    Returns how many were removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    candidates = directory.rglob(".*.masters-*") if recursive else directory.glob(".*.masters-*")
    legacy = [p for pattern in ("*.parquet.tmp", "step-*.tmp")
              for p in (directory.rglob(pattern) if recursive else directory.glob(pattern))]
    for path in sorted({*candidates, *legacy}):
        match = _OWN.match(path.name)
        if match and match["kind"] == "old":
            target = path.parent / match["name"]
            if not _alive(int(match["pid"])) and not target.exists():
                os.replace(path, target)
                continue
        if not own_temporary(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed += 1
    return removed


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one whole line in a single write (O_APPEND): a kill leaves at most a partial last line,
    which readers of line files drop."""
    from masters.engine.faults import fs_fault

    fs_fault(Path(path))
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, "short write", str(path))
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# owned output directories
# ---------------------------------------------------------------------------------------------


def _ours(name: str) -> bool:
    return name in (OWNER_MARK, LOCK_NAME) or bool(_OWN.match(name))


def claim_output_dir(path: str | os.PathLike[str], what: str, *, markers: tuple[str, ...] = EARLIER_OUTPUT) -> Path:
    """Make ``path`` an output directory of masters, or refuse with exit 2.

    Accepted: a missing or empty directory, or one holding an earlier masters output (one of
    ``markers``). Refused: a regular file, or a non-empty directory of someone else's files
    (they would be mixed with, or overwritten by, this run's outputs).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MastersError(f"the {what} directory is a regular file", where=str(path),
                           fix="move the file away or choose another directory")
    if path.is_dir():
        entries = [p for p in path.iterdir() if not _ours(p.name)]
        if entries and not any((path / m).exists() for m in markers):
            shown = ", ".join(sorted(p.name for p in entries)[:3]) + (", ..." if len(entries) > 3 else "")
            raise MastersError(
                f"the {what} directory is not empty ({shown}) and holds no earlier masters output",
                where=str(path),
                fix="choose a new or empty directory: masters never writes among (or over) other files")
    path.mkdir(parents=True, exist_ok=True)
    mark = path / OWNER_MARK
    if not mark.exists():
        atomic_write_json(mark, {"written_by": "masters", "what": what})
    return path


def owner_note(path: Path) -> Mapping[str, Any]:
    try:
        return json.loads((path / OWNER_MARK).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
