"""Crash-safe, resumable storage for the response bank and its scores.

Every write is a whole Parquet shard written to a temporary name, flushed to disk and renamed
into place (``os.replace`` is atomic), so a process killed at any moment leaves either the whole
shard or none of it. Readers ignore and clean leftover temporaries. A resumed stage asks for the
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

MANIFEST = "bank.json"


def _atomic_write_table(table: pa.Table, directory: Path, prefix: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{prefix}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = final.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb+") as handle:  # make the bytes durable before the rename publishes them
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    return final


def _atomic_write_json(data: Mapping[str, Any], path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_parquet(path: Path, schema: pa.Schema) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"corrupt bank file: {exc}",
            where=str(path),
            fix="delete this file and run the stage again: the rows it held are regenerated",
        ) from None
    if not table.schema.remove_metadata().equals(schema):
        raise DataError(
            "bank file has an unexpected schema",
            where=str(path),
            fix="it was not written by this version of masters; delete it or import it with `masters bank import`",
        )
    return table


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
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError("not a response bank (no bank.json)", where=str(self.directory),
                            fix="run `masters generate CONFIG` first, or point at the bank directory") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"corrupt bank.json: {exc}", where=str(path),
                            fix="restore it from the run's provenance or regenerate the bank") from None

    def clean_temporaries(self) -> None:
        for tmp in self.directory.rglob("*.tmp"):
            tmp.unlink(missing_ok=True)

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
        _atomic_write_table(table, self.shards, "part")
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
