"""``masters bank import``: add responses generated elsewhere (vLLM, another machine) to a run's bank.

Input files are Parquet or JSONL (one JSON object per line) in the bank's documented schema
(:mod:`masters.bank.schema`). Required columns: ``source``, ``teacher``, ``level_bp``,
``question_id``, ``sample_index``, ``response_text``, ``token_ids``. The derived columns
(``row_id``, ``num_tokens``, ``empty``, ``truncated``, ``seed``, ``stage_hash``, ``generation``)
may be omitted and are computed; where given, the checkable ones must agree. A
``tokenizer_fingerprint`` column, a Parquet metadata key of that name, or the
``tokenizer_fingerprint`` argument must name the student's tokenizer (``masters bank
fingerprint CONFIG`` prints it).

Every row of every file is validated before anything is written, so a bad file adds nothing:

* the tokenizer fingerprint equals the bank's (the student's tokenizer);
* the token ids are in the tokenizer, hold no special token but EOS, and decode to the text
  (compared after whitespace normalisation);
* the question id is in the training split, the teacher is in the chain, the level is one of
  that teacher's schedule levels (the student has no teacher and no level);
* keys are unique within the files, and a key already banked holds the same tokens (identical
  rows are skipped, different ones are an error naming the row).

Imported rows record where they came from in their ``generation`` JSON (``imported_from``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from masters.bank.schema import BANK_SCHEMA, STUDENT, TEACHER, row_id
from masters.errors import DataError

if TYPE_CHECKING:
    from masters.specs import RunSpec

REQUIRED = ("source", "teacher", "level_bp", "question_id", "sample_index", "response_text", "token_ids")
DERIVED = ("row_id", "num_tokens", "empty", "truncated", "seed", "stage_hash", "generation")
OPTIONAL = ("behaviour_logprobs",)  # null when absent (vLLM's logprobs of the sampled tokens fill it)
FINGERPRINT = "tokenizer_fingerprint"
ALLOWED = frozenset(REQUIRED + DERIVED + OPTIONAL + (FINGERPRINT,))
SHARD_ROWS = 50_000


@dataclass
class ImportReport:
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_written: int = 0
    rows_skipped: int = 0  # identical to a row already banked
    per_group: dict[str, int] = field(default_factory=dict)


def normalise_whitespace(text: str) -> str:
    return " ".join(text.split())


def student_tokenizer(spec: RunSpec) -> Any:
    from masters.adapters.resolve import load_tokenizer

    return load_tokenizer(spec.student.path, where="student")


def fingerprint_of(tokenizer: Any) -> str:
    """The bank's tokenizer fingerprint (the same as generation's, from the token-to-id map)."""
    from masters.engine.generation import tokenizer_fingerprint

    class _Vocab:
        def vocab(self) -> dict[str, int]:
            return tokenizer.get_vocab()

    return tokenizer_fingerprint(_Vocab())


def eos_ids(spec: RunSpec, tokenizer: Any) -> set[int]:
    """EOS ids of the student: the tokenizer's plus its generation config's (no weights loaded)."""
    ids = set() if tokenizer.eos_token_id is None else {int(tokenizer.eos_token_id)}
    path = Path(spec.student.path) / "generation_config.json"
    if path.exists():
        value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
        ids.update([] if value is None else [value] if isinstance(value, int) else value)
    return ids


def image_token_ids(spec: RunSpec) -> set[int]:
    """The student's image placeholder id(s) from its config.json, as generation bans them."""
    path = Path(spec.student.path) / "config.json"
    if not path.exists():
        return set()
    config = json.loads(path.read_text(encoding="utf-8"))
    keys = ("image_token_index", "image_token_id", "video_token_id")
    return {int(config[k]) for k in keys if isinstance(config.get(k), int)}


