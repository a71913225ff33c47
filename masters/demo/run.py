"""``masters demo``: the whole method on the shapes task, on CPU, in minutes.

Phases (each timed against its budget in the demo spec):

a. data      the shapes task's splits, generated once (every phase uses a prefix of the train split);
b. teacher   a larger tiny LLaVA trained from scratch with SFT; cached by its settings;
c. student   a smaller tiny LLaVA after a short supervised warm-up (decision 11); cached likewise;
d. masters   the full pipeline from the base student: bank at the schedule's levels, exact-match
             scoring, training with the distillation reward and the JSD loss;
e. baselines SFT (continued) and naive KD from the same base student, same questions and steps;
f. evaluate  greedy exact-match accuracy on the test split: the teacher at every mask level, the
             base student and each trained student.

Every model is trained by the engine (``masters.engine.trainer.train``) from an ordinary RunSpec.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from masters.demo.spec import PHASES, DemoModel, DemoSpec
from masters.engine.identity import provenance, stage_hash
from masters.files import atomic_write

if TYPE_CHECKING:
    from masters.specs import RunSpec

MARKER = ".masters-demo"  # only directories carrying it are ever cleared by the demo
RUN_DIRS = ("masters", "sft", "naive_kd")


class DemoWarning(UserWarning):
    """Something makes the demo's comparison weaker (a slow phase, a weak teacher)."""


@dataclass
class PhaseTime:
    phase: str
    seconds: float
    budget: float
    note: str = ""

    @property
    def over(self) -> bool:
        return self.seconds > self.budget


@dataclass
class DemoResult:
    output_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # model, level, accuracy, n
    phases: list[PhaseTime] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    teacher_cached: bool = False
    student_cached: bool = False
    metrics: dict[str, str] = field(default_factory=dict)  # run -> metrics.jsonl
    files: dict[str, str] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    def accuracy(self, model: str, level: float | None = None) -> float:
        for row in self.rows:
            if row["model"] == model and (level is None or row.get("level") == level):
                return row["accuracy"]
        raise KeyError(model)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "phases": [{**asdict(p), "over_budget": p.over} for p in self.phases],
            "total_seconds": round(self.total_seconds, 2),
            "warnings": self.warnings,
            "teacher_cached": self.teacher_cached,
            "student_cached": self.student_cached,
            "metrics": self.metrics,
            "files": self.files,
        }


Say = Callable[[str], None]


def run_demo(spec: DemoSpec, *, progress: bool = True, say: Say | None = None) -> DemoResult:
    """Run every phase; write plots, ``report.md`` and ``results.json`` into ``spec.output_dir``."""
    from masters.engine.locks import stage_outputs

    say = say or (lambda text: None)
    out = Path(spec.output_dir)
    # Refuse a non-empty directory that is not an earlier demo's (never write among a user's files),
    # and hold it (and the model cache) for this one run: a second demo on it exits 2.
    with stage_outputs(out, "demo"), stage_outputs(spec.cache, "demo cache"):
        return _run_demo(spec, out, progress, say)


def _run_demo(spec: DemoSpec, out: Path, progress: bool, say: Say) -> DemoResult:
    import torch

    from masters.files import atomic_write

    atomic_write(out / MARKER, "masters demo run directory\n")
    result = DemoResult(out)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-load "Loading weights" bars drown the demo's own output
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*every group has equal rewards.*")
            _run(spec, out, result, progress, say)
    finally:
        torch.set_num_threads(threads)
    from masters.demo.report import write_outputs

    write_outputs(spec, result)
    return result


