"""Capacity-gap models for the ``shapes_reason`` testbed (issue 13, item 2), cached by their settings.

A teacher (LLaVA hidden 192, 3 layers), a mid teacher (the demo teacher's ``small`` size) and a
student small enough (hidden 32-48) that its SFT plateau lies well below the teacher's, each built
from scratch and trained with SFT on the task's reference answers by the engine, exactly as the
demo trains its teacher (:func:`masters.demo.run._trained_model`), and cached the same way: under
``CACHE/<role>-<hash of its settings and the task's>``, reused while the settings are unchanged.
Widen a gap by shrinking the student, never by growing the teacher.

Training runs pass by pass; after each pass the model is scored greedily on ``n_eval`` validation
questions, and the curve is saved beside the model as ``plateau.json`` (``steps``, ``accuracy``,
``n``), which ``masters probe`` reads for gate G1 (the student is warmed up *to its plateau*);
the earlier passes are kept under ``CACHE/<role>-<key>/passes/pass-<k>`` (the teacher's own SFT
checkpoints are the study's curriculum control).

    python -m masters.engine.capacity --out runs/shapes-reason [--roles teacher,mid,student]

links ``OUT/models/<role>`` to each cached model, which ``configs/shapes-reason.yaml`` names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from masters.engine.identity import provenance, stage_hash
from masters.files import atomic_write_json
from masters.specs import StrictModel

IMAGE_SIZE = 48
PATCH = 16


class WarmupStage(StrictModel):
    """SFT on other questions of the same task before the task's own (a perception stage)."""

    question_kinds: tuple[str, ...] = Field(("cell",), min_length=1,
                                            description="The task's question kinds this stage asks.")
    n_train: int = Field(4096, ge=1, description="Questions (a train split of their own, drawn with seed + 1).")
    passes: int = Field(2, ge=1)


# Three stages of one-step `cell` questions (1536 steps): a from-scratch model learns to name what
# is in a cell before it is asked to reason about cells (without them it names colours that are
# in the scene, but not the right cell's).
PERCEPTION_WARMUP = tuple(WarmupStage(question_kinds=("cell",), n_train=16384, passes=1) for _ in range(3))


class GapModel(StrictModel):
    """One model of the testbed: its dimensions and its SFT (from scratch) schedule."""

    family: str = "llava"
    size: str = Field("tiny", description="Base dimensions (masters.models.tiny.SIZES), overridden by dims.")
    dims: dict[str, int] = Field(default_factory=dict)
    seed: int = 0
    # 4096 questions x 6 passes left the teacher's final answer near the answer prior (0.42-0.52) once
    # perception was learnt (benchmarks/results/shapes_reason_probe.md): fewer repeats, more questions
    n_train: int = Field(16384, ge=1, description="Training questions (a prefix of the train split).")
    passes: int = Field(4, ge=1, description="Passes over them; the curve has one point per pass.")
    batch_size: int = Field(32, ge=1)
    # 1e-3 made every model's curve oscillate at the answer prior (benchmarks/results/shapes_reason_probe.md)
    learning_rate: float = Field(3e-4, gt=0)
    max_new_tokens: int = Field(26, ge=1, description="Longest greedy answer when scoring the curve.")
    warmup: tuple[WarmupStage, ...] = Field(
        PERCEPTION_WARMUP, description="Stages trained before the task's passes, in order (the same for every "
        "role, so a gap is one of capacity, not recipe).")


class GapSpec(StrictModel):
    """The testbed: the task and its three models."""

    task: dict[str, Any] = Field(default_factory=lambda: {"name": "shapes_reason"})
    n_eval: int = Field(512, ge=1, description="Validation questions each curve point is scored on.")
    cache_dir: str = "runs/shapes-reason/cache"
    # 8 passes: after 4 the teacher was still climbing (0.518, 0.563, 0.539, 0.629) 0.135 above a student at
    # its answer prior, which a 1-layer student matched exactly (0.492 on 2000 questions): only the teacher moves G1
    teacher: GapModel = Field(default_factory=lambda: GapModel(
        dims={"hidden": 192, "layers": 3, "heads": 4, "intermediate": 384, "vision_hidden": 64, "vision_layers": 2,
              "pad_vocab_to": 64}, seed=1, passes=8))
    mid: GapModel = Field(default_factory=lambda: GapModel(size="small", seed=3))
    student: GapModel = Field(default_factory=lambda: GapModel(
        dims={"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "vision_hidden": 32, "vision_layers": 1,
              "pad_vocab_to": 8}, seed=2))

    def model(self, role: str) -> GapModel:
        return getattr(self, role)


ROLES = ("teacher", "mid", "student")


@contextlib.contextmanager
def tiny_image(image_size: int = IMAGE_SIZE, patch: int = PATCH) -> Iterator[None]:
    """Build tiny models for 48 px images cut into 16 px patches (one image token per grid cell)."""
    import masters.models.tiny as tiny

    old = tiny.IMAGE_SIZE, tiny.PATCH
    tiny.IMAGE_SIZE, tiny.PATCH = image_size, patch
    try:
        yield
    finally:
        tiny.IMAGE_SIZE, tiny.PATCH = old


