"""Reference log-probabilities of the initial student, precomputed once (method.md section 6).

The reference policy never changes, so its per-token log-probs for every banked response the
plan uses are computed before training, stored as Parquet keyed by bank row id, and read back
in each step: the KL term needs no second student in memory.
"""

from __future__ import annotations

import contextlib

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from masters.engine.faults import kill_point
from masters.files import atomic_path, clean_temporaries

SCHEMA = pa.schema([pa.field("row_id", pa.string(), nullable=False),
                    pa.field("logprobs", pa.list_(pa.float32()), nullable=False)])


class ReferenceStore:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._values: dict[str, list[float]] | None = None

    def values(self) -> dict[str, list[float]]:
        if self._values is None:
            self._values = {}
            for path in sorted(self.directory.glob("*.parquet")):
                table = pq.read_table(path)
                self._values.update(zip(table.column("row_id").to_pylist(), table.column("logprobs").to_pylist()))
        return self._values

    def reload(self) -> None:
        """Forget what was read: the next access sees files other processes wrote since."""
        self._values = None

    def clean_partial(self) -> None:
        """Remove the temporaries killed writers left (masters' own names of processes that are gone,
        see :func:`masters.files.clean_temporaries`; a live writer's file and a user's ``*.tmp`` stay)."""
        clean_temporaries(self.directory, recursive=False)

    def write(self, rows: Mapping[str, list[float]]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"ref-{uuid.uuid4().hex[:12]}.parquet"
        table = pa.Table.from_pylist([{"row_id": k, "logprobs": v} for k, v in rows.items()], schema=SCHEMA)
        with atomic_path(final) as tmp:
            pq.write_table(table, tmp)
        self.values().update(rows)

    def tensor(self, row_ids: Sequence[str], length: int) -> torch.Tensor:
        """``[B, length]`` log-probs aligned by response-token index (0 past each response)."""
        values = self.values()
        out = torch.zeros(len(row_ids), length)
        for i, rid in enumerate(row_ids):
            lp = values[rid][:length]
            out[i, : len(lp)] = torch.tensor(lp)
        return out


@torch.no_grad()
def compute_reference(store: ReferenceStore, student: Any, rows: Sequence[Mapping[str, Any]],
                      samples: Mapping[str, Any], *, batch_size: int = 8, progress: Any = None,
                      clean: bool = True, autocast: Any = None) -> int:
    """Teacher-force every row not yet stored through the (initial) student; return rows written.

    ``autocast`` is the training step's autocast context factory (``accelerator.autocast``): the
    reference log-probs must be computed in the precision the step computes the student's, or under
    bf16 the KL to the reference is not 0 at step 0.

    Several processes may each compute a disjoint share into one store (files are uniquely
    named); they pass ``clean=False`` and one of them calls ``store.clean_partial()`` first.
    """
    if clean:
        store.clean_partial()
    done = store.values()
    pending = [r for r in rows if r["row_id"] not in done]
    task = progress.add_task("reference log-probs", total=len(pending)) if progress else None
    written = 0
    was_training = student.model.training
    student.model.eval()
    try:
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            with autocast() if autocast is not None else contextlib.nullcontext():
                forced = student.teacher_force([samples[r["question_id"]] for r in chunk],
                                               [r["token_ids"] for r in chunk])
            lp = forced.logprobs.float().cpu()
            store.write({r["row_id"]: lp[i, : len(r["token_ids"])].tolist() for i, r in enumerate(chunk)})
            written += len(chunk)
            kill_point("reference", written)
            if progress:
                progress.advance(task, len(chunk))
    finally:
        student.model.train(was_training)
    return written
