"""The generation stage: masked-teacher and student responses into the bank (method.md section 4).

For each teacher of the chain and each of its levels (``scheduled``: only where training will use
a question; ``all``: every level), ``n_teacher_responses`` per question; then
``n_student_responses`` per question from the student, once. Work is cut into fixed batches of
``generation.batch_size`` questions in a fixed order; a batch is written as one atomic shard, and
a rerun skips every batch already banked. Each row is sampled with its own seed (from the bank
seed, teacher, level, question and sample index) by the run's generation backend (``backend``;
the built-in ``hf`` uses :class:`PerRowGumbelSampler`), so a resumed bank equals an uninterrupted
one and adding questions or levels never changes existing rows.

Under ``accelerate launch`` every process runs the stage: the batches still missing are dealt out
round robin over all models and levels, each rank banks its own (shards named by their row ids),
and rank 0 alone holds the directory lock and writes ``bank.json``. Which rank generates a batch
never changes its rows, so the bank equals one process's (tests/engine/test_generation_distributed.py).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from masters.bank.schema import STUDENT, TEACHER, row_id
from masters.bank.store import ResponseBank
from masters.engine.faults import kill_point
from masters.engine.progress import progress_bar
from masters.engine.identity import derived_seed, provenance, stage_hash
from masters.engine.plan import required_levels, training_plan
from masters.interfaces import GenerationSession, SamplingSettings
from masters.ratios import Ratio

if TYPE_CHECKING:
    from masters.specs import RunSpec

SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed")


def bank_dir(spec: RunSpec) -> Path:
    """The run's bank: ``bank_dir`` when the spec shares one, else ``output_dir/bank``."""
    return Path(spec.bank_dir) if getattr(spec, "bank_dir", None) else Path(spec.output_dir) / "bank"


def generation_fields(spec: RunSpec) -> dict[str, Any]:
    """The spec fields the generation stage reads for its identity (decision 9).

    Counts of responses, levels and questions are *not* here: they are keys of the rows, so
    changing them extends the bank. The backend enters only when its rows differ from the ``hf``
    backend's (``row_identity()``), so backends with equal rows share one bank.
    """
    fields: dict[str, Any] = {
        "teachers": [{"path": t.path, "adapter": t.adapter} for t in spec.teachers],
        "student": {"path": spec.student.path, "adapter": spec.student.adapter},
        "masker": spec.masker,
        "generation": {k: getattr(spec.generation, k) for k in SAMPLING_FIELDS},
    }
    rows = spec.backend.row_identity()
    if rows is not None:
        fields["backend"] = rows
    return fields


def sampling_settings(spec: RunSpec) -> SamplingSettings:
    gen = spec.generation
    return SamplingSettings(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
                            repetition_penalty=gen.repetition_penalty, max_new_tokens=gen.max_new_tokens)


