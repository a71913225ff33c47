"""The ``cached`` teacher signal: top-k teacher log-probs precomputed, so training never loads the teacher.

For every response the plan trains on, at the level its step uses, the masked teacher's ``k``
largest log-probs per response token are stored with their token ids (Parquet, keyed by row id,
teacher and level). In the training step the teacher distribution is coarse-grained to ``k + 1``
buckets (its top-k tokens and "the rest") and the student's distribution is grouped the same way;
the JSD between the two bucketed distributions replaces the full-vocabulary JSD. Grouping
outcomes can only lower a divergence (data processing), so the cached JSD is a lower bound of the
online one; ``benchmarks/teacher_signal.py`` reports the gap and the saving.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from masters.engine.faults import kill_point
from masters.files import atomic_path, clean_temporaries, content_name
from masters.errors import MastersError

SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("topk_ids", pa.list_(pa.list_(pa.int32())), nullable=False),
    pa.field("topk_logprobs", pa.list_(pa.list_(pa.float32())), nullable=False),
])
BYTES_PER_ENTRY = 8  # int32 id + float32 log-prob
_LN2 = 0.6931471805599453


def cache_key(row_id: str, teacher: int, level_bp: int) -> str:
    return f"{teacher}@{level_bp}|{row_id}"


def estimate_bytes(n_tokens: int, top_k: int) -> int:
    """Parquet stores the lists about as densely as raw arrays; overhead is a few percent."""
    return int(n_tokens * top_k * BYTES_PER_ENTRY * 1.1)


def check_fits(directory: Path, n_tokens: int, top_k: int) -> int:
    """Refuse, before writing anything, a cache that would not fit on the disk."""
    need = estimate_bytes(n_tokens, top_k)
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if need > 0.9 * free:
        raise MastersError(
            f"the teacher cache needs about {need / 2**30:.1f} GiB ({n_tokens} response tokens x top-{top_k}) "
            f"but {free / 2**30:.1f} GiB are free",
            where=str(directory), fix="lower training.cache_top_k, free disk space, or use teacher_signal: online")
    return need


class TeacherCache:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._entries: dict[str, tuple[list[list[int]], list[list[float]]]] | None = None

    def entries(self) -> dict[str, tuple[list[list[int]], list[list[float]]]]:
        if self._entries is None:
            self._entries = {}
            for path in sorted(self.directory.glob("*.parquet")):
                table = pq.read_table(path)
                for key, ids, lps in zip(table.column("key").to_pylist(), table.column("topk_ids").to_pylist(),
                                         table.column("topk_logprobs").to_pylist()):
                    self._entries[key] = (ids, lps)
        return self._entries

    def reload(self) -> None:
        """Forget what was read: the next access sees files other processes wrote since."""
        self._entries = None

    def clean_partial(self) -> None:
        """Remove the temporaries killed writers left (masters' own names of processes that are gone,
        see :func:`masters.files.clean_temporaries`; a live writer's file and a user's ``*.tmp`` stay)."""
        clean_temporaries(self.directory, recursive=False)

    def write(self, items: Mapping[str, tuple[list[list[int]], list[list[float]]]]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / content_name("cache", items)  # the same chunk twice: one file
        rows = [{"key": k, "topk_ids": ids, "topk_logprobs": lps} for k, (ids, lps) in items.items()]
        with atomic_path(final) as tmp:
            pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
        self.entries().update(items)

    def tensors(self, keys: Sequence[str], length: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids [B, T, k]`` and ``logprobs [B, T, k]`` aligned by response-token index (padding: -inf)."""
        entries = self.entries()
        first = entries[keys[0]][0]
        k = len(first[0]) if first else 1
        ids = torch.zeros(len(keys), length, k, dtype=torch.long)
        lps = torch.full((len(keys), length, k), float("-inf"))
        for i, key in enumerate(keys):
            row_ids, row_lps = entries[key]
            n = min(len(row_ids), length)
            if n:
                ids[i, :n] = torch.tensor(row_ids[:n])
                lps[i, :n] = torch.tensor(row_lps[:n])
        return ids.to(device), lps.to(device)


@torch.no_grad()
def fill_cache(cache: TeacherCache, teacher: Any, vocab_size: int, work: Sequence[tuple[str, Mapping[str, Any], Any]],
               *, top_k: int, batch_size: int = 8, clean: bool = True, written_before: int = 0) -> int:
    """Teacher-force ``(key, row, sample)`` items missing from the cache at the teacher's current level.

    Several processes may fill disjoint shares of one cache (files are named by their keys); they
    pass ``clean=False`` and one of them calls ``cache.clean_partial()`` first. ``written_before``:
    what this process wrote in earlier calls (for the kill point's running count).
    """
    if clean:
        cache.clean_partial()
    done = cache.entries()
    pending = [w for w in work if w[0] not in done]
    written = 0
    for start in range(0, len(pending), batch_size):
        chunk = pending[start:start + batch_size]
        forced = teacher.teacher_force([s for _, _, s in chunk], [list(r["token_ids"]) for _, r, _ in chunk],
                                       vocab_limit=vocab_size)
        logprobs = torch.log_softmax(forced.logits.float(), dim=-1)
        top = torch.topk(logprobs, min(top_k, logprobs.shape[-1]), dim=-1)
        items = {}
        for i, (key, row, _) in enumerate(chunk):
            n = len(row["token_ids"])
            items[key] = (top.indices[i, :n].tolist(), top.values[i, :n].tolist())
        cache.write(items)
        written += len(chunk)
        kill_point("teacher-cache", written_before + written)
    return written


def bucket_jsd(topk_ids: torch.Tensor, topk_logprobs: torch.Tensor, student_logits: torch.Tensor,
               mask: torch.Tensor, *, vocab_size: int | None = None) -> torch.Tensor:
    """Per-token JSD over ``k + 1`` buckets (teacher's top-k tokens, the rest): ``[B, T]``.

    Differentiable w.r.t. ``student_logits``; positions outside ``mask`` are 0.
    """
    logits = student_logits[..., :vocab_size] if vocab_size else student_logits
    log_q_full = torch.log_softmax(logits.float(), dim=-1)
    log_q_top = log_q_full.gather(-1, topk_ids)
    log_p_top = topk_logprobs.float()
    p_rest = (1.0 - log_p_top.exp().sum(-1)).clamp(min=0.0)
    q_rest = (1.0 - log_q_top.exp().sum(-1)).clamp(min=0.0)
    p = torch.cat([log_p_top.exp(), p_rest.unsqueeze(-1)], dim=-1)
    q = torch.cat([log_q_top.exp(), q_rest.unsqueeze(-1)], dim=-1)
    m = 0.5 * (p + q)
    kl_p = torch.where(p > 0, p * (torch.log(p.clamp(min=1e-30)) - torch.log(m.clamp(min=1e-30))), 0.0).sum(-1)
    kl_q = torch.where(q > 0, q * (torch.log(q.clamp(min=1e-30)) - torch.log(m.clamp(min=1e-30))), 0.0).sum(-1)
    values = 0.5 * (kl_p + kl_q)
    return values.masked_fill(~mask.bool(), 0.0).clamp(min=0.0, max=_LN2)
