"""``masters run``: generate, score, train and evaluate in order, skipping finished stages.

Each stage's identity hashes only the spec fields it reads (decision 9). ``stages.json`` in the
output directory records the identity each stage finished with; a stage whose identity matches is
skipped, any other runs (and, being resumable, continues what a killed run left).
"""

from __future__ import annotations

import json
import os
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
    def __init__(self, out: Path):
        self.path = out / "stages.json"

    def read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def done(self, stage: str, identity: str) -> bool:
        return self.read().get(stage, {}).get("identity") == identity

    def record(self, stage: str, identity: str, seconds: float, summary: dict[str, Any]) -> None:
        data = self.read()
        data[stage] = {"identity": identity, "seconds": round(seconds, 3), "summary": summary}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


def run_pipeline(spec: RunSpec, *, stages: Sequence[str] | None = None, progress: bool = True,
                 on_stage: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Run the stages in order; return ``{stage: "skipped" | summary}``."""
    from masters.bank.scoring import score_bank
    from masters.bank.store import ResponseBank
    from masters.data import load_splits
    from masters.engine.evaluate import evaluate_model, write_result
    from masters.engine.generation import bank_dir, generate_bank
    from masters.engine.trainer import train

    out = Path(spec.output_dir)
    log = StageLog(out)
    splits = load_splits(spec.task)
    results: dict[str, Any] = {}
    for stage in stages or needed_stages(spec):
        identity = stage_identity(spec, stage)
        if log.done(stage, identity):
            results[stage] = "skipped"
            if on_stage:
                on_stage(stage, "skipped (outputs match the config)")
            continue
        if on_stage:
            on_stage(stage, "running")
        began = time.perf_counter()
        if stage == "generate":
            report = generate_bank(spec, progress=progress, splits=splits)
            summary = {"rows_written": report.rows_written, "tokens_per_second": report.tokens_per_second}
        elif stage == "score":
            samples = {s.id: s for s in splits["train"]}
            report = score_bank(ResponseBank(bank_dir(spec)), samples, spec.rewards, progress=progress,
                                context={"default_model_path": spec.teachers[-1].path})
            if any(report.unscored.values()):
                results[stage] = {"unscored": report.unscored}
                break  # training needs every row scored; rerun retries the unscored ones
            summary = {"mean": report.mean}
        elif stage == "train":
            result = train(spec, splits=splits, progress=progress)
            summary = {"steps": result.steps, "final_loss": result.last.get("loss/total")}
        else:
            from masters.engine.progress import progress_bar

            with progress_bar(progress) as bar:
                result = evaluate_model(out / "student", splits["test"], spec.rewards, split="test", progress=bar)
            write_result(result, out / "eval" / "student-test.json")
            summary = {"accuracy": result.accuracy}
        log.record(stage, identity, time.perf_counter() - began, summary)
        results[stage] = summary
    return results
