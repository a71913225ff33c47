"""The training loop: one engine for every objective (method.md section 6).

At every optimizer step the plan (teacher chain + restore schedule) sets the teacher and its
mask level. The run's objective (a component: ``masters``, ``progressive_kd``, ``naive_kd``,
``sft`` or a plugin's) declares what it needs (:class:`masters.interfaces.ObjectiveNeeds`), and
the trainer computes exactly that for each micro-batch: banked question groups (``n_teacher``
responses of the current level plus ``n_student`` student responses) or the data's reference
answers, teacher-forced through the student and, when asked, the masked teacher; the per-token
JSD (the teacher divergence), the offline accuracy rewards, the distillation reward from the same
JSD (decision 7), reference log-probs and group index. The objective turns them into the loss.
The trainer never branches on an objective's name.

accelerate drives devices, mixed precision and data parallelism: each process takes its share of
every optimizer step's questions, so N processes train on the same global batch as one.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from masters.engine.checkpoint import gathered_state_dict, latest_checkpoint, load_distributed, save_distributed
from masters.engine.faults import kill_point
from masters.engine.distributed import (barrier, engine_name, fit_to_model, in_lock_step, is_deepspeed, log_memory,
                                        release_memory, shards_parameters, whole_models)
from masters.engine.identity import derived_seed, provenance, stage_hash
from masters.engine.plan import PlannedStep, training_plan
from masters.engine.progress import progress_bar
from masters.errors import MastersError
from masters.files import append_line, atomic_directory, atomic_write, guarded_load
from masters.interfaces import ObjectiveNeeds, StepInputs

if TYPE_CHECKING:
    from masters.specs import RunSpec


REFERENCE_BATCH = 8  # rows per forward (and per lock-step round) of the reference pass
CACHE_BATCH = 8  # rows per teacher forward when filling the cache


@dataclass
class TrainResult:
    steps: int
    student_dir: Path
    metrics_path: Path
    seconds: float
    resumed_from: int = 0
    last: dict[str, Any] = field(default_factory=dict)


def training_fields(spec: RunSpec) -> dict[str, Any]:
    """The spec fields training reads (its stage identity); ``output_dir`` is where, not what."""
    return {
        "seed": spec.seed, "teachers": spec.teachers, "student": spec.student, "masker": spec.masker,
        "schedule": spec.schedule, "rewards": spec.rewards, "training": identity_of_training(spec),
        "data": spec.task.identity(), "generation": spec.generation,
    }


# Training identities predate objectives as components: the objective entered them as
# ``training.method`` beside ``beta`` and ``distill_loss_weight``. It still enters in that form
# (its name as ``method``, those two fields at their old defaults unless the objective has them),
# so finished training stages stay valid. Fields added after results were published stay out of
# the identity while at their default, so adding a knob does not invalidate every finished stage.
OLDER_OBJECTIVE_FIELDS: dict[str, Any] = {"beta": 0.1, "distill_loss_weight": 1.0}
LATER_FIELDS: dict[str, Any] = {"negative_advantages": "full", "advantage_shift": 0.0, "advantage_std": True}


def identity_of_training(spec: RunSpec) -> dict[str, Any]:
    objective = spec.objective.model_dump(mode="json")
    fields = {**spec.training.model_dump(mode="json"), **OLDER_OBJECTIVE_FIELDS,
              "method": objective.pop("name"), **objective}
    return {k: v for k, v in fields.items()
            if k not in NOT_IDENTITY and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


# Where results are reported, not what is trained: never part of the identity.
NOT_IDENTITY = frozenset({"report_to", "diagnostics_every"})


def objective_method(spec: RunSpec) -> str:
    """The objective's name as the plan identities record it."""
    return spec.objective.name


def training_dir(spec: RunSpec) -> Path:
    """``output_dir/train/<identity>``: checkpoints and metrics.jsonl of one training config."""
    return Path(spec.output_dir) / "train" / stage_hash("train", training_fields(spec))[:12]


def build_teacher_cache(spec: RunSpec, *, splits: dict[str, list[Any]] | None = None) -> Path:
    """Write the cached teacher signal without training (run it in its own process so the training
    process never holds the teacher); return the cache directory."""
    if spec.training.teacher_signal != "cached":
        raise MastersError("the config does not use the cached teacher signal", where="training.teacher_signal",
                           fix="set teacher_signal: cached")
    from masters.engine.locks import run_outputs

    with run_outputs(spec, "train --cache-only"):
        trainer = Trainer(spec, splits=splits)
        trainer._setup()
    return training_dir(spec) / "teacher_cache"


