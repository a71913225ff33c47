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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from masters.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from masters.engine.faults import kill_point
from masters.engine.identity import provenance, stage_hash
from masters.engine.plan import PlannedStep, training_plan
from masters.engine.progress import progress_bar
from masters.errors import MastersError
from masters.interfaces import ObjectiveNeeds, StepInputs

if TYPE_CHECKING:
    from masters.specs import RunSpec


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
    return {k: v for k, v in fields.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


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
    trainer = Trainer(spec, splits=splits)
    trainer._setup()
    return training_dir(spec) / "teacher_cache"


def train(spec: RunSpec, *, splits: dict[str, list[Any]] | None = None, progress: bool = True,
          accelerator: Any = None) -> TrainResult:
    """Train the student per ``spec``; resume from the last checkpoint of ``output_dir``."""
    return Trainer(spec, splits=splits, accelerator=accelerator).run(progress=progress)


class Trainer:
    def __init__(self, spec: RunSpec, *, splits: dict[str, list[Any]] | None = None, accelerator: Any = None):
        from accelerate import Accelerator, DistributedDataParallelKwargs

        self.spec = spec
        self.t = spec.training
        self.needs: ObjectiveNeeds = spec.objective.requirements()
        self.objective = spec.objective.build()
        self.uses_teacher = self.needs.teacher != "none"
        self.out = Path(spec.output_dir)
        # VLMs leave parameters out of the loss (e.g. the vision tower's last layer when features
        # come from the one before it): DDP must not wait for their gradients.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        self.accelerator = accelerator or Accelerator(mixed_precision=self.t.mixed_precision, kwargs_handlers=[ddp])
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
        self.student = resolve_adapter(spec.student, device=self.accelerator.device)
        if not self.uses_teacher:
            self.vocab = len(self.student.vocab())
        model = self.student.model
        if self.t.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        if self.t.lora is not None:
            model = self._with_lora(model)
        self.index = self._bank_index() if self.needs.responses == "bank" else None
        # The reference pass runs on the initial student before it is wrapped: a forward through
        # DDP on one rank alone would wait for the others forever.
        self.reference = self._reference() if self.needs.wants("reference_logprobs") else None
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.t.learning_rate, weight_decay=self.t.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.student.model = model  # the plain model: config, parameters, saving
        self.student.forward_module = self.model  # the wrapped one: forward passes sync gradients
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

    def _reference(self) -> Any:
        from masters.engine.reference import ReferenceStore, compute_reference

        store = ReferenceStore(self.out / "reference" / stage_hash("reference", {"student": self.spec.student})[:8])
        rows = {r["row_id"]: r for step in self.plan for q in step.question_ids
                for r in self._group_rows(step, q)}
        if self.accelerator.is_main_process:  # one writer; the other ranks read what it wrote
            compute_reference(store, self.student, list(rows.values()), self.samples)
        self.accelerator.wait_for_everyone()
        return store

    def _step_rows(self, step: PlannedStep, questions: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        """(question, row) pairs a micro-batch trains on: banked groups, or the reference answers."""
        if self.needs.responses == "bank":
            return [(q, r) for q in questions for r in self._group_rows(step, q)]
        answers = self.student.response_ids([self.samples[q].answer or "" for q in questions])
        return [(q, {"row_id": f"reference/{q}", "token_ids": ids}) for q, ids in zip(questions, answers)]

    def _teacher_cache(self) -> Any:
        """Precompute the top-k teacher log-probs of every (row, level) the plan trains on."""
        from masters.engine.teacher_cache import TeacherCache, cache_key, check_fits, fill_cache

        cache = TeacherCache(training_dir(self.spec) / "teacher_cache")
        work: dict[tuple[int, Any], dict[str, tuple[str, Mapping[str, Any], Any]]] = {}
        for step in self.plan:
            for q, row in self._step_rows(step, step.question_ids):
                key = cache_key(row["row_id"], step.teacher, step.level.bp)
                work.setdefault((step.teacher, step.level), {})[key] = (key, row, self.samples[q])
        if not self.accelerator.is_main_process:  # one writer; the other ranks read what it wrote
            self.accelerator.wait_for_everyone()
            return cache
        done = cache.entries()
        missing = [w for items in work.values() for k, w in items.items() if k not in done]
        check_fits(cache.directory, sum(len(r["token_ids"]) for _, r, _ in missing), self.t.cache_top_k)
        for (teacher, level), items in work.items():
            pending = [w for k, w in items.items() if k not in done]
            if pending:
                self._set_teacher(PlannedStep(-1, teacher, 0, level, ()))
                fill_cache(cache, self.teacher, self.vocab, pending, top_k=self.t.cache_top_k)
        self._release_teacher()  # training itself never holds the teacher
        self.accelerator.wait_for_everyone()
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
        if last is not None:
            state = load_checkpoint(last, self.accelerator.unwrap_model(self.model), self.optimizer)
            if state.get("identity") != self.identity:
                raise MastersError("checkpoint of another training config", where=str(last),
                                   fix="delete this checkpoint directory to start over")
            start = state["step"]
        metrics_path = train_dir / "metrics.jsonl"
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_metrics(metrics_path, start)
        total = len(self.plan)
        last_metrics: dict[str, Any] = {}
        bar = progress_bar(progress and self.accelerator.is_main_process)
        with bar as live:
            task = live.add_task("train", total=total, completed=start) if live else None
            for step in self.plan[start:]:
                last_metrics = self._optimizer_step(step)
                if self.accelerator.is_main_process:
                    with open(metrics_path, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(last_metrics) + "\n")
                done = step.step + 1
                if done % self.t.checkpoint_every == 0 or done == total:
                    self._checkpoint(ckpt_dir, done)
                kill_point("train", done)
                if live:
                    live.update(task, advance=1, description=f"train (level {step.level}, "
                                                             f"loss {last_metrics['loss/total']:.3f})")
        self._check_replicas_in_sync()
        student_dir = self.out / "student"
        if self.accelerator.is_main_process:
            self._save_student(student_dir)
        self.accelerator.wait_for_everyone()
        self._release_teacher()
        return TrainResult(total, student_dir, metrics_path, time.perf_counter() - started, start, last_metrics)

    def _optimizer_step(self, step: PlannedStep) -> dict[str, Any]:
        began = time.perf_counter()
        if self.uses_teacher and self.cache is None:
            self._set_teacher(step)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        mine = list(step.question_ids[rank::world])
        size = self.t.questions_per_step
        micro = [mine[i:i + size] for i in range(0, len(mine), size)] or [[]]
        sums: dict[str, float] = {}
        for i, questions in enumerate(micro):
            sync = i == len(micro) - 1
            context = contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)
            with context:
                terms, metrics = self._micro_batch(step, questions)
                self.accelerator.backward(terms.total / len(micro))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v / len(micro)
        grad_norm = None
        if self.t.max_grad_norm is not None:
            grad_norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), self.t.max_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"step": step.step, "teacher": step.teacher, "level": float(step.level), "stage": step.stage,
                "lr": self.t.learning_rate, "grad_norm": grad_norm, **sums,
                "step_seconds": time.perf_counter() - began}

    def _group_rows(self, step: PlannedStep, question_id: str) -> list[Mapping[str, Any]]:
        return self.index.draw_group(
            question_id, self.spec.teachers[step.teacher].path, step.level.bp, self.t.n_teacher, self.t.n_student,
            seed=self.spec.seed, stage=step.stage)

    def _micro_batch(self, step: PlannedStep, questions: Sequence[str]) -> tuple[Any, dict[str, float]]:
        from masters.rewards.jsd import jsd_loss

        if not questions:  # a rank with no question this step still joins the gradient all-reduce
            zero = sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
            return _Zero(zero), {}
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
        metrics.update(__import__("masters.engine.diagnostics", fromlist=["for_step"]).for_step(self, inputs, responses))
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
        if self.accelerator.num_processes == 1:
            return
        params = [p.detach().double().sum() for p in self.accelerator.unwrap_model(self.model).parameters()]
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
            self.teacher = resolve_adapter(teacher_spec, device=self.accelerator.device)
            self.teacher.model.eval().requires_grad_(False)
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
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            save_checkpoint(directory, step, self.accelerator.unwrap_model(self.model), self.optimizer,
                            {"identity": self.identity, "total_steps": len(self.plan)})
        self.accelerator.wait_for_everyone()

    def _save_student(self, directory: Path) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if self.t.lora is not None:
            model = model.merge_and_unload()  # plain transformers weights, loadable without peft
        self.student.model = model
        was = model.training
        model.eval()
        self.student.save(directory)
        model.train(was)
        (directory / "masters_run.json").write_text(json.dumps(
            {"train_hash": self.identity, "method": self.spec.objective.name, "steps": len(self.plan),
             "components": {"masker": self.spec.masker.name, "schedule": self.spec.schedule.name,
                            "rewards": [r.name for r in self.spec.rewards], "objective": self.spec.objective.name,
                            "task": self.spec.task.name, "backend": self.spec.backend.name},
             "provenance": provenance()}, indent=2) + "\n")

    @staticmethod
    def _truncate_metrics(path: Path, start: int) -> None:
        """Drop lines of steps that will be trained again after a resume: no duplicates."""
        if not path.exists():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] < start]
        path.write_text("".join(ln + "\n" for ln in lines))


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
