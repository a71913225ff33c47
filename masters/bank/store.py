"""Crash-safe, resumable storage for the response bank and its scores.

Every write is a whole Parquet shard written to a temporary name, flushed to disk and renamed
into place (``os.replace`` is atomic), so a process killed at any moment leaves either the whole
shard or none of it. Generated shards are named by their row ids, so the ranks of a launch write
side by side and a batch written twice is one file. Readers ignore and clean leftover temporaries. A resumed stage asks for the
keys already present and writes only the rest: no row is lost or duplicated.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from masters.bank.schema import BANK_SCHEMA, FORMAT, SCORE_SCHEMA
from masters.errors import DataError, MastersError
from masters.files import atomic_path, atomic_write_json, clean_temporaries, content_name, guarded_load

MANIFEST = "bank.json"


def _atomic_write_table(table: pa.Table, directory: Path, prefix: str, *, name: str | None = None) -> Path:
    final = directory / (name or f"{prefix}-{uuid.uuid4().hex[:12]}.parquet")
    with atomic_path(final) as tmp:  # flushed to disk before the rename publishes it
        pq.write_table(table, tmp)
    return final


def _atomic_write_json(data: Mapping[str, Any], path: Path) -> None:
    atomic_write_json(path, data, sort_keys=True)


def _read_parquet(path: Path, schema: pa.Schema) -> pa.Table:
    with guarded_load(path, "bank file", fix="delete this file and run the stage again: the rows it held are "
                      "regenerated"):
        table = pq.read_table(path)
    table = _with_later_columns(table, schema)
    if not table.schema.remove_metadata().equals(schema):
        raise DataError(
            "bank file has an unexpected schema",
            where=str(path),
            fix="it was not written by this version of masters; delete it or import it with `masters bank import`",
        )
    return table


def _with_later_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A shard written before a later column existed (``LATER_COLUMNS``) reads it as null."""
    from masters.bank.schema import LATER_COLUMNS

    missing = [n for n in LATER_COLUMNS if n in schema.names and n not in table.schema.names]
    if not missing:
        return table
    for name in missing:
        field = schema.field(name)
        table = table.append_column(field, pa.nulls(table.num_rows, type=field.type))
    return table.select(schema.names) if set(table.schema.names) == set(schema.names) else table


