"""The shapes_reason task: deterministic, multi-modal traces of 8-24 tokens, and its two rule rewards."""

from __future__ import annotations

import collections

import pytest

from masters.interfaces import ScoredResponse
from masters.tasks.shapes_reason import (TEMPLATES, faithfulness, final_answer, generate_shapes_reason,
                                         scene_from_metadata, shapes_reason_vocabulary)


@pytest.fixture(scope="module")
def splits():
    return generate_shapes_reason(300, 100, 100, seed=3)


def test_deterministic_by_seed_and_splits_disjoint(splits):
    again = generate_shapes_reason(300, 100, 100, seed=3)
    for split in splits:
        assert [(s.id, s.question, s.answer) for s in splits[split]] == [(s.id, s.question, s.answer) for s in again[split]]
        assert [s.images[0].tobytes() for s in splits[split][:5]] == [s.images[0].tobytes() for s in again[split][:5]]
    keys = {split: {(str(s.metadata["scene"]), s.question) for s in items} for split, items in splits.items()}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]


def test_scenes_templates_kinds_and_lengths(splits):
    from masters.models import build_tokenizer

    train = splits["train"]
    assert train[0].images[0].size == (48, 48)
    assert {len(s.metadata["scene"]) for s in train} <= set(range(3, 7))
    assert set(collections.Counter(s.metadata["template"] for s in train)) == set(TEMPLATES)  # >= 3 templates
    assert len({s.metadata["kind"] for s in train}) == 5
    tok = build_tokenizer(words=shapes_reason_vocabulary())
    unk = tok.unk_token_id
    for s in train + splits["validation"]:
        ids = tok(s.answer, add_special_tokens=False)["input_ids"]
        assert 8 <= len(ids) <= 24 and unk not in ids, s.answer
        assert unk not in tok(s.question, add_special_tokens=False)["input_ids"], s.question


def test_the_shapes_tokenizer_is_unchanged():
    from masters.models import build_tokenizer
    from masters.tasks.shapes import shapes_vocabulary

    assert build_tokenizer().get_vocab() == build_tokenizer(words=shapes_vocabulary()).get_vocab()


def test_references_are_faithful_and_corrupted_traces_are_not(splits):
    for s in splits["train"]:
        assert faithfulness(s.answer, s.metadata) == 1.0, s.answer
        assert final_answer(s.answer) == s.metadata["answer_text"]
        scene_from_metadata(s.metadata)  # the scene is recoverable
    count = next(s for s in splits["train"] if s.metadata["kind"] == "count" and s.metadata["template"] == "list")
    words = count.answer.split()
    n = words.index("=") + 1
    wrong_count = " ".join(words[:n] + [str(int(words[n]) + 1)] + words[n + 1:])
    assert faithfulness(wrong_count, count.metadata) < 1.0
    assert faithfulness("answer : 3", count.metadata) == 0.0
    assert faithfulness("", count.metadata) == 0.0


def test_final_answer_and_trace_faithfulness_rewards(splits):
    from masters.config import validate_run_spec
    from masters.rewards.testing import check_accuracy_reward

    s = splits["train"][0]
    spec = validate_run_spec({"output_dir": "x", "teacher": "t", "student": "s", "task": {"name": "shapes_reason"}})
    assert [r.name for r in spec.rewards] == ["final_answer", "jsd_distill"]  # the task's default accuracy reward
    final = spec.rewards[0].build()
    item = lambda response: ScoredResponse(question=s.question, response=response, reference=s.answer,  # noqa: E731
                                           metadata=dict(s.metadata))
    assert final.score([item(s.answer), item("junk answer : " + s.metadata["answer_text"]), item("no answer")]) == [1.0, 1.0, 0.0]
    faithful = validate_run_spec({"output_dir": "x", "teacher": "t", "student": "s", "task": {"name": "shapes_reason"},
                                  "rewards": ["final_answer", {"name": "trace_faithfulness", "weight": 0}]}).rewards[1]
    assert faithful.build().score([item(s.answer), item("answer : x")]) == [1.0, 0.0]
    check_accuracy_reward(final)
    check_accuracy_reward(faithful.build())


def test_cell_questions_are_a_one_step_perception_stage_off_by_default(splits):
    """`cell` asks an attribute of the object at a named cell (the capacity models' warm-up); the
    task's own questions never include it unless asked."""
    assert "cell" not in {s.metadata["kind"] for s in splits["train"]}
    cells = generate_shapes_reason(60, 10, 10, seed=3, question_kinds=("cell",))["train"]
    vocabulary = set(shapes_reason_vocabulary())
    assert set(collections.Counter(s.metadata["template"] for s in cells)) == set(TEMPLATES)
    for s in cells:
        row, col = s.metadata["program"]["cell"]
        target = next(o for o in scene_from_metadata(s.metadata) if (o.row, o.col) == (row, col))
        assert s.metadata["answer_text"] == target.get(s.metadata["program"]["ask"])
        assert faithfulness(s.answer, s.metadata) == 1.0 and final_answer(s.answer) == s.metadata["answer_text"]
        assert set(s.question.split()) | set(s.answer.split()) <= vocabulary  # the tokenizer is unchanged
    wrong = next(s for s in cells if s.metadata["template"] == "list")
    attrs = {"color": "red", "shape": "circle", "size": "big"}
    target = next(o for o in scene_from_metadata(wrong.metadata) if [o.row, o.col] == wrong.metadata["program"]["cell"])
    other = {a: v if target.get(a) != v else {"red": "blue", "circle": "square", "big": "small"}[v]
             for a, v in attrs.items()}
    mention = f"{other['size']} {other['color']} {other['shape']}"
    assert faithfulness(f"top left : {mention} . answer : x", wrong.metadata) < 1.0
