"""Built-in objective specs: the Masters objective and the baselines the same trainer runs.

Each declares what it needs from the training step (:class:`masters.interfaces.ObjectiveNeeds`);
the trainer computes exactly that. Defaults are the paper's (method.md section 6).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from masters.interfaces import ObjectiveNeeds
from masters.specs import ObjectiveSpec

# How responses with a negative advantage enter the policy term (see masters.objectives.losses).
NegativeAdvantages = Literal["full", "probability_weighted", "zero", "topr"]

_DISTILL_WEIGHT = Field(1.0, ge=0, description="Weight of the JSD distillation loss.")


class MastersObjectiveSpec(ObjectiveSpec):
    """The Masters objective (the paper's): GRPO-style policy term over banked groups + KL + JSD loss.

    ``R = sum of weighted rewards`` (offline accuracy rewards plus the in-step distillation reward
    of ``rewards``), group-normalised advantages, ``loss = policy + beta * k3 KL to the initial
    student + distill_loss_weight * JSD(masked teacher, student)``; the teacher follows the schedule.
    A fixed mask is this objective with a ``constant`` schedule; dropping the distillation reward
    is this objective without ``jsd_distill`` in ``rewards``.
    """

    name: Literal["masters"] = "masters"
    implementation: ClassVar[str] = "masters.objectives.builtin:MastersObjective"
    negative_advantages: NegativeAdvantages = Field(
        "full", description="How responses with a negative advantage enter the policy term: full (the paper's "
        "-A log p), probability_weighted (each token's push-down scaled by the student's probability of it, so "
        "it fades as that probability goes to 0), zero (negative advantages set to 0: reinforce only), topr "
        "(Tapered Off-Policy REINFORCE: a negative-advantage response weighted by the stopped, clipped sequence "
        "ratio min(1, pi/mu), mu the generator's behaviour log-probs stored in the bank)."
    )
    advantage_shift: float = Field(
        0.0, description="delta of asymmetric REINFORCE: the baseline is the group mean minus delta (in reward "
        "units, before any std division), so positives are pushed up more than negatives down. 0: the paper's.")
    advantage_std: bool = Field(
        True, description="Divide by the group's reward std (GRPO, the paper's); false is Dr. GRPO (centred only).")
    beta: float = Field(0.1, ge=0, description="KL weight to the reference (initial) student, k3 estimator.")
    distill_loss_weight: float = _DISTILL_WEIGHT

    def requirements(self) -> ObjectiveNeeds:
        signals = {"student_logprobs", "teacher_divergence", "accuracy_rewards", "distillation_reward",
                   "group_index"}
        if self.beta > 0:
            signals.add("reference_logprobs")
        if self.negative_advantages == "topr":
            signals.add("behaviour_logprobs")
        return ObjectiveNeeds("bank", "schedule", frozenset(signals))


class _JSDOnlyObjectiveSpec(ObjectiveSpec):
    """The JSD distillation loss alone; subclasses say which responses and which teacher level."""

    implementation: ClassVar[str] = "masters.objectives.builtin:DistillationObjective"
    responses: ClassVar[Literal["bank", "reference"]] = "bank"
    teacher: ClassVar[Literal["schedule", "unmasked"]] = "schedule"
    distill_loss_weight: float = _DISTILL_WEIGHT

    def requirements(self) -> ObjectiveNeeds:
        return ObjectiveNeeds(self.responses, self.teacher, frozenset({"student_logprobs", "teacher_divergence"}))


class ProgressiveKDObjectiveSpec(_JSDOnlyObjectiveSpec):
    """Mask-progressive KD: the JSD loss to the scheduled masked teacher on banked groups, no RL terms."""

    name: Literal["progressive_kd"] = "progressive_kd"


class NaiveKDObjectiveSpec(_JSDOnlyObjectiveSpec):
    """Naive distillation: the JSD loss to the unmasked teacher on the data's reference answers."""

    name: Literal["naive_kd"] = "naive_kd"
    responses: ClassVar[Literal["bank", "reference"]] = "reference"
    teacher: ClassVar[Literal["schedule", "unmasked"]] = "unmasked"


class SFTObjectiveSpec(ObjectiveSpec):
    """Supervised fine-tuning on the data's reference answers (mean token NLL); never loads a teacher."""

    name: Literal["sft"] = "sft"
    implementation: ClassVar[str] = "masters.objectives.builtin:SFTObjective"

    def requirements(self) -> ObjectiveNeeds:
        return ObjectiveNeeds("reference", "none", frozenset({"student_logprobs"}))


BUILTIN_OBJECTIVE_SPECS: tuple[type[ObjectiveSpec], ...] = (
    MastersObjectiveSpec, ProgressiveKDObjectiveSpec, NaiveKDObjectiveSpec, SFTObjectiveSpec,
)
