"""The bank's behaviour log-probs (mu) for objectives that ask for them (TOPR), and the command that fills them.

``behaviour_logprobs(trainer, row_ids, length)`` gives ``[B, T]`` per-token log-probs of banked
rows under the distribution each row was sampled from. The first call checks every row the
training plan will use: a row without them (a bank written before the column existed, or by a
backend that does not return them) stops training with a message naming the column and
``masters bank behaviour-logprobs CONFIG``, which fills them (:func:`fill_behaviour_logprobs`).

Filling teacher-forces each row through the model that generated it (the masked teacher at the
row's level, or the student) and applies the generation's own processing to the logits: the
repetition penalty over the prompt and the response so far, the vocabulary limit, the temperature,
top-k and top-p, renormalised. That is the distribution the hf backend samples from, so the value
equals what generation records, up to float error (teacher-forced logits of a batch vs
incremental decoding with a KV cache).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from masters.errors import MastersError

if TYPE_CHECKING:
    import torch

    from masters.specs import RunSpec

COLUMN = "behaviour_logprobs"
FILL_COMMAND = "masters bank behaviour-logprobs CONFIG"


def behaviour_logprobs(trainer: Any, row_ids: Sequence[str], length: int) -> torch.Tensor:
    """``[len(row_ids), length]`` behaviour log-probs (0 past each row's end), from the run's bank."""
    import torch

    values = getattr(trainer, "_behaviour_values", None)
    if values is None:
        values = _load(trainer)
        trainer._behaviour_values = values
    out = torch.zeros(len(row_ids), length)
    for i, rid in enumerate(row_ids):
        v = values[rid]
        n = min(len(v), length)
        out[i, :n] = torch.tensor(v[:n])
    return out


def _load(trainer: Any) -> dict[str, list[float]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    from masters.bank.store import ResponseBank
    from masters.engine.generation import bank_dir

    wanted = sorted({r["row_id"] for step in trainer.plan for q in step.question_ids
                     for r in trainer._group_rows(step, q)})
    bank = ResponseBank(bank_dir(trainer.spec))
    table = bank.table(["row_id", COLUMN])
    table = table.filter(pc.is_in(table.column("row_id"), value_set=pa.array(wanted, pa.string())))
    values = dict(zip(table.column("row_id").to_pylist(), table.column(COLUMN).to_pylist()))
    missing = [rid for rid in wanted if values.get(rid) is None]
    if missing:
        raise MastersError(
            f"{len(missing)} of the {len(wanted)} bank rows this run trains on have no {COLUMN} "
            f"(e.g. {missing[0]}), which negative_advantages: topr needs as mu",
            where=f"{bank.directory} column {COLUMN}",
            fix=f"run `{FILL_COMMAND}` (teacher-forces each row through its generator and stores them), or regenerate "
            "the bank with a backend that records them (hf)")
    return values  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# filling the column by teacher forcing
# ---------------------------------------------------------------------------------------------


def processed_logprobs(logits: torch.Tensor, context_ids: Sequence[Sequence[int]], response: Sequence[int], *,
                       temperature: float, top_k: int, top_p: float, repetition_penalty: float,
                       vocab_limit: int, banned: Sequence[int] = ()) -> list[float]:
    """Behaviour log-probs of one response from its teacher-forced logits ``[T, V]``.

    ``context_ids[t]`` are the ids the repetition penalty sees at step ``t`` (prompt + response so far).
    """
    import torch

    from masters.engine.sampling import filter_top_k_top_p

    out = []
    for t, token in enumerate(response):
        z = logits[t].float().clone()
        if repetition_penalty != 1.0:  # transformers' RepetitionPenaltyLogitsProcessor
            seen = torch.tensor(sorted(set(int(i) for i in context_ids[t])), dtype=torch.long)
            seen = seen[seen < z.shape[-1]]
            score = z[seen]
            z[seen] = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
        z[vocab_limit:] = float("-inf")
        if banned:
            z[list(banned)] = float("-inf")
        if temperature <= 0:
            out.append(0.0)  # greedy: a point mass
            continue
        z = filter_top_k_top_p((z / temperature).unsqueeze(0), top_k, top_p)[0]
        out.append(float(torch.log_softmax(z, dim=-1)[int(token)]))
    return out


def fill_behaviour_logprobs(spec: RunSpec, *, batch_size: int = 16, progress: bool = True,
                            splits: Mapping[str, list[Any]] | None = None) -> dict[str, int]:
    """Fill the column for every bank row that lacks it; return counts per generator.

    Rows are rewritten shard by shard (atomically, same row ids, seeds and tokens); rows that have
    the column keep it.
    """
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from masters.adapters.resolve import resolve_adapter
    from masters.bank.schema import BANK_SCHEMA, STUDENT
    from masters.bank.store import ResponseBank, _atomic_write_table, _read_parquet
    from masters.data import load_splits
    from masters.engine.generation import bank_dir, check_tokenizers
    from masters.engine.sampling import banned_response_ids
    from masters.masking.runtime import MaskedTeacher
    from masters.ratios import Ratio
    from masters.schedules.chain import TeacherChain

    bank = ResponseBank(bank_dir(spec))
    bank.manifest()
    splits = splits or load_splits(spec.task)
    samples = {s.id: s for s in splits["train"]}
    vocab = check_tokenizers(spec)
    shards = {p: _read_parquet(p, BANK_SCHEMA).to_pylist() for p in bank.shard_paths()}
    todo: dict[tuple[str, str, int | None], list[dict[str, Any]]] = {}
    for rows in shards.values():
        for r in rows:
            if r[COLUMN] is None:
                todo.setdefault((r["source"], r["teacher"], r["level_bp"]), []).append(r)
    filled: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    chain = TeacherChain.from_run_spec(spec)
    teachers = {t.path: i for i, t in enumerate(spec.teachers)}
    by_model: dict[tuple[str, str], list[tuple[int | None, list[dict[str, Any]]]]] = {}
    for (source, teacher, bp), rows in todo.items():
        by_model.setdefault((source, teacher), []).append((bp, rows))
    for (source, teacher), levels in by_model.items():
        model_spec = spec.student if source == STUDENT else spec.teachers[teachers[teacher]]
        adapter = resolve_adapter(model_spec)
        adapter.model.eval()
        masked = None
        if source != STUDENT:
            t_index = teachers[teacher]
            bank_levels = sorted({Ratio(bp) for bp, _ in levels} | set(chain.levels(t_index)))
            masked = MaskedTeacher.from_model(adapter.model, spec.masker, bank_levels,
                                              maskable=adapter.maskable_parameters())
        banned = banned_response_ids(adapter)
        try:
            for bp, rows in levels:
                if masked is not None:
                    masked.set_level(Ratio(bp))
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start:start + batch_size]
                    _fill_chunk(adapter, chunk, samples, spec, vocab, banned, filled)
                label = "student" if source == STUDENT else f"{teacher} @ {bp} bp"
                counts[label] = counts.get(label, 0) + len(rows)
        finally:
            if masked is not None:
                masked.close()
    for path, rows in shards.items():
        if not any(r[COLUMN] is None and r["row_id"] in filled for r in rows):
            continue
        for r in rows:
            if r[COLUMN] is None:
                r[COLUMN] = filled.get(r["row_id"])
        table = pa.Table.from_pylist(rows, schema=BANK_SCHEMA)
        _atomic_write_table(table, path.parent, "part")  # the new shard first, then the old one goes
        path.unlink()
    bank._keys = None
    del json, pq, torch
    return counts


def _fill_chunk(adapter: Any, chunk: Sequence[Mapping[str, Any]], samples: Mapping[str, Any], spec: RunSpec,
                vocab: int, banned: Sequence[int], filled: dict[str, list[float]]) -> None:
    import torch

    gen = spec.generation
    batch_samples = [samples[r["question_id"]] for r in chunk]
    responses = [list(r["token_ids"]) for r in chunk]
    with torch.no_grad():
        forced = adapter.teacher_force(batch_samples, responses)
        encoded = adapter.encode(batch_samples) if gen.repetition_penalty != 1.0 else None
    for i, r in enumerate(chunk):
        ids = responses[i]
        prompt: list[int] = []
        if encoded is not None:
            row_ids = encoded.inputs["input_ids"][i].tolist()
            attention = encoded.inputs.get("attention_mask")
            keep = attention[i].tolist() if attention is not None else [1] * len(row_ids)
            prompt = [t for t, k in zip(row_ids, keep) if k]
        contexts = [prompt + ids[:t] for t in range(len(ids))]
        filled[r["row_id"]] = processed_logprobs(
            forced.logits[i], contexts, ids, temperature=gen.temperature, top_k=gen.top_k, top_p=gen.top_p,
            repetition_penalty=gen.repetition_penalty, vocab_limit=vocab, banned=banned)
