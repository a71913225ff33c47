"""The training plan (design decision 3): which questions each optimizer step trains on, and at
which teacher and mask level.

Progress is optimizer step / total optimizer steps. By default the training questions are passed
once across all stages, each stage taking its share. Which questions fall in which stage is drawn
with the *bank* seed (``generation.seed``), so the bank (generated only where training uses a
question, ``bank_levels: scheduled``) is shared by every run seed; the run ``seed`` then shuffles
the order within each stage and picks each group's responses (decision 10).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from masters.engine.identity import derived_seed
from masters.ratios import Ratio
from masters.schedules.chain import TeacherChain

if TYPE_CHECKING:
    from masters.specs import RunSpec


@dataclass(frozen=True)
class PlannedStep:
    step: int
    teacher: int
    stage: int
    level: Ratio
    question_ids: tuple[str, ...]


def questions_per_step(spec: RunSpec, world_size: int = 1) -> int:
    t = spec.training
    return t.questions_per_step * t.gradient_accumulation_steps * world_size


def training_plan(spec: RunSpec, question_ids: Sequence[str], *, world_size: int = 1,
                  chain: TeacherChain | None = None) -> list[PlannedStep]:
    """Every optimizer step of the run, in order."""
    chain = chain or TeacherChain.from_run_spec(spec)
    per_step = questions_per_step(spec, world_size)
    bank_seed = spec.generation.seed
    order: list[str] = []
    for pass_index in range(spec.training.passes):
        ids = sorted(question_ids)
        random.Random(derived_seed("plan", bank_seed, pass_index)).shuffle(ids)
        order.extend(ids)
    total = max(1, math.ceil(len(order) / per_step))
    # The objective says which teacher level it trains against: the restore schedule's, or the
    # unmasked teacher (naive distillation; an objective without a teacher is planned the same way).
    follows_schedule = spec.objective.requirements().teacher == "schedule"
    steps = []
    for step in range(total):
        pos = chain.at(step, total)
        stage, level = pos.stage, pos.level
        if not follows_schedule:
            stage, level = len(chain.levels(pos.teacher)) - 1, Ratio(0)
        steps.append(PlannedStep(step, pos.teacher, stage, level, tuple(order[step * per_step:(step + 1) * per_step])))
    return _shuffle_within_stages(steps, spec.seed, per_step)


def _shuffle_within_stages(steps: list[PlannedStep], seed: int, per_step: int) -> list[PlannedStep]:
    out: list[PlannedStep] = []
    start = 0
    while start < len(steps):
        end = start
        while end < len(steps) and (steps[end].teacher, steps[end].stage) == (steps[start].teacher, steps[start].stage):
            end += 1
        pool = [q for s in steps[start:end] for q in s.question_ids]
        random.Random(derived_seed("order", seed, steps[start].teacher, steps[start].stage)).shuffle(pool)
        for offset, s in enumerate(steps[start:end]):
            out.append(PlannedStep(s.step, s.teacher, s.stage, s.level,
                                   tuple(pool[offset * per_step:(offset + 1) * per_step])))
        start = end
    return out


def required_levels(spec: RunSpec, plan: Sequence[PlannedStep], question_ids: Sequence[str],
                    chain: TeacherChain) -> dict[int, dict[Ratio, list[str]]]:
    """teacher index -> level -> questions to generate there (``scheduled`` or ``all``)."""
    need: dict[int, dict[Ratio, set[str]]] = {i: {} for i in range(len(spec.teachers))}
    if spec.generation.bank_levels == "all":
        for teacher in need:
            for level in chain.levels(teacher):
                need[teacher][level] = set(question_ids)
    else:
        for step in plan:
            need[step.teacher].setdefault(step.level, set()).update(step.question_ids)
    order = {q: i for i, q in enumerate(question_ids)}
    return {t: {lvl: sorted(qs, key=order.__getitem__) for lvl, qs in sorted(levels.items(), reverse=True)}
            for t, levels in need.items()}