def read_rows(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """Rows of one Parquet or JSONL file and the file-level fingerprint, if its metadata has one."""
    if not path.is_file():
        raise DataError("no such file", where=str(path), fix="check the path of the file to import")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"not a readable Parquet file: {exc}", where=str(path),
                            fix="write it with pyarrow or pandas `to_parquet`") from None
        meta = table.schema.metadata or {}
        fp = meta.get(FINGERPRINT.encode())
        return table.to_pylist(), fp.decode() if fp is not None else None
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        from masters.files import guarded_load

        with guarded_load(path, "JSONL file", fix="write UTF-8 JSON, one object per line"), \
                open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"line {line_no} is not valid JSON: {exc.msg}", where=f"{path}, row {len(rows) + 1}",
                                    fix="write one JSON object per line") from None
                if not isinstance(row, dict):
                    raise DataError(f"line {line_no} is a {type(row).__name__}, not a JSON object",
                                    where=f"{path}, row {len(rows) + 1}", fix="write one JSON object per line")
                rows.append(row)
        return rows, None
    raise DataError(f"unknown file type {suffix or '(none)'!r}", where=str(path),
                    fix="import .parquet or .jsonl files in the bank schema (`masters.bank.schema`)")


class _Validator:
    """Checks and completes rows against one run spec; raises DataError naming file and row."""

    def __init__(self, spec: RunSpec, bank: Any, *, tokenizer: Any, fingerprint: str, splits: Mapping[str, list[Any]]):
        from masters.engine.generation import SAMPLING_FIELDS
        from masters.schedules.chain import TeacherChain

        self.spec, self.bank, self.tokenizer, self.fingerprint = spec, bank, tokenizer, fingerprint
        self.questions = {s.id for s in splits["train"]}
        chain = TeacherChain.from_run_spec(spec)
        self.levels = {t.path: {lvl.bp for lvl in chain.levels(i)} for i, t in enumerate(spec.teachers)}
        self.eos = eos_ids(spec, tokenizer)
        vocab = tokenizer.get_vocab()
        self.vocab_size = max(vocab.values()) + 1 if vocab else 0
        self.banned = (set(tokenizer.all_special_ids) | image_token_ids(spec)) - self.eos
        self.default_params = {k: getattr(spec.generation, k) for k in SAMPLING_FIELDS}
        self.stage_hash = bank.manifest()["stage_hash"]
        self.seen: dict[str, str] = {}  # row id -> where it was first seen

    def check_fingerprint(self, path: Path, rows: Sequence[Mapping[str, Any]], file_fp: str | None,
                          given: str | None) -> None:
        fix = (f"generate the responses with the student's tokenizer ({self.spec.student.path}, fingerprint "
               f"{self.fingerprint}) and record that fingerprint")
        column = {r.get(FINGERPRINT) for r in rows if r.get(FINGERPRINT) is not None}
        for value in column:
            if value != self.fingerprint:
                index = next(i for i, r in enumerate(rows) if r.get(FINGERPRINT) == value)
                raise DataError(f"tokenizer fingerprint {value!r} differs from the bank's {self.fingerprint!r}",
                                where=f"{path}, row {index + 1}", fix=fix)
        for what, value in (("file metadata", file_fp), ("--tokenizer-fingerprint", given)):
            if value is not None and value != self.fingerprint:
                raise DataError(f"tokenizer fingerprint {value!r} ({what}) differs from the bank's {self.fingerprint!r}",
                                where=str(path), fix=fix)
        if not column and file_fp is None and given is None:
            raise DataError("the file names no tokenizer fingerprint", where=str(path),
                            fix=f"add a `{FINGERPRINT}` column (or Parquet metadata key), or pass "
                            f"--tokenizer-fingerprint; this bank's is {self.fingerprint} "
                            "(`masters bank fingerprint CONFIG` prints it)")

    def row(self, path: Path, index: int, raw: Mapping[str, Any], banked: Mapping[str, Mapping[str, Any]]) -> dict | None:
        """The completed bank row, or None when an identical row is already banked."""
        where = f"{path}, row {index + 1}"

        def fail(message: str, fix: str) -> DataError:
            key = raw.get("row_id") or _safe_key(raw)
            return DataError(message + (f" (key {key})" if key else ""), where=where, fix=fix)

        unknown = sorted(set(raw) - ALLOWED)
        if unknown:
            raise fail(f"unknown column(s) {', '.join(unknown)}",
                       f"use the bank schema's columns: {', '.join(sorted(ALLOWED))}")
        missing = [c for c in REQUIRED if c not in raw]
        if missing:
            raise fail(f"missing column(s) {', '.join(missing)}", f"every row needs {', '.join(REQUIRED)}")
        source, teacher, level = raw["source"], raw["teacher"], raw["level_bp"]
        qid, k, text, ids = raw["question_id"], raw["sample_index"], raw["response_text"], raw["token_ids"]
        if not isinstance(text, str):
            raise fail("response_text is not a string", "store the decoded response as text")
        if not _is_int(k) or k < 0:
            raise fail(f"sample_index {k!r} is not a non-negative integer", "number the samples 0, 1, ...")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
            raise fail(f"question_id {qid!r} is not a string", "use the training questions' ids")
        qid = str(qid)
        if not isinstance(ids, (list, tuple)) or not all(_is_int(t) for t in ids):
            raise fail("token_ids is not a list of integers", "store the response's token ids as generated")
        ids = [int(t) for t in ids]
        if source == STUDENT:
            if teacher not in ("", None) or level is not None:
                raise fail(f"a student row has teacher {teacher!r} and level_bp {level!r}",
                           "student rows take teacher \"\" and level_bp null")
            teacher = ""
        elif source == TEACHER:
            if teacher not in self.levels:
                raise fail(f"teacher {teacher!r} is not in the config's chain",
                           f"use a teacher path of the config: {', '.join(self.levels)}")
            if not _is_int(level) or int(level) not in self.levels[teacher]:
                levels = ", ".join(str(b) for b in sorted(self.levels[teacher], reverse=True))
                raise fail(f"level_bp {level!r} is not a level of {teacher}'s schedule",
                           f"use one of its levels in basis points: {levels}")
            level = int(level)
        else:
            raise fail(f"source {source!r} is neither {TEACHER!r} nor {STUDENT!r}", "set source to teacher or student")
        if qid not in self.questions:
            raise fail(f"question_id {qid!r} is not in the training split",
                       "import responses to the questions of the config's data (its train split)")
        key = row_id(source, teacher, level, qid, int(k))
        if raw.get("row_id") is not None and raw["row_id"] != key:
            raise fail(f"row_id {raw['row_id']!r} does not match its columns ({key!r})",
                       "drop the row_id column (it is computed) or correct it")
        if key in self.seen:
            raise fail(f"duplicate key {key!r}, first at {self.seen[key]}", "keep one row per key")
        self.seen[key] = where
        if not ids:
            raise fail("token_ids is empty", "a response holds at least one token (EOS for an empty answer)")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise fail(f"token id {bad[0]} is outside the tokenizer (size {self.vocab_size})",
                       "generate with the student's tokenizer; padded embedding rows are no tokens")
        special = [t for t in ids if t in self.banned]
        if special:
            raise fail(f"token id {special[0]} ({self.tokenizer.convert_ids_to_tokens(special[0])!r}) is a special "
                       "token other than EOS", "ban special tokens but EOS when generating (training teacher-forces these ids)")
        decoded = self.tokenizer.decode(ids, skip_special_tokens=True)
        if normalise_whitespace(decoded) != normalise_whitespace(text):
            raise fail(f"token_ids decode to {_short(decoded)!r}, not the response_text {_short(text)!r}",
                       "store the ids and the text of the same response, from the student's tokenizer")
        if raw.get("num_tokens") is not None and raw["num_tokens"] != len(ids):
            raise fail(f"num_tokens {raw['num_tokens']} != len(token_ids) {len(ids)}", "drop num_tokens or correct it")
        empty = not text.strip()
        if raw.get("empty") is not None and bool(raw["empty"]) != empty:
            raise fail(f"empty is {raw['empty']} but the text is {'' if empty else 'not '}blank", "drop empty or correct it")
        params = self._params(raw.get("generation"), fail)
        max_new = params.get("max_new_tokens", self.default_params["max_new_tokens"])
        truncated = raw.get("truncated")
        if truncated is None:
            truncated = bool(_is_int(max_new) and len(ids) >= int(max_new) and ids[-1] not in self.eos)
        seed = raw.get("seed")
        if seed is None:
            from masters.engine.identity import derived_seed

            seed = derived_seed(self.spec.generation.seed, source, teacher, level, qid, int(k))
        elif not _is_int(seed):
            raise fail(f"seed {seed!r} is not an integer", "drop seed or store an integer")
        params = {**params, "imported_from": str(path)}
        row = {"row_id": key, "source": source, "teacher": teacher, "level_bp": level, "question_id": qid,
               "sample_index": int(k), "response_text": text, "token_ids": ids, "num_tokens": len(ids),
               "truncated": bool(truncated), "empty": empty, "seed": int(seed),
               "generation": json.dumps(params, sort_keys=True), "stage_hash": self.stage_hash}
        old = banked.get(key)
        if old is not None:
            if list(old["token_ids"]) == ids and old["response_text"] == text:
                return None
            raise fail(f"key {key!r} is already banked with a different response",
                       "give the row another sample_index, or import into another output_dir")
        behaviour = raw.get("behaviour_logprobs")
        if behaviour is not None:
            import math

            if (not isinstance(behaviour, (list, tuple)) or len(behaviour) != len(ids)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v <= 1e-6
                               for v in behaviour)):
                raise fail("behaviour_logprobs is not one finite log-prob (<= 0) per token",
                           "store the sampled tokens' log-probs under the sampling distribution, or drop the column")
            behaviour = [float(v) for v in behaviour]
        row["behaviour_logprobs"] = behaviour
        return row

    def _params(self, value: Any, fail: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise fail("generation is not a JSON object", "store the sampling parameters as a JSON object") from None
        if not isinstance(value, dict):
            raise fail("generation is not a JSON object", "store the sampling parameters as a JSON object")
        return value


def import_files(spec: RunSpec, files: Sequence[str | Path], *, force: bool = False, tokenizer_fingerprint: str | None = None,
                 splits: Mapping[str, list[Any]] | None = None) -> ImportReport:
    """Validate every row of ``files`` against ``spec``, then add the new ones to the run's bank."""
    from masters.bank.store import ResponseBank
    from masters.data import load_splits
    from masters.engine.generation import bank_dir, generation_fields
    from masters.engine.identity import provenance, stage_hash

    tokenizer = student_tokenizer(spec)
    fingerprint = fingerprint_of(tokenizer)
    paths = [Path(f) for f in files]
    loaded = [(p, *read_rows(p)) for p in paths]  # read before the bank is touched: a bad path writes nothing
    splits = splits or load_splits(spec.task)
    fields = generation_fields(spec)
    from masters.engine.locks import run_outputs

    with run_outputs(spec, "bank import", bank=True):  # one writer per directory (decision 19)
        bank = ResponseBank.open(bank_dir(spec), stage_hash=stage_hash("generate", fields), tokenizer_fingerprint=fingerprint,
                                 metadata={"fields": json.loads(json.dumps(fields, default=str)), "provenance": provenance()},
                                 force=force)
        validator = _Validator(spec, bank, tokenizer=tokenizer, fingerprint=fingerprint, splits=splits)
        present = bank.keys()
        report = ImportReport(files=[str(p) for p in paths])
        fresh: list[dict[str, Any]] = []
        for path, rows, file_fp in loaded:
            validator.check_fingerprint(path, rows, file_fp, tokenizer_fingerprint)
            keys = [_safe_key(r) for r in rows]
            banked = _banked_rows(bank, {k for k in keys if k in present})
            for index, raw in enumerate(rows):
                row = validator.row(path, index, raw, banked)
                report.rows_read += 1
                if row is None:
                    report.rows_skipped += 1
                    continue
                fresh.append(row)
                group = "student" if row["source"] == STUDENT else f"{Path(row['teacher']).name} @ {row['level_bp']} bp"
                report.per_group[group] = report.per_group.get(group, 0) + 1
        for start in range(0, len(fresh), SHARD_ROWS):
            report.rows_written += bank.append(fresh[start:start + SHARD_ROWS])
        return report


def _banked_rows(bank: Any, keys: set[str]) -> dict[str, dict[str, Any]]:
    if not keys:
        return {}
    import pyarrow as pa
    import pyarrow.compute as pc

    table = bank.table(["row_id", "response_text", "token_ids"])
    table = table.filter(pc.is_in(table.column("row_id"), value_set=pa.array(sorted(keys), pa.string())))
    return {r["row_id"]: r for r in table.to_pylist()}


def _safe_key(raw: Mapping[str, Any]) -> str | None:
    try:
        level = raw.get("level_bp")
        teacher = raw.get("teacher") or ""
        return row_id(str(raw["source"]), str(teacher), None if level is None else int(level), str(raw["question_id"]),
                      int(raw["sample_index"]))
    except (KeyError, TypeError, ValueError):
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n] + "..."


assert set(REQUIRED + DERIVED + OPTIONAL) == set(BANK_SCHEMA.names)
