"""Hook implementations masters calls after loading the ``masters_ablation_kit`` entry point.

Torch-free: only the spec classes are imported here.
"""

from __future__ import annotations

from masters.api import hookimpl

from masters_ablation_kit.specs import (
    AblationMaskerSpec,
    ColorBlocksTaskSpec,
    FirstWordRewardSpec,
    Idefics2AdapterSpec,
    RewardWeightedKDSpec,
    TwoLevelScheduleSpec,
)


@hookimpl
def masters_register_maskers(register):
    register(AblationMaskerSpec)


@hookimpl
def masters_register_schedules(register):
    register(TwoLevelScheduleSpec)


@hookimpl
def masters_register_rewards(register):
    register(FirstWordRewardSpec)


@hookimpl
def masters_register_objectives(register):
    register(RewardWeightedKDSpec)


@hookimpl
def masters_register_tasks(register):
    register(ColorBlocksTaskSpec)


@hookimpl
def masters_register_adapters(register):
    register(Idefics2AdapterSpec)