def task_spec(spec: GapSpec) -> Any:
    from masters.plugins import get_components

    data = dict(spec.task)
    cls = get_components().registry("task").get(str(data.get("name", "shapes_reason"))).spec_cls
    return cls.model_validate(data)


def model_key(spec: GapSpec, role: str) -> str:
    """What a cached model depends on: its settings and the task's (not the split sizes)."""
    task = task_spec(spec).identity()
    for k in ("n_train", "n_validation", "n_test"):
        task.pop(k, None)
    return stage_hash(f"gap-{role}", {"model": spec.model(role), "task": task, "n_eval": spec.n_eval,
                                      "image": [IMAGE_SIZE, PATCH]})[:12]


def tokenizer_words(spec: GapSpec) -> list[str] | None:
    if task_spec(spec).name == "shapes_reason":
        from masters.tasks.shapes_reason import shapes_reason_vocabulary

        return shapes_reason_vocabulary()
    return None


def accuracy_rewards(task: Mapping[str, Any], model: Path, out: Path) -> tuple[list[Any], str]:
    """The task's default rewards and the name of its accuracy reward (what every curve point scores)."""
    from masters.config import validate_run_spec

    rewards = validate_run_spec({"output_dir": str(out), "teacher": str(model), "student": str(model),
                                 "task": dict(task)}).rewards
    return rewards, next(r.name for r in rewards if type(r).signal == "accuracy")


