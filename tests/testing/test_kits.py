"""Each kit catches what it promises to catch: components that break one rule each, given to the
kits as spec instances (never registered), and the conformance-example mechanism."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import pytest

from masters.interfaces import ObjectiveLoss, ObjectiveNeeds
from masters.specs import ObjectiveSpec, RewardSpec, ScheduleSpec, TaskSpec
from masters.testing import ConformanceExample, MissingExampleError, NotApplicable
from masters.testing.backends import BackendConformanceError, run_backend_check
from masters.testing.objectives import ObjectiveConformanceError, check_objective, run_objective_check
from masters.testing.rewards import RewardConformanceError, check_reward, run_reward_check
from masters.testing.schedules import ScheduleConformanceError, check_schedule, run_schedule_check
from masters.testing.tasks import TaskConformanceError, check_task, run_task_check

# -- schedules -----------------------------------------------------------------------------------


class _Schedule:
    def __init__(self, spec, **_):
        from masters.schedules.shapes import Staircase

        self.spec = spec
        self.base = Staircase(spec)

    def levels(self):
        return self.base.levels()

    def stage_at(self, progress):
        return self.base.stage_at(progress)

    def ratio_at(self, progress):
        return self.levels()[self.stage_at(progress)]


class _Cyclic(_Schedule):
    """Restores, then masks again: stage goes 0, 1, .., 0, 1, .. and ends on the last."""

    def stage_at(self, progress):
        from fractions import Fraction

        m = len(self.levels())
        p = Fraction(progress)
        return m - 1 if p >= 1 else int(p * 2 * m) % m


class _FloatLevels(_Schedule):
    def levels(self):
        return tuple(float(r) for r in self.base.levels())


class _NoZero(_Schedule):
    def levels(self):
        return self.base.levels()[:-1]

    def stage_at(self, progress):
        return min(self.base.stage_at(progress), len(self.levels()) - 1)


class _WrongRatio(_Schedule):
    def ratio_at(self, progress):
        return self.levels()[0]


def _schedule_spec(impl: type, is_monotone: bool = True):
    class Spec(ScheduleSpec):
        name: Literal["test_schedule"] = "test_schedule"
        monotone: ClassVar[bool] = is_monotone

        def build(self, **context):
            return impl(self, **context)

    return Spec()


def test_builtin_schedule_report():
    assert check_schedule("staircase") == {c: "ok" for c in ("protocol", "levels", "stages", "monotone")}


@pytest.mark.parametrize("impl, check, message", [
    (_Cyclic, "monotone", "goes back"),
    (_FloatLevels, "levels", "not masters.ratios.Ratio"),
    (_NoZero, "levels", "do not end at 0"),
    (_WrongRatio, "stages", r"ratio_at\(.*\) is"),
])
def test_schedule_kit_catches(impl, check, message):
    with pytest.raises(ScheduleConformanceError, match=rf"\[{check}\].*{message}"):
        run_schedule_check(_schedule_spec(impl), check)


def test_a_schedule_declared_non_monotone_is_not_held_to_monotony():
    spec = _schedule_spec(_Cyclic, is_monotone=False)
    with pytest.raises(NotApplicable, match="monotone = False"):
        run_schedule_check(spec, "monotone")
    assert check_schedule(spec, checks=("monotone", "levels"))["monotone"].startswith("n/a")


# -- rewards -------------------------------------------------------------------------------------


class _BatchNormalised:
    """Min-max over the whole batch instead of within each group."""

    def __init__(self, spec, **_):
        self.spec = spec

    def __call__(self, teacher_logits, student_logits, response_mask, group_index):
        d = ((teacher_logits - student_logits) ** 2).mean(-1).mul(response_mask).sum(1).detach()
        return (d.max() - d) / (d.max() - d.min())


class _Attached(_BatchNormalised):
    def __call__(self, teacher_logits, student_logits, response_mask, group_index):
        from masters.rewards.distill import group_reverse_minmax

        d = (student_logits.softmax(-1)[..., 0] * response_mask).sum(1)
        return group_reverse_minmax(d.detach(), group_index) + 0 * d  # still attached to the graph


def _distill_spec(impl: type):
    class Spec(RewardSpec):
        signal: ClassVar[Literal["accuracy", "distillation"]] = "distillation"
        name: Literal["test_distill"] = "test_distill"

        def build(self, **context):
            return impl(self, **context)

    return Spec()


def test_builtin_distillation_reward_report():
    report = check_reward("jsd_distill")
    assert set(report) == {"protocol", "shape_and_range", "detached", "group_local", "permutation_equivariant",
                           "informative", "fast_path"} and set(report.values()) == {"ok"}


@pytest.mark.parametrize("impl, check, message", [
    (_BatchNormalised, "group_local", "normalise within each group"),
    (_Attached, "detached", "carry a gradient"),
])
def test_distillation_reward_kit_catches(impl, check, message):
    with pytest.raises(RewardConformanceError, match=rf"\[{check}\].*{message}"):
        run_reward_check(_distill_spec(impl), check)


def test_reward_without_the_fast_path_skips_that_check():
    with pytest.raises(NotApplicable, match="from_token_divergence"):
        run_reward_check(_distill_spec(_BatchNormalised), "fast_path")


def test_accuracy_reward_kit_catches_a_score_out_of_range():
    class Broken:
        def __init__(self, spec, **_):
            self.spec = spec

        def score(self, items):
            return [2.0] * len(items)

    class Spec(RewardSpec):
        name: Literal["test_broken"] = "test_broken"

        def build(self, **context):
            return Broken(self)

    with pytest.raises(RewardConformanceError, match=r"\[score_contract\].*float in \[0, 1\]"):
        run_reward_check(Spec(), "score_contract")


# -- objectives ----------------------------------------------------------------------------------


class _Objective:
    signals: ClassVar[frozenset[str]] = frozenset({"student_logprobs"})

    def __init__(self, spec, **_):
        self.spec = spec

    def total(self, inputs):
        return -(inputs.student_logprobs * inputs.mask).sum() / inputs.mask.sum()

    def loss(self, inputs):
        total = self.total(inputs)
        return ObjectiveLoss(total, {"loss/total": float(total.detach())})


class _ReadsReference(_Objective):
    def total(self, inputs):
        total = super().total(inputs)
        if inputs.reference_logprobs is not None:  # used when present, never declared
            total = total + (inputs.reference_logprobs * inputs.mask).mean()
        return total


class _IgnoresMask(_Objective):
    def total(self, inputs):
        return -inputs.student_logprobs.mean()


class _NoGradient(_Objective):
    def total(self, inputs):
        return super().total(inputs).detach()


class _NoTotalMetric(_Objective):
    def loss(self, inputs):
        return ObjectiveLoss(self.total(inputs), {"loss/nll": 1.0})


def _objective_spec(impl: type, signals=frozenset({"student_logprobs"})):
    class Spec(ObjectiveSpec):
        name: Literal["test_objective"] = "test_objective"

        def requirements(self):
            return ObjectiveNeeds("reference", "none", frozenset(signals))

        def build(self, **context):
            return impl(self, **context)

    return Spec()


def test_a_plain_objective_passes():
    report = check_objective(_objective_spec(_Objective))
    assert set(report.values()) == {"ok"}


@pytest.mark.parametrize("impl, check, message", [
    (_ReadsReference, "undeclared_ignored", "reference_logprobs"),
    (_IgnoresMask, "padding_ignored", "padded positions changed the loss"),
    (_NoGradient, "loss", "no gradient"),
    (_NoTotalMetric, "loss", "lack 'loss/total'"),
])
def test_objective_kit_catches(impl, check, message):
    with pytest.raises(ObjectiveConformanceError, match=rf"\[{check}\].*{message}"):
        run_objective_check(_objective_spec(impl), check)


# -- tasks ---------------------------------------------------------------------------------------


def _samples(prefix: str, n: int):
    from masters.data.types import VQASample

    return [VQASample(f"{prefix}{i}", (), f"question {i}?", "yes") for i in range(n)]


class _Task:
    def __init__(self, spec, **_):
        self.spec = spec

    def splits(self):
        return {"train": _samples("a", 4), "validation": _samples("b", 2), "test": _samples("c", 2)}


class _SharedIds(_Task):
    def splits(self):
        return {"train": _samples("a", 4), "validation": _samples("a", 2), "test": _samples("c", 2)}


class _Shuffled(_Task):
    def splits(self):
        import random

        train = _samples("a", 8)
        random.shuffle(train)
        return {"train": train, "validation": [], "test": []}


class _TwoKeys(_Task):
    def splits(self):
        return {"train": _samples("a", 4), "test": _samples("c", 2)}


def _task_spec(impl: type):
    class Spec(TaskSpec):
        name: Literal["test_task"] = "test_task"

        def build(self, **context):
            return impl(self, **context)

    return Spec()


@pytest.mark.parametrize("impl, check, message", [
    (_SharedIds, "unique_ids", "id 'a0' is in 'train' and in 'validation'"),
    (_Shuffled, "deterministic", "two builds of the same spec differ"),
    (_TwoKeys, "splits", "expected exactly"),
])
def test_task_kit_catches(impl, check, message):
    with pytest.raises(TaskConformanceError, match=rf"\[{check}\].*{message}"):
        run_task_check(_task_spec(impl), check)


class FileTaskSpec(TaskSpec):
    """A task reading a JSON file: its spec class writes a small one for the kit."""

    implementation: ClassVar[str] = "masters.tasks.builtin:LlavaJsonTask"
    name: Literal["test_file_task"] = "test_file_task"
    path: str
    image_root: str = "."
    validation_fraction: float = 0.25
    test_fraction: float = 0.25


def test_a_task_with_a_required_path_and_no_example_fails_with_the_fix():
    with pytest.raises(MissingExampleError, match=r"required field\(s\) path.*conformance_example"):
        run_task_check(FileTaskSpec, "splits")


def test_a_conformance_example_writes_its_dataset_into_the_kit_directory():
    seen: list[Any] = []

    class WithExample(FileTaskSpec):
        @classmethod
        def conformance_example(cls, tmp_dir):
            seen.append(tmp_dir)
            records = [{"id": str(i), "conversations": [{"from": "human", "value": f"{i} + 1?"},
                                                        {"from": "gpt", "value": str(i + 1)}]} for i in range(12)]
            (tmp_dir / "data.json").write_text(json.dumps(records))
            return {"path": str(tmp_dir / "data.json")}

    assert set(check_task(WithExample).values()) == {"ok"}
    assert len(seen) == 1 and not seen[0].exists()  # one example per run, removed afterwards


def test_an_example_may_carry_build_context():
    from masters.testing.examples import resolve_spec

    class WithContext(FileTaskSpec):
        conformance_example: ClassVar[Any] = ConformanceExample({"path": "x.json"}, {"device": "cpu"})

    spec, context = resolve_spec("task", WithContext)
    assert spec.path == "x.json" and context == {"device": "cpu"}


# -- backends ------------------------------------------------------------------------------------


def _backend_spec(session_cls=None, capabilities=None):
    from masters.backends.hf import HFBackend, HFSession
    from masters.specs import BackendSpec

    class Backend(HFBackend):
        def open(self, model, *, vocab_limit, masker=None, levels=()):
            from masters.adapters.resolve import resolve_adapter

            return (session_cls or HFSession)(resolve_adapter(model), vocab_limit=vocab_limit, masker=masker,
                                              levels=levels)

    if capabilities is not None:
        Backend.capabilities = capabilities

    class Spec(BackendSpec):
        name: Literal["test_backend"] = "test_backend"

        def row_identity(self):
            return None

        def build(self, **context):
            return Backend(self, **context)

    return Spec()


def _one_stream_session():
    from masters.backends.hf import HFSession

    class OneStream(HFSession):
        """Samples every row from the batch's first seed: rows depend on their neighbours."""

        def generate(self, samples, seeds, settings):
            return super().generate(samples, [seeds[0]] * len(seeds), settings)

    return OneStream


