"""The synthetic shapes task: deterministic, disjoint splits, short closed answers."""

from __future__ import annotations

import pytest

from masters.tasks.shapes import COLORS, LETTERS, QUESTION_TYPES, SHAPES, generate_shapes, shapes_vocabulary


@pytest.fixture(scope="module")
def splits():
    return generate_shapes(200, 50, 80, seed=0)


def _key(sample):
    return (sample.images[0].tobytes(), sample.question)


def test_same_seed_gives_identical_samples_and_pixels(splits):
    again = generate_shapes(200, 50, 80, seed=0)
    for split in splits:
        assert [s.id for s in splits[split]] == [s.id for s in again[split]]
        assert [(s.question, s.answer) for s in splits[split]] == [(s.question, s.answer) for s in again[split]]
        assert all(_key(a) == _key(b) for a, b in zip(splits[split], again[split]))


def test_other_seed_gives_other_samples(splits):
    other = generate_shapes(200, 50, 80, seed=1)
    assert [s.question for s in other["train"]] != [s.question for s in splits["train"]]


def test_split_sizes_and_no_shared_image_question_pair(splits):
    assert {k: len(v) for k, v in splits.items()} == {"train": 200, "validation": 50, "test": 80}
    keys = {split: {_key(s) for s in samples} for split, samples in splits.items()}
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    ids = [s.id for samples in splits.values() for s in samples]
    assert len(ids) == len(set(ids))


def test_test_split_does_not_depend_on_train_size(splits):
    bigger = generate_shapes(400, 50, 80, seed=0)
    assert [s.question for s in bigger["test"]] == [s.question for s in splits["test"]]


def test_answers_are_one_word_from_a_small_vocabulary(splits):
    vocab = set(shapes_vocabulary())
    for s in splits["train"]:
        assert len(s.answer.split()) == 1 and s.answer in vocab
        assert set(s.question.split()) <= vocab
        assert s.images[0].size == (32, 32) and s.images[0].mode == "RGB"


def test_multiple_choice_answers_are_letters_naming_the_right_option(splits):
    mc = [s for s in splits["train"] if s.metadata["form"] == "multiple_choice"]
    assert mc
    for s in mc:
        assert s.answer in LETTERS and s.choices is not None
        assert s.choices[LETTERS.index(s.answer)] == s.metadata["answer_text"]
        assert "answer with the letter" in s.question


def test_open_answers_match_the_scene():
    samples = generate_shapes(300, 0, 1, seed=3, forms=("open",), question_types=("color", "shape", "count"))["train"]
    for s in samples:
        scene = s.metadata["scene"]
        if s.metadata["kind"] == "count":
            assert int(s.answer) == len(scene)
        elif s.metadata["kind"] == "color":
            shape = s.question.split()[-2]
            assert [c for (sh, c, *_) in scene if sh == shape] == [s.answer]
            assert s.answer in COLORS
        else:
            color = s.question.split()[-3]
            assert [sh for (sh, c, *_) in scene if c == color] == [s.answer]
            assert s.answer in SHAPES


def test_knobs_restrict_forms_types_and_image_size():
    out = generate_shapes(20, 0, 1, seed=0, forms=("open",), question_types=("count",), image_size=48, max_shapes=4)
    assert all(s.choices is None and s.metadata["kind"] == "count" for s in out["train"])
    assert out["train"][0].images[0].size == (48, 48)
    assert set(QUESTION_TYPES) >= {"color", "shape", "count", "size", "position", "exists"}


def test_bad_max_shapes_is_rejected():
    with pytest.raises(ValueError, match="max_shapes"):
        generate_shapes(1, 0, 1, max_shapes=9)
