"""``masters run``: generate, score, train and evaluate in order, skipping finished stages.

Each stage's identity hashes only the spec fields it reads (decision 9). ``stages.json`` in the
output directory records the identity each stage finished with; a stage whose identity matches is
skipped, any other runs (and, being resumable, continues what a killed run left).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from masters.engine.identity import stage_hash

if TYPE_CHECKING:
    from masters.specs import RunSpec

STAGES: tuple[str, ...] = ("generate", "score", "train", "evaluate")
PLAN_FIELDS = ("questions_per_step", "gradient_accumulation_steps", "passes")


def stage_identity(spec: RunSpec, stage: str) -> str:
    from masters.engine.generation import generation_fields
    from masters.engine.trainer import training_fields

    if stage == "generate":
        # What decides which rows the bank needs: the plan (data, chain, schedule, the training
        # fields that shape steps) and the response counts; not the learning rate or the loss.
        # (``method`` is the objective's name: it decides the teacher level and whether a bank is needed.)
        plan = {"method": spec.objective.name, **{k: getattr(spec.training, k) for k in PLAN_FIELDS}}
        from masters.engine.generation import bank_dir

        return stage_hash("generate-run", {**generation_fields(spec), "data": spec.task.identity(), "schedule": spec.schedule,
                                           "teachers": spec.teachers, "plan": plan, "counts": spec.generation,
                                           "bank_dir": str(bank_dir(spec))})
    if stage == "score":
        return stage_hash("score", {"bank": stage_identity(spec, "generate"), "rewards": spec.rewards})
    if stage == "train":
        return stage_hash("train", training_fields(spec))
    if stage == "evaluate":
        return stage_hash("evaluate", {"train": stage_identity(spec, "train"), "data": spec.task.identity(),
                                       "rewards": spec.rewards})
    raise ValueError(stage)


def needed_stages(spec: RunSpec) -> list[str]:
    if spec.objective.requirements().responses == "reference":
        return ["train", "evaluate"]  # objectives on the data's answers (SFT, naive KD): no bank
    return list(STAGES)


class StageLog:
    """``stages.json``: per stage the identity it finished with, and counters summed over every
    process that worked on it (a stage killed and resumed counts all its attempts)."""

    def __init__(self, out: Path):
        self.path = out / "stages.json"

    def read(self) -> dict[str, Any]:
        from masters.errors import DataError
        from masters.files import read_json

        if not self.path.exists():
            return {}
        data = read_json(self.path, "stage log (stages.json)",
                         fix="delete stages.json: finished stages are then checked again (they resume, not redo)")
        if not isinstance(data, dict):
            raise DataError("stages.json is not a JSON object", where=str(self.path),
                            fix="delete stages.json: finished stages are then checked again")
        return data

    def done(self, stage: str, identity: str) -> bool:
        entry = self.read().get(stage, {})
        return entry.get("identity") == identity and entry.get("state", "done") == "done"

    def _write(self, data: dict[str, Any]) -> None:
        from masters.files import atomic_write_json

        atomic_write_json(self.path, data, sort_keys=True)

    def begin(self, stage: str, identity: str) -> None:
        """Note an attempt (before any output): a resumed stage's counters add up across processes."""
        data = self.read()
        entry = data.get(stage, {})
        if entry.get("identity") != identity:
            entry = {"identity": identity, "seconds": 0.0, "attempts": 0}
        entry.update(state="running", attempts=int(entry.get("attempts", 0)) + 1)
        data[stage] = entry
        self._write(data)

    def interrupted(self, stage: str, seconds: float) -> None:
        data = self.read()
        if stage in data:
            data[stage]["seconds"] = round(float(data[stage].get("seconds", 0.0)) + seconds, 3)
            self._write(data)

    def record(self, stage: str, identity: str, seconds: float, summary: dict[str, Any]) -> None:
        """The stage is done: called only after its outputs are in place (decision 18)."""
        data = self.read()
        entry = data.get(stage, {}) if data.get(stage, {}).get("identity") == identity else {}
        data[stage] = {"identity": identity, "state": "done", "attempts": int(entry.get("attempts", 1)),
                       "seconds": round(float(entry.get("seconds", 0.0)) + seconds, 3),
                       "last_attempt_seconds": round(seconds, 3), "summary": summary}
        self._write(data)