def _no_vocab_limit_session():
    from masters.backends.hf import HFSession

    class NoLimit(HFSession):
        def __init__(self, adapter, *, vocab_limit, **kwargs):
            super().__init__(adapter, vocab_limit=10**6, **kwargs)

    return NoLimit


def test_backend_kit_catches_rows_that_depend_on_their_batch():
    with pytest.raises(BackendConformanceError, match=r"\[per_row_seeds\]"):
        run_backend_check(_backend_spec(_one_stream_session()), "per_row_seeds")


def test_backend_kit_catches_ids_past_the_vocabulary_limit():
    with pytest.raises(BackendConformanceError, match=r"\[vocabulary\].*at or above vocab_limit"):
        run_backend_check(_backend_spec(_no_vocab_limit_session()), "vocabulary")


def test_backend_kit_catches_undeclared_capabilities():
    with pytest.raises(BackendConformanceError, match=r"\[capabilities\].*not masters.interfaces.BackendCapabilities"):
        run_backend_check(_backend_spec(capabilities={"per_row_seeds": True}), "capabilities")


def test_a_backend_without_per_row_seeds_is_not_held_to_them():
    from masters.interfaces import BackendCapabilities

    spec = _backend_spec(capabilities=BackendCapabilities(per_row_seeds=False, rows_equal_hf=True))
    with pytest.raises(NotApplicable, match="per_row_seeds=False"):
        run_backend_check(spec, "per_row_seeds")


def test_checks_are_named():
    for run in (run_schedule_check, run_reward_check, run_objective_check, run_task_check, run_backend_check):
        with pytest.raises(ValueError, match="unknown .* check 'nope'"):
            run("anything", "nope")