def tokenizer_fingerprint(adapter: Any) -> str:
    vocab = adapter.vocab()
    payload = json.dumps(sorted(vocab.items()), separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class GenerationReport:
    rows_written: int = 0
    rows_present: int = 0
    tokens: int = 0
    seconds: float = 0.0
    per_source: dict[str, int] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def generate_bank(spec: RunSpec, *, force: bool = False, progress: bool = True,
                  splits: dict[str, list[Any]] | None = None) -> GenerationReport:
    """Fill the run's bank with every row the spec asks for; return what was written.

    Under ``accelerate launch`` every process calls it: the batches still missing are dealt out
    round robin (batch ``j`` to rank ``j % processes``), each rank generates and banks its own as
    atomic shards, and the bank equals one process's row for row. Returns the launch's total."""
    from masters.engine.distributed import process_state
    from masters.engine.locks import run_outputs

    ranks = process_state()  # one process: a state of one
    with run_outputs(spec, "generate", bank=True):  # one writer per directory (decision 19): rank 0 locks
        return _generate_bank(spec, ranks, force=force, progress=progress, splits=splits)


@dataclass(frozen=True)
class _Batch:
    """One shard's worth of work: ``n`` responses to each of ``questions`` from one model at one level."""

    source: str
    teacher: str  # the teacher's path ("" for the student)
    t_index: int | None  # its place in the chain (None for the student)
    level: Ratio | None
    questions: tuple[str, ...]
    n: int

    def row_ids(self) -> list[str]:
        bp = None if self.level is None else self.level.bp
        return [row_id(self.source, self.teacher, bp, q, k) for q in self.questions for k in range(self.n)]

    @property
    def label(self) -> str:
        return "student" if self.source == STUDENT else f"{Path(self.teacher).name} @ {self.level}"


def _missing_batches(spec: RunSpec, need: dict[int, dict[Ratio, list[str]]], question_ids: Sequence[str],
                     banked: set[str]) -> list[_Batch]:
    """Every batch with a row not in ``banked``, in the bank's fixed order: the student, then each
    teacher of the chain level by level. Batches are cut from the full question lists (never from
    what is missing), so a row is always generated with the same neighbours."""
    gen = spec.generation
    groups: list[tuple[str, str, int | None, Ratio | None, Sequence[str], int]] = []
    if gen.n_student_responses:
        groups.append((STUDENT, "", None, None, question_ids, gen.n_student_responses))
    for t_index, teacher_spec in enumerate(spec.teachers):
        for level, qids in need.get(t_index, {}).items():
            groups.append((TEACHER, teacher_spec.path, t_index, level, qids, gen.n_teacher_responses))
    out = []
    for source, teacher, t_index, level, qids, n in groups:
        for i in range(0, len(qids), gen.batch_size):
            batch = _Batch(source, teacher, t_index, level, tuple(qids[i:i + gen.batch_size]), n)
            if any(r not in banked for r in batch.row_ids()):
                out.append(batch)
    return out


def _generate_bank(spec: RunSpec, ranks: Any, *, force: bool = False, progress: bool = True,
                   splits: dict[str, list[Any]] | None = None) -> GenerationReport:
    from masters.adapters.compat import check_compatible
    from masters.data import load_splits
    from masters.engine.distributed import meet, share, wait_for_main
    from masters.schedules.chain import TeacherChain

    splits = splits or load_splits(spec.task)
    train = splits["train"]
    by_id = {s.id: s for s in train}
    question_ids = [s.id for s in train]
    chain = TeacherChain.from_run_spec(spec)
    # The plan of the training that will use the bank: under `accelerate launch` its steps take
    # questions_per_step x gradient_accumulation_steps x the launched processes.
    plan = training_plan(spec, question_ids, chain=chain, world_size=ranks.num_processes)
    need = required_levels(spec, plan, question_ids, chain)
    report = GenerationReport()

    vocab_size = check_tokenizers(spec)  # before any compute: a mismatch found after hours of generation is useless
    backend = spec.backend.build()
    check_backend_rows(spec.backend, backend)  # a backend may share the hf bank only if it declares equal rows
    student = backend.open(spec.student, vocab_limit=vocab_size)
    fingerprint = tokenizer_fingerprint(student)
    student_tokenizer = _TokenizerOnly(student.tokenizer)
    identity = stage_hash("generate", generation_fields(spec))

    def open_bank() -> ResponseBank:
        bank = ResponseBank.open(
            bank_dir(spec), stage_hash=identity, tokenizer_fingerprint=fingerprint,
            metadata={"fields": json.loads(json.dumps(generation_fields(spec), default=_json_default)),
                      "backend": spec.backend.model_dump(mode="json"), "provenance": provenance()}, force=force,
        )
        record_backend(bank, spec.backend)
        return bank

    # Rank 0 creates or checks the bank (its refusal is every rank's); then every rank reads what is
    # banked before any rank writes, so all deal out the same missing batches.
    bank = wait_for_main(ranks, "generate/open", open_bank)
    bank = ResponseBank(bank_dir(spec)) if bank is None else bank
    banked = bank.keys()
    report.rows_present = len(banked)
    meet(ranks, "generate/read")
    todo = _missing_batches(spec, need, question_ids, banked)
    mine = [b for chunk in share(todo, ranks, 1) for b in chunk]
    started = time.perf_counter()
    failure: BaseException | None = None
    try:
        with progress_bar(progress and ranks.is_main_process) as bar:
            totals: dict[str, int] = {}
            for b in mine:
                totals[b.label] = totals.get(b.label, 0) + len(b.questions) * b.n
            tasks = {label: bar.add_task(f"generate {label}", total=t) for label, t in totals.items()} if bar else {}

            def advance(b: _Batch) -> None:
                if bar:
                    bar.advance(tasks[b.label], len(b.questions) * b.n)

            _fill(bank, student, [b for b in mine if b.source == STUDENT], by_id, spec, report, advance)
            student.close()
            del student
            gc.collect()
            for t_index, teacher_spec in enumerate(spec.teachers):
                batches = [b for b in mine if b.t_index == t_index]
                if not batches:
                    continue
                teacher = backend.open(teacher_spec, vocab_limit=vocab_size, masker=spec.masker,
                                       levels=chain.levels(t_index))
                try:
                    check_compatible(teacher, student_tokenizer, where=f"teachers.{t_index} ({teacher_spec.path})")
                    for level in dict.fromkeys(b.level for b in batches):
                        teacher.set_level(level)
                        _fill(bank, teacher, [b for b in batches if b.level == level], by_id, spec, report, advance)
                finally:
                    teacher.close()
                del teacher
                gc.collect()
    except Exception as exc:  # the other ranks learn of it instead of waiting (a signal just ends this one)
        failure = exc
    report.seconds = time.perf_counter() - started
    shares = meet(ranks, "generate/done", json.dumps(dataclasses.asdict(report)), error=failure)
    total = _total([GenerationReport(**json.loads(v)) for v in shares])
    total.per_source = {b.label: total.per_source[b.label] for b in todo if b.label in total.per_source}  # bank order
    return total


def _total(reports: Sequence[GenerationReport]) -> GenerationReport:
    """The launch's report: rows and tokens summed over the ranks, the slowest rank's time."""
    total = GenerationReport(rows_present=reports[0].rows_present)
    for r in reports:
        total.rows_written += r.rows_written
        total.tokens += r.tokens
        total.seconds = max(total.seconds, r.seconds)
        for label, n in r.per_source.items():
            total.per_source[label] = total.per_source.get(label, 0) + n
    return total


def check_tokenizers(spec: RunSpec) -> int:
    """Refuse teachers whose tokenizer differs from the student's; return the shared vocab length."""
    from masters.adapters.compat import check_compatible
    from masters.adapters.resolve import load_tokenizer

    student = _TokenizerOnly(load_tokenizer(spec.student.path, where="student"))
    shared = None
    for index, teacher in enumerate(spec.teachers):
        tok = _TokenizerOnly(load_tokenizer(teacher.path, where=f"teachers.{index}"))
        shared = check_compatible(tok, student, where=f"teachers.{index} ({teacher.path}) vs student ({spec.student.path})")
    return shared or 0


class _TokenizerOnly:
    """What ``check_compatible`` needs of a model: its tokenizer, without loading the weights."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._vocab = tokenizer.get_vocab()

    def vocab(self) -> dict[str, int]:
        return self._vocab


def _fill(bank: ResponseBank, session: GenerationSession, batches: Sequence[_Batch], by_id: dict[str, Any],
          spec: RunSpec, report: GenerationReport, advance: Any) -> None:
    gen = spec.generation
    settings = sampling_settings(spec)
    params = json.dumps({k: getattr(gen, k) for k in SAMPLING_FIELDS}, sort_keys=True)
    identity = bank.manifest()["stage_hash"]  # read once, not once per row
    eos = set(session.eos_token_ids)
    for batch in batches:
        source, teacher, n = batch.source, batch.teacher, batch.n
        bp = None if batch.level is None else batch.level.bp
        seeds = [derived_seed(gen.seed, source, teacher, bp, q, k) for q in batch.questions for k in range(n)]
        generated = session.generate([by_id[q] for q in batch.questions for _ in range(n)], seeds, settings)
        outputs = [g.token_ids for g in generated]
        behaviour = [g.behaviour_logprobs for g in generated]
        texts = session.decode(outputs)
        rows = []
        for i, (ids, text, rid) in enumerate(zip(outputs, texts, batch.row_ids())):
            q, k = batch.questions[i // n], i % n
            rows.append({
                "row_id": rid, "source": source, "teacher": teacher, "level_bp": bp,
                "question_id": q, "sample_index": k, "response_text": text, "token_ids": list(ids),
                "num_tokens": len(ids), "truncated": bool(len(ids) >= gen.max_new_tokens and (not ids or ids[-1] not in eos)),
                "empty": not text.strip(), "seed": seeds[i], "generation": params, "stage_hash": identity,
                "behaviour_logprobs": _behaviour(behaviour[i], ids),
            })
            report.tokens += len(ids)
        written = bank.append(rows)
        report.rows_written += written
        report.per_source[batch.label] = report.per_source.get(batch.label, 0) + written
        kill_point("generate", report.rows_written)
        advance(batch)


def check_backend_rows(backend_spec: Any, backend: Any) -> None:
    """Refuse a backend whose spec and capabilities disagree on whether its rows equal the hf
    backend's: the bank identity leaves out exactly the backends with equal rows, so such a
    backend would mix its rows into a bank of other rows (or split one that could be shared)."""
    from masters.errors import MastersError

    equal = getattr(getattr(backend, "capabilities", None), "rows_equal_hf", False)
    identity = backend_spec.row_identity()
    if bool(equal) != (identity is None):
        raise MastersError(
            f"backend {backend_spec.name!r} declares rows_equal_hf={bool(equal)} but its row_identity() is "
            f"{identity!r}", where="backend",
            fix="row_identity() must return None exactly when the rows equal the hf backend's (capabilities."
            "rows_equal_hf); otherwise the bank would mix rows of different samplers")


def record_backend(bank: ResponseBank, backend_spec: Any) -> None:
    """Note in bank.json each backend that wrote to the bank (only ones with equal rows can share it)."""
    from masters.bank.store import MANIFEST, _atomic_write_json

    manifest = bank.manifest()
    entry = backend_spec.model_dump(mode="json")
    used = list(manifest.get("backends") or ([manifest["backend"]] if manifest.get("backend") else []))
    if entry not in used:
        manifest["backends"] = [*used, entry]
        _atomic_write_json(manifest, bank.directory / MANIFEST)


def _behaviour(values: Sequence[float] | None, ids: Sequence[int]) -> list[float] | None:
    """The row's behaviour log-probs, one per token, or None when the backend gave none."""
    if values is None:
        return None
    if len(values) != len(ids):
        raise ValueError(f"the backend gave {len(values)} behaviour log-probs for {len(ids)} tokens")
    return [float(v) for v in values]


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)
