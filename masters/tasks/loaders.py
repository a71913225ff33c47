"""Loaders of real VQA data (the ``llava_json`` and ``hf_datasets`` tasks) to ``{split: [VQASample, ...]}``.

Policy for real data (the same for LLaVA JSON and ``datasets`` tables):

* **Multi-turn** conversations are split: each (human, gpt) pair becomes its own sample with id
  ``"{record id}#{turn}"`` and the record's images; earlier turns are not carried as context,
  because an adapter encodes one question per sample. All turns of a record land in one split.
* **Multi-image** records keep every image, in order: each becomes one image placeholder before
  the question. ``<image>`` markers in the text are removed (the adapter's chat template places
  the images); more markers than images is an error.
* **Image-less** records become text-only samples (``images == ()``), which every adapter accepts.
* Splits that the source does not provide are carved out by a hash of the record id, so they are
  stable when records are added and never share a record.
* A malformed record or a missing image raises :class:`DataError` naming the file and the record.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from masters.data.types import VQASample
from masters.errors import DataError

if TYPE_CHECKING:
    from masters.tasks.specs import HFDatasetsTaskSpec

SPLITS = ("train", "validation", "test")
IMAGE_MARKER = "<image>"


def _bucket(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def split_by_id(samples: Sequence[VQASample], validation_fraction: float, test_fraction: float,
                ) -> dict[str, list[VQASample]]:
    """Assign samples to splits by a hash of their record id (turns of one record stay together)."""
    if validation_fraction + test_fraction >= 1:
        raise DataError(f"validation_fraction + test_fraction must be below 1, got "
                        f"{validation_fraction} + {test_fraction}", fix="lower the fractions")
    out: dict[str, list[VQASample]] = {s: [] for s in SPLITS}
    for sample in samples:
        h = _bucket(str(sample.metadata.get("record_id", sample.id)))
        split = "test" if h < test_fraction else "validation" if h < test_fraction + validation_fraction else "train"
        out[split].append(sample)
    return out


# ---------------------------------------------------------------------------------------------
# LLaVA-style JSON
# ---------------------------------------------------------------------------------------------

_HUMAN = {"human", "user"}
_MODEL = {"gpt", "assistant", "model"}


def _read_records(path: Path) -> list[Any]:
    if not path.is_file():
        raise DataError("data file not found", where=str(path), fix="check task.path")
    from masters.files import guarded_load

    with guarded_load(path, "data file", fix="pass a readable UTF-8 JSON or JSONL file as task.path"):
        text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = []
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise DataError(f"line {line_no} is not valid JSON: {exc}", where=f"{path}:{line_no}",
                                fix="fix or remove that line") from None
        return records
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(f"not valid JSON: {exc}", where=str(path), fix="fix the JSON (or use .jsonl, one record a line)") from None
    if not isinstance(data, list):
        raise DataError("the top level must be a list of records", where=str(path),
                        fix='write [{"id": ..., "image": ..., "conversations": [...]}, ...]')
    return data


def load_llava_json(path: str | Path, *, image_root: str | Path = ".") -> list[VQASample]:
    """Samples of a LLaVA-style JSON / JSONL file (see the module docstring for the policy)."""
    path = Path(path)
    root = Path(image_root)
    if not root.is_absolute():
        root = path.parent / root
    samples: list[VQASample] = []
    seen: set[str] = set()
    for index, record in enumerate(_read_records(path)):
        where = f"{path} record {index}"
        if not isinstance(record, Mapping):
            raise DataError(f"a record must be an object, got {type(record).__name__}", where=where,
                            fix="each record is {'id', 'image', 'conversations'}")
        record_id = str(record.get("id", index))
        where = f"{path} record {index} (id {record_id!r})"
        if record_id in seen:
            raise DataError("duplicate record id", where=where, fix="give every record a unique id")
        seen.add(record_id)
        images = _record_images(record.get("image", record.get("images")), root, where)
        samples.extend(_turns(record.get("conversations"), images, record_id, where))
    return samples


def _record_images(value: Any, root: Path, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"`image` must be a path or a list of paths, got {value!r}", where=where,
                        fix="write image paths relative to image_root")
    paths = []
    for name in names:
        p = Path(name) if Path(name).is_absolute() else root / name
        if not p.is_file():
            raise DataError(f"image not found: {p}", where=where, fix="check the image path and data.image_root")
        paths.append(str(p))
    return tuple(paths)


def _turns(conversations: Any, images: tuple[Any, ...], record_id: str, where: str) -> list[VQASample]:
    if not isinstance(conversations, list) or not conversations:
        raise DataError("`conversations` must be a non-empty list", where=where,
                        fix='write [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]')
    messages = []
    for k, msg in enumerate(conversations):
        if not isinstance(msg, Mapping) or not isinstance(msg.get("value"), str):
            raise DataError(f"message {k} needs a string `value`", where=where, fix="fix that message")
        role = str(msg.get("from", msg.get("role", ""))).lower()
        expected = _HUMAN if k % 2 == 0 else _MODEL
        if role not in expected:
            raise DataError(f"message {k} is from {role!r}; turns must alternate human, gpt", where=where,
                            fix="start with a human message and alternate human/gpt")
        messages.append(msg["value"])
    if len(messages) % 2:
        raise DataError("the last human message has no answer", where=where, fix="end with a gpt message")
    markers = sum(m.count(IMAGE_MARKER) for m in messages)
    if markers > len(images):
        raise DataError(f"{markers} {IMAGE_MARKER} markers but {len(images)} image(s)", where=where,
                        fix="list one image per <image> marker")
    out = []
    for turn in range(len(messages) // 2):
        question = messages[2 * turn].replace(IMAGE_MARKER, "").strip()
        answer = messages[2 * turn + 1].strip()
        if not question or not answer:
            raise DataError(f"turn {turn} has an empty question or answer", where=where, fix="fill it in or drop it")
        sample_id = record_id if len(messages) == 2 else f"{record_id}#{turn}"
        out.append(VQASample(sample_id, images, question, answer,
                             metadata={"record_id": record_id, "turn": turn, "source": where.split(" record")[0]}))
    return out


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets tables
# ---------------------------------------------------------------------------------------------


def _open_table(path: Path, where: str):
    try:
        import datasets
    except ImportError:
        raise DataError("the `datasets` package is not installed", where=where,
                        fix="pip install 'masters-distill[datasets]'") from None
    if not path.exists():
        raise DataError("dataset not found", where=where, fix="check data.path (a save_to_disk folder or Parquet files)")
    try:
        if path.is_dir() and any(path.glob("*.parquet")) and not (path / "dataset_info.json").exists() \
                and not (path / "dataset_dict.json").exists():
            return {"train": datasets.Dataset.from_parquet([str(p) for p in sorted(path.glob("*.parquet"))])}
        if path.suffix == ".parquet":
            return {"train": datasets.Dataset.from_parquet(str(path))}
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for unreadable folders
        raise DataError(f"cannot open the dataset: {type(exc).__name__}: {exc}", where=where,
                        fix="save it with Dataset.save_to_disk or as Parquet") from None
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def load_hf_dataset(spec: HFDatasetsTaskSpec) -> dict[str, list[VQASample]]:
    """Samples of a ``datasets`` table; columns named in the spec. Source splits are used as given:
    ``spec.split`` is train, ``validation``/``test`` if present, else carved out of train by id."""
    path = Path(spec.path)
    tables = _open_table(path, str(path))
    if spec.split not in tables:
        raise DataError(f"no split {spec.split!r}; the dataset has {', '.join(tables)}", where=str(path),
                        fix="set task.split to one of them")
    out: dict[str, list[VQASample]] = {}
    given = {"train": spec.split, "validation": "validation", "test": "test"}
    for split, name in given.items():
        if name in tables and (split == "train" or name != spec.split):
            out[split] = _table_samples(tables[name], spec, f"{path} split {name!r}")
    if "validation" not in out or "test" not in out:
        carved = split_by_id(out["train"], 0 if "validation" in out else spec.validation_fraction,
                             0 if "test" in out else spec.test_fraction)
        out["train"] = carved["train"]
        out.setdefault("validation", carved["validation"])
        out.setdefault("test", carved["test"])
    return out


def _table_samples(table: Any, spec: HFDatasetsTaskSpec, where: str) -> list[VQASample]:
    columns = list(table.column_names)
    for field in ("question_column", "answer_column", "image_column", "choices_column"):
        column = getattr(spec, field)
        if column is not None and column not in columns:
            raise DataError(f"no column {column!r} (data.{field}); columns: {', '.join(columns)}", where=where,
                            fix=f"set data.{field} to the right column name")
    samples = []
    for index, row in enumerate(table):
        record_id = str(row["id"]) if "id" in row and row["id"] is not None else str(index)
        at = f"{where} record {index} (id {record_id!r})"
        question, answer = row[spec.question_column], row[spec.answer_column]
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"question is {question!r}", where=at, fix="every row needs a non-empty question string")
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(f"answer is {answer!r}", where=at, fix="every row needs a non-empty answer string")
        choices = None
        if spec.choices_column is not None and row[spec.choices_column] is not None:
            choices = row[spec.choices_column]
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise DataError(f"choices must be a list of strings, got {choices!r}", where=at, fix="fix that row")
            choices = tuple(choices)
        images = _row_images(row[spec.image_column], at)
        samples.append(VQASample(record_id, images, question.replace(IMAGE_MARKER, "").strip(), answer.strip(),
                                 choices, metadata={"record_id": record_id, "source": where}))
    return samples


def _row_images(value: Any, where: str) -> tuple[Any, ...]:
    from PIL import Image

    if value is None:
        return ()
    values: Iterable[Any] = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if isinstance(v, Image.Image):
            out.append(v.convert("RGB"))
        elif isinstance(v, Mapping) and v.get("bytes"):
            from masters.files import guarded_load

            with guarded_load(where, "image bytes", fix="fix or drop that row's image"):
                with Image.open(io.BytesIO(v["bytes"])) as im:
                    out.append(im.convert("RGB"))
        elif isinstance(v, (str, Mapping)):
            p = Path(v if isinstance(v, str) else str(v.get("path") or ""))
            if not p.is_file():
                raise DataError(f"image not found: {p}", where=where, fix="check that row's image path")
            out.append(str(p))
        else:
            raise DataError(f"unsupported image value {type(v).__name__}", where=where,
                            fix="store images as a datasets Image column, bytes, or paths")
    return tuple(out)
