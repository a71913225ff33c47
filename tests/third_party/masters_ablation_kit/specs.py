"""The specs of every component in this package. Torch-free on purpose (listing and validating
never load torch); each ``implementation`` is imported only when a run builds the component."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from masters.api import (
    AdapterSpec,
    MaskerSpec,
    ObjectiveNeeds,
    ObjectiveSpec,
    RewardSpec,
    ScheduleSpec,
    TaskSpec,
)


class AblationMaskerSpec(MaskerSpec):
    """Zero the lowest-scoring weights of each input column (column units; |w| or signed value)."""

    implementation: ClassVar[str] = "masters_ablation_kit.masker:AblationColumnMasker"
    name: Literal["ablation_columns"] = "ablation_columns"
    score: Literal["magnitude", "value"] = Field(
        "magnitude", description="magnitude: mask the smallest |w| first; value: the most negative w first.")


class TwoLevelScheduleSpec(ScheduleSpec):
    """Two levels: the teacher at r_max for the first part of training, then unmasked (no step)."""

    implementation: ClassVar[str] = "masters_ablation_kit.schedule:TwoLevelSchedule"
    uses_step: ClassVar[bool] = False  # levels are r_max and 0: any r_max validates, step is unused
    name: Literal["two_level"] = "two_level"
    switch_at: float = Field(0.5, gt=0, lt=1, description="Training progress at which the mask drops to 0.")


class FirstWordRewardSpec(RewardSpec):
    """1 when the response's first word is the reference answer (case-insensitive), else 0."""

    implementation: ClassVar[str] = "masters_ablation_kit.reward:FirstWordReward"
    name: Literal["first_word"] = "first_word"


class RewardWeightedKDSpec(ObjectiveSpec):
    """JSD to the scheduled masked teacher, each response weighted by its accuracy reward."""

    implementation: ClassVar[str] = "masters_ablation_kit.objective:RewardWeightedKD"
    name: Literal["reward_weighted_kd"] = "reward_weighted_kd"
    floor: float = Field(0.1, ge=0, le=1, description="Weight of a response with reward 0.")

    def requirements(self) -> ObjectiveNeeds:
        return ObjectiveNeeds("bank", "schedule",
                              frozenset({"student_logprobs", "teacher_divergence", "accuracy_rewards"}))


class ColorBlocksTaskSpec(TaskSpec):
    """Synthetic VQA: one coloured square on a grey image; asks its colour or its side."""

    implementation: ClassVar[str] = "masters_ablation_kit.task:ColorBlocksTask"
    default_rewards: ClassVar[tuple[str, ...]] = ("first_word",)
    name: Literal["color_blocks"] = "color_blocks"
    n_train: int = Field(8, ge=1, description="Training questions.")
    n_validation: int = Field(0, ge=0, description="Validation questions.")
    n_test: int = Field(4, ge=0, description="Test questions.")
    image_sizes: tuple[int, ...] = Field((32, 48), min_length=1, description="Image sides in px, cycled.")
    seed: int = Field(0, description="Colours, sides and positions derive from it.")


class Idefics2AdapterSpec(AdapterSpec):
    """Idefics2: SigLIP-style vision tower, perceiver-resampler connector, Mistral text model."""

    implementation: ClassVar[str] = "masters_ablation_kit.adapter:Idefics2Adapter"
    model_types: ClassVar[tuple[str, ...]] = ("idefics2",)
    name: Literal["idefics2"] = "idefics2"