def run_pipeline(spec: RunSpec, *, stages: Sequence[str] | None = None, progress: bool = True,
                 on_stage: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Run the stages in order; return ``{stage: "skipped" | summary}``."""
    from masters.engine.locks import run_outputs

    with run_outputs(spec, "run"):  # one writer per directory (decision 19) for the whole pipeline
        return _run_stages(spec, stages=stages, progress=progress, on_stage=on_stage)


def _run_stages(spec: RunSpec, *, stages: Sequence[str] | None, progress: bool,
                on_stage: Callable[[str, str], None] | None) -> dict[str, Any]:
    from masters.data import load_splits

    out = Path(spec.output_dir)
    log = StageLog(out)
    splits = load_splits(spec.task)
    results: dict[str, Any] = {}
    context = {"default_model_path": spec.teachers[-1].path}
    rank = _launch_rank()
    for stage in stages or needed_stages(spec):
        identity = stage_identity(spec, stage)
        if log.done(stage, identity):
            results[stage] = "skipped"
            if on_stage:
                on_stage(stage, "skipped (outputs match the config)")
            continue
        if rank != 0:  # under `accelerate launch`: every rank generates and trains, rank 0 alone does the rest
            if stage in ("generate", "train"):
                results[stage] = _run_stage(stage, spec, splits, out, progress, context, results)
            elif stage != "evaluate":
                _wait_for_rank0(log, stage, identity)
                results[stage] = "done by rank 0"
            continue
        if on_stage:
            on_stage(stage, "running")
        began = time.perf_counter()
        log.begin(stage, identity)
        try:
            summary = _run_stage(stage, spec, splits, out, progress, context, results)
        except BaseException:
            log.interrupted(stage, time.perf_counter() - began)
            raise
        if summary is None:
            break  # training needs every row scored; rerun retries the unscored ones
        log.record(stage, identity, time.perf_counter() - began, summary)
        results[stage] = summary
    return results


def _launch_rank() -> int:
    from masters.engine.distributed import launched_world_size
    from masters.engine.locks import launch_rank

    return launch_rank() if launched_world_size() > 1 else 0


def _wait_for_rank0(log: StageLog, stage: str, identity: str, poll_s: float = 1.0) -> None:
    """Wait, however long it takes, until rank 0 records ``stage`` (no process group exists yet; if
    rank 0 fails, the launcher ends this process)."""
    while not log.done(stage, identity):
        time.sleep(poll_s)


def _run_stage(stage: str, spec: RunSpec, splits: dict[str, Any], out: Path, progress: bool,
               context: dict[str, Any], results: dict[str, Any]) -> dict[str, Any] | None:
    from masters.bank.scoring import score_bank
    from masters.bank.store import ResponseBank
    from masters.engine.evaluate import evaluate_model, write_result
    from masters.engine.generation import bank_dir, generate_bank
    from masters.engine.trainer import train

    if stage == "generate":
        report = generate_bank(spec, progress=progress, splits=splits)
        summary = {"rows_written": report.rows_written, "rows": report.rows_present + report.rows_written,
                   "tokens_per_second": report.tokens_per_second}
    elif stage == "score":
        samples = {s.id: s for s in splits["train"]}
        report = score_bank(ResponseBank(bank_dir(spec)), samples, spec.rewards, progress=progress,
                            context=context)
        if any(report.unscored.values()):
            results[stage] = {"unscored": report.unscored}
            return None
        summary = {"mean": report.mean, "scored": report.scored}
    elif stage == "train":
        result = train(spec, splits=splits, progress=progress)
        summary = {"steps": result.steps, "resumed_from": result.resumed_from,
                   "final_loss": result.last.get("loss/total")}
    else:
        from masters.engine.progress import progress_bar

        with progress_bar(progress) as bar:
            result = evaluate_model(out / "student", splits["test"], spec.rewards, split="test", progress=bar,
                                    context=context)
        write_result(result, out / "eval" / "student-test.json")
        summary = {"accuracy": result.accuracy, "n": result.n}
    return summary