def _run(spec: DemoSpec, out: Path, result: DemoResult, progress: bool, say: Say) -> None:
    from masters.tasks.shapes import generate_shapes
    from masters.models import build_tokenizer

    timer = _Timer(spec, result, say)
    for name in RUN_DIRS:  # a demo run trains its students afresh; teachers come from the cache
        _clear(out / name)

    with timer("data"):
        d = spec.data
        n_train = max(spec.teacher.n_train, spec.student.n_train, spec.distill.n_train)
        splits = generate_shapes(n_train, 0, spec.n_test, image_size=d.image_size, seed=d.seed, forms=d.forms,
                                 question_types=d.question_types, max_shapes=d.max_shapes)
        test = splits["test"]
        tokenizer = out / "tokenizer"
        build_tokenizer(tokenizer)
        timer.note(f"{n_train} train / {len(test)} test questions; types {', '.join(d.question_types)}; "
                   f"up to {d.max_shapes} shapes")

    with timer("teacher"):
        teacher, result.teacher_cached, metrics = _trained_model(spec, "teacher", spec.teacher, tokenizer, splits,
                                                                 progress, say)
        result.metrics["teacher"] = metrics
        timer.note("reused from the cache" if result.teacher_cached else "trained from scratch with SFT")

    with timer("student"):
        base, result.student_cached, metrics = _trained_model(spec, "student", spec.student, tokenizer, splits,
                                                              progress, say)
        result.metrics["student warm-up"] = metrics
        timer.note("reused from the cache" if result.student_cached else "supervised warm-up")

    from masters.engine.pipeline import run_pipeline

    masters_spec = _distill_spec(spec, "masters", teacher, base)
    with timer("masters"):
        run_pipeline(masters_spec, stages=["generate", "score", "train"], progress=progress,
                     on_stage=lambda stage, state: say(f"  masters {stage}: {state}"))
        result.metrics["masters"] = str(_metrics_path(masters_spec))

    from masters.engine.trainer import train

    baseline_specs = {}
    with timer("baselines"):
        for method in spec.distill.baselines:
            baseline_specs[method] = _distill_spec(spec, method, teacher, base)
            say(f"  baseline {method}: training")
            train(baseline_specs[method], splits=_prefix(splits, spec.distill.n_train), progress=progress)
            result.metrics[method] = str(_metrics_path(baseline_specs[method]))

    with timer("evaluate"):
        result.rows = _evaluate(spec, masters_spec, teacher, base, out, test, progress)

    _check_teacher(spec, result)


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_patch(patch: int) -> Iterator[None]:
    """Build tiny models with another vision patch size (``masters.models.tiny.PATCH``).

    With 32 px images, 16 px patches give one image token per quadrant, which is where the shapes
    task places its shapes: four image tokens instead of sixteen, learnt much faster.
    """
    import masters.models.tiny as tiny

    old = tiny.PATCH
    tiny.PATCH = patch
    try:
        yield
    finally:
        tiny.PATCH = old


def model_key(spec: DemoSpec, role: str, model: DemoModel) -> str:
    """What a cached teacher (or base student) depends on: its settings and the task's."""
    task = spec.data.identity()
    task.pop("n_train", None), task.pop("n_validation", None), task.pop("n_test", None)
    return stage_hash(f"demo-{role}", {"model": model, "task": task})[:12]


def _trained_model(spec: DemoSpec, role: str, model: DemoModel, tokenizer: Path, splits: dict[str, list[Any]],
                   progress: bool, say: Say) -> tuple[Path, bool, str]:
    """Build and SFT-train one model, or reuse it from the cache; returns (dir, cached, metrics path)."""
    from masters.engine.trainer import train
    from masters.models import build_tiny_model
    from masters.config import validate_run_spec

    home = spec.cache / f"{role}-{model_key(spec, role, model)}"
    final = home / "model"
    metrics = home / "metrics.jsonl"
    if (home / "done.json").exists() and final.is_dir():
        say(f"  {role}: reusing {final}")
        return final, True, str(metrics)
    if home.exists():
        shutil.rmtree(home)  # an unfinished earlier attempt
    home.mkdir(parents=True)
    init = home / "init"
    with tiny_patch(model.patch):
        build_tiny_model(model.family, model.size, init, tokenizer_dir=tokenizer, seed=model.seed, **model.dims)
    run = validate_run_spec({
        "output_dir": str(home / "run"), "seed": model.seed, "teacher": str(init), "student": str(init),
        "task": {**spec.data.model_dump(), "n_train": model.n_train, "n_test": spec.n_test, "n_validation": 0},
        "rewards": ["exact_match"], "objective": "sft",
        "training": {"learning_rate": model.learning_rate, "questions_per_step": model.batch_size,
                     "passes": model.passes, "checkpoint_every": 10**9},
    })
    say(f"  {role}: training {model.family} {model.size} from scratch "
        f"({-(-model.n_train * model.passes // model.batch_size)} SFT steps)")
    result = train(run, splits=_prefix(splits, model.n_train), progress=progress)
    shutil.move(str(result.student_dir), str(final))
    shutil.copy(result.metrics_path, metrics)
    shutil.rmtree(home / "run", ignore_errors=True)
    shutil.rmtree(init, ignore_errors=True)
    from masters.files import atomic_write

    atomic_write(home / "done.json", json.dumps({"settings": model.model_dump(mode="json"),
                                                "seconds": round(result.seconds, 2), "steps": result.steps,
                                                "provenance": provenance()}, indent=2) + "\n")
    return final, False, str(metrics)


def _prefix(splits: dict[str, list[Any]], n_train: int) -> dict[str, list[Any]]:
    """The splits ``load_splits`` gives for a smaller ``n_train``: train is a prefix, the rest equal."""
    return {**splits, "train": splits["train"][:n_train]}