def train(spec: RunSpec, *, splits: dict[str, list[Any]] | None = None, progress: bool = True,
          accelerator: Any = None) -> TrainResult:
    """Train the student per ``spec``; resume from the last checkpoint of ``output_dir``."""
    from masters.engine.locks import run_outputs

    with run_outputs(spec, "train"):  # one writer per directory (decision 19); rank 0 takes it
        return Trainer(spec, splits=splits, accelerator=accelerator).run(progress=progress)


class Trainer:
    def __init__(self, spec: RunSpec, *, splits: dict[str, list[Any]] | None = None, accelerator: Any = None):
        from masters.engine.distributed import check_world_size, make_accelerator

        self.spec = spec
        self.t = spec.training
        self.needs: ObjectiveNeeds = spec.objective.requirements()
        self.objective = spec.objective.build()
        self.uses_teacher = self.needs.teacher != "none"
        self.out = Path(spec.output_dir)
        # gloo on CPU, the world-size guard, the process-group timeout and DeepSpeed's step shape:
        # masters.engine.distributed (an Accelerator passed in is checked the same way).
        if accelerator is None:
            accelerator = make_accelerator(self.t, **_tracker_kwargs(spec))
        else:
            check_world_size(accelerator)
        self.accelerator = accelerator
        self.identity = stage_hash("train", training_fields(spec))
        self._splits = splits
        self._teacher_index: int | None = None
        self.teacher: Any = None
        self.masked: Any = None

    # -- set-up -----------------------------------------------------------------------------------
    def _setup(self) -> None:
        from masters.adapters.resolve import resolve_adapter
        from masters.data import load_splits
        from masters.schedules.chain import TeacherChain

        spec = self.spec
        if self.uses_teacher:
            from masters.engine.generation import check_tokenizers

            self.vocab = check_tokenizers(spec)  # before any compute
        splits = self._splits or load_splits(spec.task)
        self.samples = {s.id: s for s in splits["train"]}
        self.chain = TeacherChain.from_run_spec(spec)
        world = self.accelerator.num_processes
        self.plan = training_plan(spec, [s.id for s in splits["train"]], world_size=world, chain=self.chain)
        # Every source of randomness is seeded from the spec: LoRA's initialisation here (the same on
        # every rank), dropout per rank below; data order comes from the plan. Checkpoints save and
        # restore the RNG states, so a resumed run equals an uninterrupted one.
        _seed_everything(derived_seed("student-init", spec.seed))
        with whole_models(self.accelerator):  # never partitioned at load (ZeRO-3's zero.Init)
            self.student = resolve_adapter(spec.student, device=self.accelerator.device)
        log_memory(self.accelerator, "student loaded", model=self.student.model)
        if not self.uses_teacher:
            self.vocab = len(self.student.vocab())
        model = self.student.model
        if self.t.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        if self.t.lora is not None:
            model = self._with_lora(model)
        self.index = self._bank_index() if self.needs.responses == "bank" else None
        # The reference pass runs on the initial student before it is wrapped or sharded, every rank
        # its share in lock step (a forward through DDP or FSDP on one rank alone would wait forever).
        self.reference = self._reference(model) if self.needs.wants("reference_logprobs") else None
        log_memory(self.accelerator, "reference pass", model=model)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.t.learning_rate, weight_decay=self.t.weight_decay)
        del params  # FSDP2 replaces the parameters with shards: nothing here may keep the whole ones alive
        fit_to_model(self.accelerator, model)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        release_memory()  # the unsharded tensors FSDP / ZeRO-3 replaced
        log_memory(self.accelerator, "prepared", model=self.model, optimizer=self.optimizer)
        self.student.model = model  # the plain model: config, parameters, saving
        self.student.forward_module = self.model  # the wrapped one: forward passes sync gradients
        _seed_everything(derived_seed("train", spec.seed, self.accelerator.process_index))  # dropout
        self.cache = self._teacher_cache() if self.uses_teacher and self.t.teacher_signal == "cached" else None
        from masters.rewards.combine import reward_keys

        self.reward_keys = reward_keys(spec.rewards)
        self.distill_reward = None
        for key, reward_spec in zip(self.reward_keys, spec.rewards):
            if type(reward_spec).signal == "distillation" and self.needs.wants("distillation_reward"):
                self.distill_reward = (key, reward_spec.build(vocab_size=self.vocab))

    def _with_lora(self, model: Any) -> Any:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise MastersError("training.lora needs peft", where="training.lora",
                               fix="pip install 'masters-distill[lora]'") from None
        lora = self.t.lora
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=list(lora.target_modules))
        return get_peft_model(model, config)

    def _bank_index(self) -> Any:
        from masters.bank.scoring import accuracy_rewards
        from masters.bank.store import ResponseBank
        from masters.engine.generation import bank_dir
        from masters.engine.groups import BankIndex

        bank = ResponseBank(bank_dir(self.spec))
        bank.manifest()
        accuracy = accuracy_rewards(bank, self.spec.rewards) if self.needs.wants("accuracy_rewards") else {}
        columns = ["row_id", "source", "teacher", "level_bp", "question_id", "sample_index", "token_ids"]
        return BankIndex(bank.table(columns).to_pylist(), accuracy)

    def _reference(self, model: Any) -> Any:
        from masters.engine.reference import ReferenceStore, compute_reference

        store = ReferenceStore(self.out / "reference" / stage_hash("reference", {"student": self.spec.student})[:8])
        rows = {r["row_id"]: r for step in self.plan for q in step.question_ids
                for r in self._group_rows(step, q)}
        if self.accelerator.is_main_process:
            store.clean_partial()  # a killed writer's temporary files; before anyone writes
        barrier(self.accelerator)
        done = store.values()  # every rank reads the same finished rows before any rank writes
        pending = [r for r in rows.values() if r["row_id"] not in done]
        in_lock_step(self.accelerator, pending, REFERENCE_BATCH,
                     lambda chunk: compute_reference(store, self.student, chunk, self.samples,
                                                     batch_size=REFERENCE_BATCH, clean=False,
                                                     autocast=self.accelerator.autocast))
        store.reload()  # what the other ranks wrote
        return store

    def _step_rows(self, step: PlannedStep, questions: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        """(question, row) pairs a micro-batch trains on: banked groups, or the reference answers."""
        if self.needs.responses == "bank":
            return [(q, r) for q in questions for r in self._group_rows(step, q)]
        answers = self.student.response_ids([self.samples[q].answer or "" for q in questions])
        return [(q, {"row_id": f"reference/{q}", "token_ids": ids}) for q, ids in zip(questions, answers)]

    def _teacher_cache(self) -> Any:
        """Precompute the top-k teacher log-probs of every (row, level) the plan trains on: every rank
        holds the (whole) teacher and fills its share.

        Chunks of ``CACHE_BATCH`` rows are cut per (teacher, level) from every row the plan trains on
        (never from what is missing), so a row is always forced with the same neighbours; the chunks
        still missing are dealt out round robin over all levels (chunk ``j`` to rank ``j %
        processes``). A chunk is one atomic file, so a killed rank loses at most the chunk it was
        forcing, and the cache equals one process's whatever the number of processes or restarts."""
        from masters.engine.distributed import meet, share
        from masters.engine.teacher_cache import TeacherCache, cache_key, check_fits, fill_cache

        cache = TeacherCache(training_dir(self.spec) / "teacher_cache")
        work: dict[tuple[int, Any], dict[str, tuple[str, Mapping[str, Any], Any]]] = {}
        for step in self.plan:
            for q, row in self._step_rows(step, step.question_ids):
                key = cache_key(row["row_id"], step.teacher, step.level.bp)
                work.setdefault((step.teacher, step.level), {})[key] = (key, row, self.samples[q])
        if self.accelerator.is_main_process:
            cache.clean_partial()
        barrier(self.accelerator)
        done = cache.entries()  # the same on every rank: nobody writes before this barrier is passed
        chunks = [(teacher, level, chunk) for (teacher, level), items in work.items()
                  for chunk in _chunks(list(items.values()), CACHE_BATCH) if any(w[0] not in done for w in chunk)]
        check_fits(cache.directory, sum(len(r["token_ids"]) for *_, chunk in chunks for k, r, _ in chunk
                                        if k not in done), self.t.cache_top_k)
        barrier(self.accelerator)  # every rank has read the cache before any rank writes to it
        failure: BaseException | None = None
        written = 0
        try:
            for teacher, level, chunk in [c for mine in share(chunks, self.accelerator, 1) for c in mine]:
                self._set_teacher(PlannedStep(-1, teacher, 0, level, ()))
                written += fill_cache(cache, self.teacher, self.vocab, chunk, top_k=self.t.cache_top_k,
                                      batch_size=CACHE_BATCH, clean=False, written_before=written)
        except Exception as exc:  # the other ranks learn of it instead of waiting (a signal just ends this one)
            failure = exc
        # Shares differ in length (uneven chunks, a rank may load a teacher the others do not):
        # wait without the process group's timeout.
        meet(self.accelerator, "teacher-cache", error=failure)
        self._release_teacher()  # training itself never holds the teacher
        cache.reload()  # what the other ranks wrote
        return cache

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, *, progress: bool = True) -> TrainResult:
        started = time.perf_counter()
        self._setup()
        # Checkpoints and metrics live under the training identity: another config trains afresh
        # beside them instead of resuming from (or overwriting) what belongs to this one.
        train_dir = training_dir(self.spec)
        ckpt_dir = train_dir / "checkpoints"
        start = 0
        last = latest_checkpoint(ckpt_dir)
        barrier(self.accelerator)  # every rank has looked before any rank writes: they resume together
        if last is not None:
            with guarded_load(last, "training checkpoint", fix="delete this checkpoint directory to resume from the "
                              "one before (or the whole checkpoints directory to start over)"):
                if json.loads((last / "state.json").read_text()).get("identity") != self.identity:
                    raise MastersError("checkpoint of another training config", where=str(last),
                                       fix="delete this checkpoint directory to start over")
                state = load_distributed(self.accelerator, last, self.model, self.optimizer)
            start = state["step"]
        metrics_path = train_dir / "metrics.jsonl"
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_metrics(metrics_path, start)
        total = len(self.plan)
        last_metrics: dict[str, Any] = {}
        self._start_trackers(start)
        try:
            bar = progress_bar(progress and self.accelerator.is_main_process)
            with bar as live:
                task = live.add_task("train", total=total, completed=start) if live else None
                for step in self.plan[start:]:
                    last_metrics = self._optimizer_step(step)
                    log_memory(self.accelerator, f"step {step.step + 1}", model=self.model, optimizer=self.optimizer)
                    if self.accelerator.is_main_process:
                        append_line(metrics_path, json.dumps(last_metrics))
                    self._log_trackers(last_metrics)
                    done = step.step + 1
                    if done % self.t.checkpoint_every == 0 or done == total:
                        self._checkpoint(ckpt_dir, done)
                        release_memory()  # the gathered state dicts
                        log_memory(self.accelerator, f"checkpoint {done}", model=self.model, optimizer=self.optimizer)
                    kill_point("train", done)
                    if live:
                        live.update(task, advance=1, description=f"train (level {step.level}, "
                                                                 f"loss {last_metrics['loss/total']:.3f})")
        finally:
            self._end_trackers()  # flushed and closed, however training ends
        self._check_replicas_in_sync()
        student_dir = self.out / "student"
        if shards_parameters(self.accelerator):
            # FSDP and ZeRO-3: training is over (the last checkpoint holds the optimizer state);
            # drop Adam's moments so the main process has room for the gathered student (ZeRO-3's
            # optimizer presents its inner optimizer's state as its own)
            self.optimizer.state.clear()
            release_memory()
        self._save_student(student_dir)  # every rank: a sharded student is gathered first
        log_memory(self.accelerator, "student saved", model=self.model, optimizer=self.optimizer)
        barrier(self.accelerator)
        self._release_teacher()
        return TrainResult(total, student_dir, metrics_path, time.perf_counter() - started, start, last_metrics)

    # -- trackers ---------------------------------------------------------------------------------
    def _start_trackers(self, start: int) -> None:
        """accelerate's trackers (training.report_to), started on the main process. On a resume they
        continue from the checkpoint's step: TensorBoard drops the events a killed run wrote after it
        (``purge_step``), MLflow continues the same run (its id is kept beside the checkpoints)."""
        if not self.t.report_to:
            return
        directory = training_dir(self.spec) / "trackers"
        init: dict[str, dict[str, Any]] = {}
        if "tensorboard" in self.t.report_to:
            init["tensorboard"] = {"purge_step": start} if start else {}
        if "mlflow" in self.t.report_to:
            # Local and offline: a file store beside the checkpoints unless the user names a server.
            os.environ.setdefault("MLFLOW_TRACKING_URI", (directory / "mlruns").resolve().as_uri())
            if os.environ["MLFLOW_TRACKING_URI"].startswith("file:"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 wants it said
            run_id_file = directory / "mlflow_run_id"
            init["mlflow"] = {"run_id": run_id_file.read_text().strip()} if start and run_id_file.exists() else {}
        config = {"train_hash": self.identity, "objective": self.spec.objective.name,
                  "engine": engine_name(self.accelerator), "processes": self.accelerator.num_processes,
                  **{k: v for k, v in self.t.model_dump(mode="json").items() if isinstance(v, (int, float, str, bool))}}
        self.accelerator.init_trackers(f"masters-{self.identity[:12]}", config=config, init_kwargs=init)
        if "mlflow" in self.t.report_to and self.accelerator.is_main_process:
            import mlflow

            run = mlflow.active_run()
            if run is not None:
                directory.mkdir(parents=True, exist_ok=True)
                atomic_write(directory / "mlflow_run_id", run.info.run_id + "\n")

    def _end_trackers(self) -> None:
        # Not accelerator.end_training(): that also destroys the process group, still needed here.
        for tracker in list(getattr(self.accelerator, "trackers", []) or []):
            tracker.finish()
        if self.t.report_to:
            self.accelerator.trackers = []

    def _log_trackers(self, metrics: dict[str, Any]) -> None:
        """The numeric metrics of metrics.jsonl, at the optimizer step (accelerate logs on the main process)."""
        if not self.t.report_to:
            return
        values = {k: float(v) for k, v in metrics.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.accelerator.log(values, step=int(metrics["step"]))

    def _optimizer_step(self, step: PlannedStep) -> dict[str, Any]:
        """One optimizer step over the step's questions, split across ranks.

        Every rank runs exactly ``gradient_accumulation_steps`` forward/backward passes (a rank with
        fewer questions runs zero-weighted passes: FSDP and ZeRO-3 gather parameters in every
        forward, DDP reduces gradients in every last backward), and each micro-batch is weighted by
        its questions over the step's questions, so N ranks train exactly as one process on the same
        global batch, however unevenly the questions split.
        """
        began = time.perf_counter()
        if self.uses_teacher and self.cache is None:
            self._set_teacher(step)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        accumulation = self.t.gradient_accumulation_steps
        mine = list(step.question_ids[rank::world])
        size = self.t.questions_per_step
        micro = [mine[i:i + size] for i in range(0, len(mine), size)]
        micro += [[] for _ in range(accumulation - len(micro))]
        total_questions = len(step.question_ids)
        sums: dict[str, float] = {}
        real = sum(1 for m in micro if m)
        grad_norm = None
        for questions in micro:
            # accelerate divides each loss by the accumulation steps and the engine averages
            # gradients over ranks: undo both, so a question weighs 1 / (the step's questions).
            weight = len(questions) * world * accumulation / total_questions
            with self.accelerator.accumulate(self.model):
                if questions:
                    terms, metrics = self._micro_batch(step, questions)
                else:  # the same passes as the other ranks, contributing nothing
                    terms, metrics = self._micro_batch(step, step.question_ids[:1])
                    metrics = {}
                self.accelerator.backward(terms.total * weight)
                log_memory(self.accelerator, f"backward {step.step + 1}", model=self.model, optimizer=self.optimizer)
                if self.accelerator.sync_gradients:
                    if self.t.max_grad_norm is not None or is_deepspeed(self.accelerator):
                        # DeepSpeed clips inside its step (configured from training.max_grad_norm)
                        # and only reports the norm here.
                        norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.t.max_grad_norm or 0.0)
                        grad_norm = None if norm is None or self.t.max_grad_norm is None else float(norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v / real
        return {"step": step.step, "teacher": step.teacher, "level": float(step.level), "stage": step.stage,
                "lr": self.t.learning_rate, "grad_norm": grad_norm, **sums,
                "step_seconds": time.perf_counter() - began}

    def _group_rows(self, step: PlannedStep, question_id: str) -> list[Mapping[str, Any]]:
        return self.index.draw_group(
            question_id, self.spec.teachers[step.teacher].path, step.level.bp, self.t.n_teacher, self.t.n_student,
            seed=self.spec.seed, stage=step.stage)

    def _micro_batch(self, step: PlannedStep, questions: Sequence[str]) -> tuple[Any, dict[str, float]]:
        from masters.rewards.jsd import jsd_loss

        rows = self._step_rows(step, questions)
        samples = [self.samples[q] for q, _ in rows]
        responses = [list(r["token_ids"]) for _, r in rows]
        row_ids = [r["row_id"] for _, r in rows]
        groups = torch.tensor([questions.index(q) for q, _ in rows])
        device = self.accelerator.device
        needs = self.needs
        teacher_logits = token_jsd = None
        with self.accelerator.autocast():
            forced = self.student.teacher_force(samples, responses, vocab_limit=self.vocab)
            mask = forced.mask
            if needs.wants("teacher_divergence") or needs.wants("distillation_reward"):
                if self.cache is not None:
                    from masters.engine.teacher_cache import bucket_jsd, cache_key

                    keys = [cache_key(rid, step.teacher, step.level.bp) for rid in row_ids]
                    top_ids, teacher_logits = self.cache.tensors(keys, mask.shape[1], device)
                    token_jsd = bucket_jsd(top_ids, teacher_logits, forced.logits, mask, vocab_size=self.vocab)
                else:
                    with torch.no_grad():
                        teacher_logits = self.teacher.teacher_force(samples, responses,
                                                                    vocab_limit=self.vocab).logits.to(device)
                    _, token_jsd = jsd_loss(teacher_logits, forced.logits, mask, vocab_size=self.vocab,
                                            reduction=self.t.token_averaging)
        if token_jsd is not None and step.step == self.plan[0].step:
            _check_teacher_signal(teacher_logits, token_jsd, mask)
        inputs = StepInputs(student_logprobs=forced.logprobs, mask=mask, reduction=self.t.token_averaging,
                            step=step.step)
        if needs.wants("teacher_divergence"):
            inputs.teacher_divergence = token_jsd
        if needs.wants("group_index"):
            inputs.group_index = groups.to(device)
        if needs.wants("accuracy_rewards") or needs.wants("distillation_reward"):
            inputs.rewards, inputs.reward_weights = self._rewards(row_ids, groups.to(device), mask,
                                                                  teacher_logits, forced.logits, token_jsd)
        if needs.wants("reference_logprobs") and self.reference is not None:
            inputs.reference_logprobs = self.reference.tensor(row_ids, mask.shape[1]).to(device)
        if needs.wants("behaviour_logprobs"):  # mu of the bank's rows (TOPR): masters.engine.behaviour
            from masters.engine.behaviour import behaviour_logprobs

            inputs.behaviour_logprobs = behaviour_logprobs(self, row_ids, mask.shape[1]).to(device)
        out = self.objective.loss(inputs)
        _check_finite(out.total, step, questions)
        metrics = dict(out.metrics)
        diagnostics = __import__("masters.engine.diagnostics", fromlist=["for_step"])
        metrics.update(diagnostics.for_step(self, inputs, responses))
        every = self.t.diagnostics_every
        if every and step.step % every == 0:
            metrics.update(diagnostics.costly(self, out, forced.logits, samples, responses, mask))
        metrics["tokens"] = float(mask.sum())
        return _Zero(out.total), metrics

    def _rewards(self, row_ids: Sequence[str], groups: torch.Tensor, mask: torch.Tensor, teacher_logits: Any,
                 student_logits: torch.Tensor, token_jsd: Any) -> tuple[dict[str, Any], dict[str, float]]:
        """The declared rewards of each row: banked accuracy rewards, the in-step distillation reward."""
        device = self.accelerator.device
        raw: dict[str, Any] = {}
        weights: dict[str, float] = {}
        for key, reward_spec in zip(self.reward_keys, self.spec.rewards):
            if type(reward_spec).signal == "accuracy" and self.needs.wants("accuracy_rewards"):
                raw[key] = torch.tensor([self.index.accuracy[key][rid] for rid in row_ids], device=device)
                weights[key] = reward_spec.weight
        if self.distill_reward is not None:
            key, reward = self.distill_reward
            if hasattr(reward, "from_token_divergence") and getattr(reward, "uses_loss_divergence", True):
                # reuse the loss's JSD: no second pass over the vocabulary
                raw[key] = reward.from_token_divergence(token_jsd.detach(), mask, groups)
            elif self.cache is None:
                raw[key] = reward(teacher_logits.detach(), student_logits.detach(), mask, groups)
            else:
                raise MastersError(f"reward {key!r} needs full teacher logits, which the cached teacher "
                                   "signal does not keep", where="training.teacher_signal",
                                   fix="use teacher_signal: online, or give the reward from_token_divergence()")
            weights[key] = next(s.weight for k, s in zip(self.reward_keys, self.spec.rewards) if k == key)
        return raw, weights

    def _check_replicas_in_sync(self) -> None:
        """Data parallelism must leave every rank with the same weights; a silent drift is a bug."""
        if self.accelerator.num_processes == 1 or shards_parameters(self.accelerator):
            return  # FSDP and ZeRO-3 hold one shard per rank: there are no replicas to compare
        plain = list(self.accelerator.unwrap_model(self.model).parameters())
        if not plain or any(p.numel() == 0 for p in plain):
            raise MastersError("the student's parameters are empty on this rank, so its replicas cannot be compared",
                               where=f"data parallel training ({engine_name(self.accelerator)})",
                               fix="report this as a bug with the run's config and accelerate settings")
        params = [p.detach().double().sum() for p in plain]
        checksum = torch.stack(params).reshape(1, -1)
        every = self.accelerator.gather(checksum)
        if not torch.allclose(every, every[:1].expand_as(every), rtol=0, atol=1e-9):
            raise MastersError("the ranks' weights diverged during training", where="data parallel training",
                               fix="report this as a bug with the run's config and accelerate settings")

    # -- teacher ----------------------------------------------------------------------------------
    def _set_teacher(self, step: PlannedStep) -> None:
        from masters.adapters.compat import check_compatible
        from masters.adapters.resolve import resolve_adapter
        from masters.masking.runtime import MaskedTeacher

        if self._teacher_index != step.teacher:
            self._release_teacher()
            teacher_spec = self.spec.teachers[step.teacher]
            # Mask before any wrapping; the teacher is for inference only (never prepared for training).
            # Whole on every rank and never prepared: loaded outside ZeRO-3's zero.Init, masked and
            # restored in place like in one process.
            with whole_models(self.accelerator):
                self.teacher = resolve_adapter(teacher_spec, device=self.accelerator.device)
            self.teacher.model.eval().requires_grad_(False)
            _refuse_sharded_teacher(self.teacher.model, f"teachers.{step.teacher} ({teacher_spec.path})")
            check_compatible(self.teacher, self.student, where=f"teachers.{step.teacher} ({teacher_spec.path})")
            self.masked = MaskedTeacher.from_model(self.teacher.model, self.spec.masker,
                                                   self.chain.levels(step.teacher),
                                                   maskable=self.teacher.maskable_parameters())
            self._teacher_index = step.teacher
        if self.masked.level != step.level:
            self.masked.set_level(step.level)

    def _release_teacher(self) -> None:
        if self.masked is not None:
            self.masked.close()
        self.teacher = self.masked = None
        self._teacher_index = None
        gc.collect()

    # -- outputs ----------------------------------------------------------------------------------
    def _checkpoint(self, directory: Path, step: int) -> None:
        save_distributed(self.accelerator, directory, step, self.model, self.optimizer,
                         {"identity": self.identity, "total_steps": len(self.plan),
                          "engine": engine_name(self.accelerator)})

    def _save_student(self, directory: Path) -> None:
        """Every rank takes part (a sharded student is gathered); the main process writes."""
        if shards_parameters(self.accelerator):
            # FSDP and ZeRO-3: no rank holds the weights; gather the full state dict and load it
            # into a fresh, whole copy of the student on the main process.
            state = gathered_state_dict(self.accelerator, self.model)
            if not self.accelerator.is_main_process:
                return
            model = self._whole_student(state)
            del state
            release_memory()
        else:
            if not self.accelerator.is_main_process:
                return
            model = self.accelerator.unwrap_model(self.model)
        if self.t.lora is not None:
            model = model.merge_and_unload()  # plain transformers weights, loadable without peft
        self.student.model = model
        was = model.training
        model.eval()
        # Atomic (decision 18): a failed save (a full disk) leaves the previous student loadable.
        with atomic_directory(directory) as tmp:
            self.student.save(tmp)
            self._write_run_record(tmp)
        model.train(was)

    def _whole_student(self, state: dict[str, torch.Tensor]) -> Any:
        """A fresh copy of the student on the CPU with a gathered state dict loaded (full shapes checked)."""
        from masters.adapters.resolve import resolve_adapter

        where = f"saving the student ({engine_name(self.accelerator)})"
        empty = [k for k, v in state.items() if v.numel() == 0]
        if empty or not state:
            raise MastersError(f"{len(empty)} gathered tensors are empty, e.g. {empty[0] if empty else '(all)'}",
                               where=where, fix="under ZeRO-3 set zero3_save_16bit_model: true in the accelerate config")
        with whole_models(self.accelerator):
            fresh = resolve_adapter(self.spec.student, device="cpu")
        model = self._with_lora(fresh.model) if self.t.lora is not None else fresh.model
        # assign: the gathered tensors become the copy's (no second whole copy on the main process);
        # cast first where the gathered dtype differs (ZeRO-3's 16-bit gather), re-tie after.
        own = model.state_dict()
        state = {k: v.to(own[k].dtype) if k in own and v.dtype != own[k].dtype else v for k, v in state.items()}
        del own
        result = model.load_state_dict(state, strict=False, assign=True)
        if hasattr(model, "tie_weights"):
            model.tie_weights()
        if result.missing_keys or result.unexpected_keys:
            key = (result.missing_keys or result.unexpected_keys)[0]
            raise MastersError(f"the gathered state dict does not match the student ({len(result.missing_keys)} "
                               f"missing, {len(result.unexpected_keys)} unexpected, e.g. {key})", where=where,
                               fix="report this as a bug with the run's config and accelerate settings")
        fresh.model = model
        self.student = fresh
        return model

    def _write_run_record(self, directory: Path) -> None:
        (directory / "masters_run.json").write_text(json.dumps(
            {"train_hash": self.identity, "method": self.spec.objective.name, "steps": len(self.plan),
             "components": {"masker": self.spec.masker.name, "schedule": self.spec.schedule.name,
                            "rewards": [r.name for r in self.spec.rewards], "objective": self.spec.objective.name,
                            "task": self.spec.task.name, "backend": self.spec.backend.name,
                            "adapters": self._adapter_names()},
             "provenance": provenance()}, indent=2) + "\n")

    def _adapter_names(self) -> dict[str, Any]:
        """The adapter of the student and, where the objective used one, of each teacher (from config.json)."""
        from masters.adapters.resolve import adapter_spec_for

        names: dict[str, Any] = {"student": getattr(getattr(self.student, "spec", None), "name", None)}
        if self.uses_teacher:
            names["teachers"] = [adapter_spec_for(t).name for t in self.spec.teachers]
        return names

    @staticmethod
    def _truncate_metrics(path: Path, start: int) -> None:
        """Drop lines of steps that will be trained again after a resume: no duplicates."""
        if not path.exists():
            return
        lines = []
        with guarded_load(path, "metrics file", fix="delete it: the metrics of the steps still to run are rewritten"):
            text = path.read_text(encoding="utf-8")
        for ln in text.splitlines():
            try:  # a kill mid-append leaves a partial last line: it is dropped with the steps after start
                record = json.loads(ln)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] < start:
                lines.append(ln)
        atomic_write(path, "".join(ln + "\n" for ln in lines))  # a kill here leaves the old file, never an empty one


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    torch.manual_seed(seed)


def _tracker_kwargs(spec: RunSpec) -> dict[str, Any]:
    """``log_with``/``project_dir`` for the Accelerator when ``training.report_to`` names trackers."""
    trackers = list(getattr(spec.training, "report_to", None) or [])
    if not trackers:
        return {}
    return {"log_with": trackers, "project_dir": str(training_dir(spec) / "trackers")}


def _refuse_sharded_teacher(model: Any, where: str) -> None:
    """Masking edits the teacher's tensors in place and restores them exactly; on a sharded teacher
    (FSDP DTensors, ZeRO-3 partitions) it would edit stale or empty tensors without a word."""
    for name, p in model.named_parameters():
        if hasattr(p, "ds_id") or type(p).__name__ == "DTensor" or type(p.data).__name__ == "DTensor":
            raise MastersError(f"the teacher is sharded ({name} is a partition), and masking needs it whole",
                               where=where, fix="hold the teacher whole on every rank, or for teachers too big "
                                                "for that use training.teacher_signal: cached (the cache is "
                                                "built once, and training never loads the teacher)")


class _Zero:
    """A loss with only a total (what the objective returned, or an idle rank's zero)."""

    def __init__(self, total: torch.Tensor):
        self.total = total


def _check_finite(loss: torch.Tensor, step: PlannedStep, questions: Sequence[str]) -> None:
    if not torch.isfinite(loss.detach()).all():
        raise MastersError(
            f"the loss is {float(loss.detach())} at optimizer step {step.step} "
            f"(teacher {step.teacher}, level {step.level}; questions {', '.join(questions)})",
            where="training", fix="lower training.learning_rate, enable max_grad_norm, or check these bank rows")


def _check_teacher_signal(teacher_logits: torch.Tensor, token_jsd: torch.Tensor, mask: torch.Tensor) -> None:
    """Fail fast when the teacher cannot shape the loss: the run would silently train on nothing."""
    real = teacher_logits[mask.to(teacher_logits.device)]
    problem = None
    if not torch.isfinite(real).all():
        problem = "the teacher's logits contain NaN or inf"
    elif real.numel() and bool((real == real.reshape(-1)[0]).all()):
        problem = "the teacher's logits are constant, so its distribution carries no signal"
    elif not token_jsd.requires_grad:
        problem = "the distillation loss does not depend on the student (detached graph)"
    if problem:
        raise MastersError(problem, where="training (first step)",
                           fix="check the teacher checkpoint and its adapter; the masked teacher must produce logits")


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