def trained_model(spec: GapSpec, role: str, tokenizer: Path, splits: Mapping[str, list[Any]], *,
                  progress: bool = False, say: Any = print) -> tuple[Path, bool]:
    """Build and SFT-train one model pass by pass (curve in plateau.json), or reuse it from the cache."""
    from masters.config import validate_run_spec
    from masters.data import load_splits
    from masters.engine.evaluate import evaluate_model
    from masters.engine.trainer import train
    from masters.models import build_tiny_model

    model = spec.model(role)
    home = Path(spec.cache_dir) / f"{role}-{model_key(spec, role)}"
    final = home / "model"
    if (home / "done.json").exists() and final.is_dir():
        say(f"  {role}: reusing {final}")
        return final, True
    if home.exists():
        shutil.rmtree(home)  # an unfinished earlier attempt
    home.mkdir(parents=True)
    current = home / "init"
    shorter = _shorter_schedule(spec, role)
    if shorter is not None:  # the same model with fewer passes: its passes are this one's first ones
        done = _passes_of(shorter)
        if (shorter / "passes").is_dir():
            shutil.copytree(shorter / "passes", home / "passes")
        shutil.copytree(shorter / "model", home / "passes" / f"pass-{done}")
        current = home / f"pass-{done - 1}" / "student"  # where that pass's run left it (removed once passed)
        shutil.copytree(shorter / "model", current)
        say(f"  {role}: extending {shorter.name} ({done} passes) to {model.passes}")
    else:
        with tiny_image():
            build_tiny_model(model.family, model.size, current, tokenizer_dir=tokenizer, seed=model.seed,
                             **model.dims)
    task = {**task_spec(spec).model_dump(mode="json"), "n_train": model.n_train}
    prefix = {**splits, "train": list(splits["train"][:model.n_train])}
    evaluation = list(splits["validation"][:spec.n_eval])
    rewards, key = accuracy_rewards(task, current, home / "x")
    curve: dict[str, Any] = {"steps": [], "accuracy": [], "n": len(evaluation), "reward": key, "warmup": []}
    steps_per_pass = -(-model.n_train // model.batch_size)
    began = time.perf_counter()

    def sft(out: Path, seed: int, stage_task: Mapping[str, Any], stage_splits: Mapping[str, list[Any]],
            passes: int = 1) -> Path:
        run = validate_run_spec({
            "output_dir": str(out), "seed": seed, "teacher": str(current), "student": str(current),
            "task": dict(stage_task), "objective": "sft",
            "training": {"learning_rate": model.learning_rate, "questions_per_step": model.batch_size,
                         "passes": passes, "checkpoint_every": 10**9},
        })
        return train(run, splits=dict(stage_splits), progress=progress).student_dir

    first_pass = 0
    if shorter is not None:
        curve = {**json.loads((current / "plateau.json").read_text()), "extended_from": shorter.name}
        first_pass = len(curve["steps"])
    for w, stage in enumerate(model.warmup if shorter is None else ()):
        stage_task = {**task, "question_kinds": list(stage.question_kinds), "n_train": stage.n_train,
                      "n_validation": spec.n_eval, "n_test": 1, "seed": int(task.get("seed", 0)) + 1 + w}
        stage_splits = load_splits(task_spec(spec).model_validate(stage_task))
        previous = current
        current = sft(home / f"warmup-{w}", model.seed * 1000 + 900 + w, stage_task, stage_splits, stage.passes)
        shutil.rmtree(previous if previous.name == "init" else previous.parent, ignore_errors=True)
        acc = evaluate_model(current, list(stage_splits["validation"]), rewards, batch_size=128,
                             max_new_tokens=model.max_new_tokens, split="validation").accuracy[key]
        curve["warmup"].append({"question_kinds": list(stage.question_kinds), "accuracy": acc,
                                "steps": -(-stage.n_train * stage.passes // model.batch_size)})
        say(f"  {role}: warm-up {w + 1}/{len(model.warmup)} ({', '.join(stage.question_kinds)}): "
            f"validation {key} {acc:.3f} ({time.perf_counter() - began:.0f} s)")
    for p in range(first_pass, model.passes):
        previous = current
        current = sft(home / f"pass-{p}", model.seed * 1000 + p, task, prefix)
        shutil.rmtree(previous if previous.name == "init" else previous.parent, ignore_errors=True)
        if p + 1 < model.passes:  # the model's own SFT checkpoints (the curriculum control of the study)
            shutil.copytree(current, home / "passes" / f"pass-{p + 1}")
        acc = evaluate_model(current, evaluation, rewards, batch_size=128, max_new_tokens=model.max_new_tokens,
                             split="validation").accuracy[key]
        curve["steps"].append((p + 1) * steps_per_pass)
        curve["accuracy"].append(acc)
        say(f"  {role}: pass {p + 1}/{model.passes}: validation {key} {acc:.3f} "
            f"({time.perf_counter() - began:.0f} s)")
    atomic_write_json(Path(current) / "plateau.json", curve)  # written before the rename: final is whole
    shutil.move(str(current), str(final))
    for leftover in [*home.glob("pass-*"), *home.glob("warmup-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    atomic_write_json(home / "done.json", {"settings": model.model_dump(mode="json"), "curve": curve,
                                           "seconds": round(time.perf_counter() - began, 1),
                                           "provenance": provenance()})  # recorded done only now
    return final, False


def _passes_of(home: Path) -> int:
    return int(json.loads((home / "done.json").read_text())["settings"]["passes"])


def _shorter_schedule(spec: GapSpec, role: str) -> Path | None:
    """The finished cache entry of this model with the most passes fewer than its own, if any.

    Each pass is its own SFT run (a fresh optimizer, seed ``1000 * seed + pass``) from the model the
    pass before left, so passes k+1.. continued from a k-pass model equal a run of all of them."""
    model = spec.model(role)
    for k in range(model.passes - 1, 0, -1):
        shorter = spec.model_copy(update={role: model.model_copy(update={"passes": k})})
        home = Path(spec.cache_dir) / f"{role}-{model_key(shorter, role)}"
        if (home / "done.json").exists() and (home / "model" / "plateau.json").exists():
            return home
    return None


def build_models(spec: GapSpec, out: Path, roles: tuple[str, ...] = ROLES, *, progress: bool = False,
                 say: Any = print) -> dict[str, Path]:
    """Every role's model (cached), linked as ``out/models/<role>``; the shared tokenizer at ``out/tokenizer``."""
    from masters.data import load_splits
    from masters.models import build_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = out / "tokenizer"
    if not (tokenizer / "tokenizer.json").exists():
        build_tokenizer(tokenizer, words=tokenizer_words(spec))
    n_train = max(spec.model(r).n_train for r in roles)
    task = task_spec(spec).model_copy(update={"n_train": n_train})
    splits = load_splits(task)
    links = out / "models"
    links.mkdir(exist_ok=True)
    paths = {}
    for role in roles:
        path, _ = trained_model(spec, role, tokenizer, splits, progress=progress, say=say)
        link = links / role
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path.resolve())
        paths[role] = link
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build (or reuse) the shapes_reason capacity-gap models.")
    p.add_argument("--out", default="runs/shapes-reason")
    p.add_argument("--config", help="YAML GapSpec (default: the built-in sizes)")
    p.add_argument("--roles", default=",".join(ROLES))
    p.add_argument("--diagnose", metavar="ROLES", help="print (and write to OUT/diagnosis.json) these roles' "
                   "accuracy by question kind, on validation and on their own training questions")
    args = p.parse_args(argv)
    import torch

    from masters.config import read_config

    torch.set_num_threads(1)
    data = dict(read_config(args.config)) if args.config else {}
    data.setdefault("cache_dir", str(Path(args.out) / "cache"))
    spec = GapSpec.model_validate(data)
    if args.diagnose:
        from masters.engine.capacity_report import diagnose

        report = diagnose(spec, Path(args.out), tuple(args.diagnose.split(",")), say=lambda t: print(t, flush=True))
        atomic_write_json(Path(args.out) / "diagnosis.json", report)
        return 0
    paths = build_models(spec, Path(args.out), tuple(args.roles.split(",")), say=lambda t: print(t, flush=True))
    for role, path in paths.items():
        print(f"{role}: {path} -> {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