class ResponseBank:
    """A directory of response shards plus ``bank.json`` (identity and provenance)."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.shards = self.directory / "shards"
        self._keys: set[str] | None = None

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, stage_hash: str, tokenizer_fingerprint: str,
             metadata: Mapping[str, Any] | None = None, force: bool = False) -> ResponseBank:
        """Create the bank or reopen it; refuse one made from other inputs unless ``force``."""
        bank = cls(directory)
        manifest_path = bank.directory / MANIFEST
        if manifest_path.exists():
            manifest = bank.manifest()
            for key, value, what in (("stage_hash", stage_hash, "generation settings"),
                                     ("tokenizer_fingerprint", tokenizer_fingerprint, "tokenizer")):
                if manifest.get(key) != value and not force:
                    raise MastersError(
                        f"this bank was made with other {what} ({key} {manifest.get(key)} != {value})",
                        where=str(manifest_path),
                        fix="use another output_dir, restore the settings it was made with, "
                        "or pass --force to extend it anyway",
                    )
            if force and manifest.get("stage_hash") != stage_hash:
                manifest.setdefault("forced", []).append(stage_hash)
                _atomic_write_json(manifest, manifest_path)
        else:
            bank.directory.mkdir(parents=True, exist_ok=True)
            _atomic_write_json({"format": FORMAT, "stage_hash": stage_hash,
                                "tokenizer_fingerprint": tokenizer_fingerprint, **(metadata or {})}, manifest_path)
        bank.clean_temporaries()
        return bank

    def manifest(self) -> dict[str, Any]:
        path = self.directory / MANIFEST
        if not path.is_file():
            raise DataError("not a response bank (no bank.json)", where=str(self.directory),
                            fix="run `masters generate CONFIG` first, or point at the bank directory")
        with guarded_load(path, "bank manifest (bank.json)",
                          fix="restore it from the run's provenance or regenerate the bank"):
            data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise DataError("bank.json is not a JSON object", where=str(path),
                            fix="restore it from the run's provenance or regenerate the bank")
        return data

    def clean_temporaries(self) -> None:
        """Remove what killed writers left: masters' own temporary names only, never a user's file."""
        clean_temporaries(self.directory)

    def writing(self, what: str) -> Any:
        """``with bank.writing("generate"):`` claim and lock the bank directory (one writer)."""
        from masters.engine.locks import stage_outputs

        return stage_outputs(self.directory, what)

    # -- rows -------------------------------------------------------------------------------
    def shard_paths(self) -> list[Path]:
        return sorted(self.shards.glob("*.parquet"))

    def keys(self) -> set[str]:
        if self._keys is None:
            keys: set[str] = set()
            for path in self.shard_paths():
                ids = _read_parquet(path, BANK_SCHEMA).column("row_id").to_pylist()
                dup = keys.intersection(ids)
                if dup or len(set(ids)) != len(ids):
                    raise DataError(f"duplicate bank rows, e.g. {sorted(dup)[:1]}", where=str(path),
                                    fix="delete this shard and rerun the stage")
                keys.update(ids)
            self._keys = keys
        return set(self._keys)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write rows not already banked as one atomic shard; return how many were written."""
        present = self.keys()
        fresh, seen = [], set()
        for row in rows:
            if row["row_id"] not in present and row["row_id"] not in seen:
                fresh.append(row)
                seen.add(row["row_id"])
        if not fresh:
            return 0
        table = pa.Table.from_pylist(fresh, schema=BANK_SCHEMA)
        # Named by its rows: a batch banked twice (two ranks, a rerun) is one file, not a duplicate.
        _atomic_write_table(table, self.shards, "part", name=content_name("part", seen))
        assert self._keys is not None
        self._keys.update(seen)
        return len(fresh)

    def table(self, columns: Sequence[str] | None = None) -> pa.Table:
        tables = [_read_parquet(p, BANK_SCHEMA) for p in self.shard_paths()]
        if not tables:
            table = BANK_SCHEMA.empty_table()
        else:
            table = pa.concat_tables(tables).sort_by([("row_id", "ascending")])
        return table.select(list(columns)) if columns else table

    def __len__(self) -> int:
        return len(self.keys())

    # -- repair -----------------------------------------------------------------------------
    def repair(self) -> dict[str, int]:
        """Keep one copy of each key (the first, in shard order) in the rows and in every score folder.

        Shards without duplicates are left alone; the deduplicated rows of the others are written
        as one new shard before they are removed, so a kill at any point loses nothing (a rerun
        finishes the repair). Returns ``{folder: copies removed}``.
        """
        folders = [(self.shards, BANK_SCHEMA, "part")]
        scores = self.directory / "scores"
        if scores.is_dir():
            folders += [(d, SCORE_SCHEMA, "scores") for d in sorted(scores.iterdir()) if d.is_dir()]
        removed: dict[str, int] = {}
        for folder, schema, prefix in folders:
            seen: set[str] = set()
            kept, dirty, dropped = [], [], 0
            for path in sorted(folder.glob("*.parquet")):
                table = _read_parquet(path, schema)
                mask = []
                for rid in table.column("row_id").to_pylist():
                    mask.append(rid not in seen)
                    seen.add(rid)
                if all(mask):
                    continue
                dirty.append(path)
                dropped += mask.count(False)
                kept.append(table.filter(pa.array(mask, type=pa.bool_())))
            if dirty:
                rows = pa.concat_tables(kept)
                if rows.num_rows:
                    _atomic_write_table(rows, folder, prefix)
                for path in dirty:
                    path.unlink()
            removed[str(folder.relative_to(self.directory))] = dropped
        self._keys = None
        return removed

    # -- scores -----------------------------------------------------------------------------
    def score_dir(self, reward_key: str) -> Path:
        return self.directory / "scores" / reward_key

    def scored_ids(self, reward_key: str) -> set[str]:
        ids: set[str] = set()
        for path in sorted(self.score_dir(reward_key).glob("*.parquet")):
            ids.update(_read_parquet(path, SCORE_SCHEMA).column("row_id").to_pylist())
        return ids

    def write_scores(self, reward_key: str, scores: Iterable[tuple[str, float]]) -> int:
        done = self.scored_ids(reward_key)
        rows = [{"row_id": rid, "value": float(v)} for rid, v in scores if rid not in done]
        if rows:
            _atomic_write_table(pa.Table.from_pylist(rows, schema=SCORE_SCHEMA), self.score_dir(reward_key), "scores")
        return len(rows)

    def scores(self, reward_key: str) -> dict[str, float]:
        values: dict[str, float] = {}
        for path in sorted(self.score_dir(reward_key).glob("*.parquet")):
            table = _read_parquet(path, SCORE_SCHEMA)
            values.update(zip(table.column("row_id").to_pylist(), table.column("value").to_pylist()))
        return values
