"""{{plugin_name}}: found as an installed distribution, loaded by name, conformant and correct."""

from __future__ import annotations

import subprocess
import sys

import pytest

DISTRIBUTION = "{{plugin_name}}"
ENTRY_POINT = "{{component}}"
COMPONENT = "{{component}}"


def test_entry_point_is_in_installed_metadata(distribution):
    from importlib import metadata

    (ep,) = [ep for ep in metadata.entry_points(group="masters") if ep.name == ENTRY_POINT]
    assert ep.value == "{{package}}.hooks"
    assert ep.dist.metadata["Name"] == DISTRIBUTION


def test_allow_listed_plugin_registers_the_component(components):
    origin = components.registry("reward").origin(COMPONENT)
    assert origin.distribution == DISTRIBUTION
    assert origin.plugin == ENTRY_POINT
    assert not components.failures


@pytest.mark.masters_conformance(distribution=DISTRIBUTION)
def test_conformance(distribution, masters_case):
    """masters' conformance kits, one test per check of every component this distribution registers
    (``test_conformance[reward:{{component}}:score_contract]``, ...); a component added to hooks.py is
    checked with no new test, and a package that registers nothing fails here instead of passing."""
    masters_case.run()


def test_component_is_usable_by_name_in_a_run_spec(components):
    from masters.api import validate_run_spec

    run = validate_run_spec(
        {"teacher": "ckpt/teacher", "student": "ckpt/student",
         "rewards": [{"name": COMPONENT, "max_words": 8}, "jsd_distill"]}
    )
    assert run.rewards[0].name == COMPONENT
    assert run.rewards[0].max_words == 8


def test_misspelt_field_is_rejected(components):
    from masters.api import SpecError
    from masters.api import validate_component

    with pytest.raises(SpecError, match="max_word"):
        validate_component("reward", {"name": COMPONENT, "max_word": 3})


def test_built_reward_scores_responses(components):
    from masters.api import AccuracyReward, ScoredResponse
    from masters.api import validate_component

    reward = validate_component("reward", {"name": COMPONENT, "max_words": 8}).build()
    assert isinstance(reward, AccuracyReward)
    items = [
        ScoredResponse("What colour is the square?", "The square is Red.", "red"),
        ScoredResponse("What colour is the square?", "It is blue.", "red"),
        ScoredResponse("What colour is the square?", "reddish", "red"),  # whole words only
        ScoredResponse("Where is it?", "top left, in the corner", "top left"),
        ScoredResponse("What colour?", "red blue green yellow black white pink grey brown", "red"),
        ScoredResponse("What colour?", "red", ""),  # no reference: cannot score
    ]
    assert reward.score(items) == [1.0, 0.0, 0.0, 1.0, 0.0, None]


def test_spec_module_does_not_import_torch(distribution):
    code = "import sys, {{package}}.hooks; assert 'torch' not in sys.modules, 'spec imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