def _distill_spec(spec: DemoSpec, method: str, teacher: Path, student: Path) -> Any:
    from masters.config import validate_run_spec

    d = spec.distill
    return validate_run_spec({
        "output_dir": str(Path(spec.output_dir) / method), "seed": spec.seed,
        "teacher": str(teacher), "student": str(student),
        "task": {**spec.data.model_dump(), "n_train": d.n_train, "n_test": spec.n_test, "n_validation": 0},
        "objective": method,
        "schedule": {"name": "staircase", "r_max": d.r_max, "step": d.step},
        "rewards": ["exact_match", "jsd_distill"],
        "generation": {"n_teacher_responses": d.n_teacher_responses, "n_student_responses": d.n_student_responses,
                       "max_new_tokens": d.max_new_tokens, "batch_size": 32},
        "training": {"learning_rate": d.learning_rate, "n_teacher": d.n_teacher,
                     "n_student": d.n_student, "questions_per_step": d.questions_per_step,
                     "checkpoint_every": 10**9},
    })


def _metrics_path(run: Any) -> Path:
    from masters.engine.trainer import training_dir

    return training_dir(run) / "metrics.jsonl"


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def _evaluate(spec: DemoSpec, masters_spec: RunSpec, teacher: Path, base: Path, out: Path, test: list[Any],
              progress: bool) -> list[dict[str, Any]]:
    from masters.adapters.resolve import resolve_adapter
    from masters.engine.evaluate import evaluate_model
    from masters.masking.runtime import MaskedTeacher
    from masters.schedules.chain import TeacherChain

    rewards = masters_spec.rewards
    new_tokens = spec.distill.max_new_tokens
    rows: list[dict[str, Any]] = []

    def add(model: str, path: Path, level: float | None = None, adapter: Any = None) -> None:
        res = evaluate_model(path, test, rewards, adapter=adapter, batch_size=100, max_new_tokens=new_tokens)
        rows.append({"model": model, "level": level, "accuracy": res.accuracy["exact_match"], "n": res.n,
                     "path": str(path), "seconds": round(res.seconds, 2)})

    adapter = resolve_adapter(str(teacher))
    levels = TeacherChain.from_run_spec(masters_spec).levels(0)
    masked = MaskedTeacher.from_model(adapter.model, masters_spec.masker, levels,
                                      maskable=adapter.maskable_parameters())
    try:
        for level in levels:
            masked.set_level(level)
            add("teacher", teacher, float(level), adapter)
    finally:
        masked.close()
    add("base student", base)
    for method in spec.distill.baselines:
        add({"sft": "SFT", "naive_kd": "naive KD"}[method], out / method / "student")
    add("Masters", out / "masters" / "student")
    return rows


def _check_teacher(spec: DemoSpec, result: DemoResult) -> None:
    teacher = result.accuracy("teacher", 0.0)
    base = result.accuracy("base student")
    problems = []
    if teacher < spec.min_teacher_accuracy:
        problems.append(f"the unmasked teacher scores {teacher:.3f}, below {spec.min_teacher_accuracy}")
    if teacher - base < spec.min_teacher_margin:
        problems.append(f"the teacher leads the base student by only {teacher - base:+.3f} "
                        f"(wanted at least {spec.min_teacher_margin})")
    for problem in problems:
        message = (f"{problem}: the comparison says little; train the teacher longer "
                   "(teacher.passes / teacher.n_train) or delete its cache directory")
        result.warnings.append(message)
        warnings.warn(message, DemoWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


class _Timer:
    def __init__(self, spec: DemoSpec, result: DemoResult, say: Say):
        self.spec, self.result, self.say = spec, result, say
        self._note = ""

    def note(self, text: str) -> None:
        self._note = text

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        assert phase in PHASES
        budget = self.spec.budgets.of(phase)
        self._note = ""
        self.say(f"[bold]{phase}[/] (budget {budget:.0f} s)")
        began = time.perf_counter()
        yield
        took = PhaseTime(phase, time.perf_counter() - began, budget, self._note)
        self.result.phases.append(took)
        self.say(f"  {phase}: {took.seconds:.1f} s" + (f"; {took.note}" if took.note else ""))
        if took.over:
            message = f"phase {phase!r} took {took.seconds:.0f} s, over its {budget:.0f} s budget"
            self.result.warnings.append(message)
            self.say(f"  [yellow]warning:[/] {message}")
            warnings.warn(message + " (a busy machine, or raise budgets." + phase + ")", DemoWarning, stacklevel=3)


def _clear(directory: Path) -> None:
    """Remove a demo run directory from an earlier demo run (never anything without the marker)."""
    if directory.exists():
        if not (directory / MARKER).exists():
            from masters.errors import MastersError

            raise MastersError(f"{directory} exists but was not written by masters demo", where=str(directory),
                               fix="choose another --output directory")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    atomic_write(directory / MARKER, "masters demo run directory\n")
