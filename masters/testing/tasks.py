"""Conformance checks every task (data source) must pass, on its conformance example.

``check_task("my_task")`` runs them all; ``run_task_check(name, check)`` runs one, for a pytest
parametrisation over ``registered_tasks()`` x ``TASK_CHECKS``. A task that reads files (a required
``path`` field) gives the kit a small dataset through its spec class's ``conformance_example``, a
classmethod that writes it under a temporary directory and returns the field values::

    class MyTaskSpec(TaskSpec):
        name: Literal["my_task"] = "my_task"
        path: str

        @classmethod
        def conformance_example(cls, tmp_dir):
            (tmp_dir / "data.jsonl").write_text(...)    # a handful of records, an image or two
            return {"path": str(tmp_dir / "data.jsonl")}

Without one the checks fail, naming the missing fields (see :mod:`masters.testing.examples`).

Checks (``TASK_CHECKS``):

* ``splits``: ``splits()`` maps exactly ``train``, ``validation`` and ``test`` to sequences of
  :class:`~masters.data.VQASample` (string ids and questions; answers strings); train is not empty.
* ``deterministic``: a second build of the same spec gives the same ids, questions, answers and
  choices, in the same order.
* ``unique_ids``: ids are unique within and across splits (no record is shared between splits).
* ``images_load``: the first samples of each split load their images as RGB PIL images.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from typing import Any

from masters.testing.adapters import ConformanceError
from masters.testing.examples import resolve_spec, spec_label, workdir

__all__ = ["SPLITS", "TASK_CHECKS", "TaskConformanceError", "check_task", "registered_tasks", "run_task_check"]

TASK_CHECKS: tuple[str, ...] = ("splits", "deterministic", "unique_ids", "images_load")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
IMAGES_PER_SPLIT = 3


class TaskConformanceError(ConformanceError):
    """A task broke one of the conformance rules."""


def registered_tasks() -> list[str]:
    from masters.plugins import get_components

    return get_components().registry("task").names()


def _fail(check: str, label: str, message: str) -> None:
    raise TaskConformanceError(f"[{check}] {label}: {message}")


class _Case:
    def __init__(self, spec: Any, context: dict[str, Any]):
        self.spec = spec
        self.context = context
        self.label = spec_label(spec)
        self._splits: Any = None

    def build_splits(self, check: str) -> Any:
        try:
            return self.spec.build(**self.context).splits()
        except Exception as exc:  # noqa: BLE001 - reported as the check that could not run
            _fail(check, self.label, f"building the splits of its conformance example raised {type(exc).__name__}: {exc}")

    @property
    def splits(self) -> Any:
        if self._splits is None:
            self._splits = self.build_splits("splits")
        return self._splits


@contextlib.contextmanager
def _case(task: Any) -> Iterator[_Case]:
    """A registered name is built once per process (its example's files kept until exit, its first
    splits reused by every check); anything else is built afresh in a temporary directory."""
    if isinstance(task, str):
        from masters.plugins import get_components

        yield _registered_case(get_components().registry("task").get(task).spec_cls)
        return
    with workdir("masters-task-") as tmp:
        spec, context = resolve_spec("task", task, tmp)
        yield _Case(spec, context)


@functools.lru_cache(maxsize=None)
def _registered_case(spec_cls: type) -> _Case:
    from masters.testing.adapters import _workdir

    tmp = _workdir() / f"task-{len(_CASE_DIRS)}-{spec_cls.__name__}"
    _CASE_DIRS.append(tmp)
    tmp.mkdir(parents=True)
    spec, context = resolve_spec("task", spec_cls, tmp)
    return _Case(spec, context)


_CASE_DIRS: list[Any] = []


def _rows(splits: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {name: [(s.id, s.question, s.answer, s.choices) for s in splits[name]] for name in SPLITS}


def check_splits(case: _Case) -> None:
    from collections.abc import Mapping, Sequence

    from masters.data.types import VQASample

    splits = case.splits
    if not isinstance(splits, Mapping) or set(splits) != set(SPLITS):
        keys = sorted(splits) if isinstance(splits, Mapping) else type(splits).__name__
        _fail("splits", case.label, f"splits() gave {keys}, expected exactly {list(SPLITS)}")
    for name in SPLITS:
        samples = splits[name]
        if not isinstance(samples, Sequence) or isinstance(samples, str):
            _fail("splits", case.label, f"split {name!r} is {type(samples).__name__}, not a sequence of VQASample")
        for s in samples:
            if not isinstance(s, VQASample):
                _fail("splits", case.label, f"split {name!r} holds {type(s).__name__}, not masters.data.VQASample")
            if not (isinstance(s.id, str) and s.id and isinstance(s.question, str) and s.question.strip()):
                _fail("splits", case.label, f"sample {s.id!r} of {name!r} needs a non-empty string id and question")
            if s.answer is not None and not isinstance(s.answer, str):
                _fail("splits", case.label, f"sample {s.id!r} of {name!r}: answer {s.answer!r} is not a string")
    if not splits["train"]:
        _fail("splits", case.label, "the train split is empty (raise masters.errors.DataError instead)")


def check_deterministic(case: _Case) -> None:
    first = _rows(case.splits)
    second = _rows(case.build_splits("deterministic"))
    for name in SPLITS:
        if first[name] != second[name]:
            diff = next((i for i, (a, b) in enumerate(zip(first[name], second[name])) if a != b),
                        min(len(first[name]), len(second[name])))
            _fail("deterministic", case.label, f"two builds of the same spec differ in split {name!r} at sample "
                  f"{diff} ({len(first[name])} vs {len(second[name])} samples): banks and scores are keyed by "
                  "sample id, so splits must be reproducible")


def check_unique_ids(case: _Case) -> None:
    seen: dict[str, str] = {}
    for name in SPLITS:
        for s in case.splits[name]:
            if s.id in seen:
                where = "twice in" if seen[s.id] == name else f"in {seen[s.id]!r} and in"
                _fail("unique_ids", case.label, f"id {s.id!r} is {where} {name!r}: ids key the bank and the scores")
            seen[s.id] = name


def check_images_load(case: _Case) -> None:
    from PIL import Image

    for name in SPLITS:
        for s in list(case.splits[name])[:IMAGES_PER_SPLIT]:
            try:
                images = s.load_images()
            except Exception as exc:  # noqa: BLE001
                _fail("images_load", case.label, f"sample {s.id!r} of {name!r}: images do not load: "
                      f"{type(exc).__name__}: {exc}")
            if len(images) != len(s.images) or not all(isinstance(im, Image.Image) and im.mode == "RGB"
                                                       for im in images):
                _fail("images_load", case.label, f"sample {s.id!r} of {name!r}: load_images() did not give one RGB "
                      "PIL image per image")


_CHECKS = {"splits": check_splits, "deterministic": check_deterministic, "unique_ids": check_unique_ids,
           "images_load": check_images_load}
assert tuple(_CHECKS) == TASK_CHECKS


def run_task_check(task: Any, check: str) -> None:
    """Run one check on a task (a registered name, a mapping with ``name``, a spec class or a spec);
    raises :class:`TaskConformanceError` (or ``MissingExampleError`` without a way to build it)."""
    if check not in _CHECKS:
        raise ValueError(f"unknown task check {check!r}; checks: {', '.join(TASK_CHECKS)}")
    with _case(task) as case:
        if check != "splits":
            check_splits(case)  # the other rules read the splits: report a malformed one as itself
        _CHECKS[check](case)


def check_task(task: Any, *, checks: Iterable[str] = TASK_CHECKS) -> dict[str, str]:
    """Run the checks on a task; ``{check: "ok"}``; raises on the first failure."""
    report = {}
    with _case(task) as case:
        for check in checks:
            if check not in _CHECKS:
                raise ValueError(f"unknown task check {check!r}; checks: {', '.join(TASK_CHECKS)}")
            _CHECKS[check](case)
            report[check] = "ok"
    return report


# -- small datasets for the built-in file-based tasks (their specs' conformance examples) -----------

_COLOURS = ("red", "green", "blue", "yellow")


def _png(path: Any, colour: str, size: tuple[int, int] = (16, 16)) -> None:
    from PIL import Image

    Image.new("RGB", size, colour).save(path)


def llava_json_example(tmp_dir: Any, *, records: int = 24) -> dict[str, Any]:
    """A LLaVA-style JSON file under ``tmp_dir``: one-image, multi-turn, two-image and text-only
    records; returns the ``llava_json`` fields that read it."""
    import json
    from pathlib import Path

    root = Path(tmp_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(_COLOURS):
        _png(root / "images" / f"{i}.png", colour, (16 + 8 * i, 16))
    data = []
    for i in range(records):
        colour = _COLOURS[i % len(_COLOURS)]
        turns = [{"from": "human", "value": "<image>\nWhat colour is the image?"}, {"from": "gpt", "value": colour}]
        record: dict[str, Any] = {"id": f"rec-{i}", "image": f"images/{i % len(_COLOURS)}.png", "conversations": turns}
        if i % 6 == 1:  # multi-turn
            turns += [{"from": "human", "value": "Is it bright?"}, {"from": "gpt", "value": "yes"}]
        elif i % 6 == 2:  # two images
            record["image"] = [f"images/{i % len(_COLOURS)}.png", f"images/{(i + 1) % len(_COLOURS)}.png"]
        elif i % 6 == 3:  # text only
            record.pop("image")
            record["conversations"] = [{"from": "human", "value": "How many sides has a square?"},
                                       {"from": "gpt", "value": "4"}]
        data.append(record)
    path = root / "data.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return {"path": str(path), "image_root": "."}


def hf_parquet_example(tmp_dir: Any, *, rows: int = 24) -> dict[str, Any]:
    """A Parquet table under ``tmp_dir`` (image bytes, question, answer, choices; written with
    pyarrow); returns the ``hf_datasets`` fields that read it. Reading it needs ``datasets``: without
    it the checks do not apply."""
    import importlib.util
    import io
    from pathlib import Path

    from masters.testing.examples import NotApplicable

    if importlib.util.find_spec("datasets") is None:
        raise NotApplicable("the `datasets` package is not installed (pip install 'masters-distill[datasets]')")
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    images = []
    for colour in _COLOURS:
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
        images.append(buf.getvalue())
    table = pa.table({
        "id": [f"row-{i}" for i in range(rows)],
        "image": [{"bytes": images[i % len(images)], "path": None} for i in range(rows)],
        "question": ["What colour is the image?"] * rows,
        "answer": [_COLOURS[i % len(_COLOURS)] if i % 2 else "B" for i in range(rows)],
        "choices": [None if i % 2 else list(_COLOURS[:3]) for i in range(rows)],
    })
    path = Path(tmp_dir) / "table.parquet"
    pq.write_table(table, path)
    return {"path": str(path), "choices_column": "choices"}
