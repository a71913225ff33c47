"""The shapes_reason capacity models: built pass by pass with a warm-up stage, cached by their
settings, and diagnosed by question kind (what calibrating gate G1 reads)."""

from __future__ import annotations

import json

import pytest
import torch

from masters.engine.capacity import GapSpec, build_models
from masters.engine.capacity_report import diagnose, prior_accuracy


def tiny_spec(tmp_path) -> GapSpec:
    student = {"dims": {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "vision_hidden": 32,
                        "vision_layers": 1, "pad_vocab_to": 8},
               "n_train": 8, "passes": 2, "batch_size": 4, "max_new_tokens": 4,
               "warmup": [{"question_kinds": ["cell"], "n_train": 4, "passes": 1}]}
    return GapSpec.model_validate({"task": {"name": "shapes_reason", "n_validation": 24, "n_test": 1},
                                   "n_eval": 6, "cache_dir": str(tmp_path / "cache"), "student": student})


def test_a_model_is_trained_pass_by_pass_cached_and_diagnosed_by_kind(tmp_path, capsys):
    spec = tiny_spec(tmp_path)
    said: list[str] = []
    paths = build_models(spec, tmp_path / "out", ("student",), say=said.append)
    home = paths["student"].resolve().parent
    curve = json.loads((paths["student"] / "plateau.json").read_text())
    assert curve["steps"] == [2, 4] and len(curve["accuracy"]) == 2 and curve["n"] == 6
    assert curve["warmup"][0]["question_kinds"] == ["cell"] and curve["warmup"][0]["steps"] == 1
    assert (home / "passes" / "pass-1").is_dir() and (home / "done.json").exists()  # the curriculum control's checkpoint
    assert not list(home.glob("warmup-*")) and not list(home.glob("pass-*"))

    said.clear()
    report = diagnose(spec, tmp_path / "out", ("student",), say=said.append)
    assert said == [f"  student: reusing {paths['student'].resolve()}"]  # cached: nothing trained again
    rows = report["student"]
    assert {r["kind"] for r in rows} <= {"count", "count_and", "compare", "difference", "relation"} and rows
    assert all(0.0 <= r["validation"] <= 1.0 and r["n"] <= 6 for r in rows)
    assert "by question kind" in capsys.readouterr().out

    changed = spec.model_copy(update={"student": spec.student.model_copy(update={"passes": 3})})
    from masters.engine.capacity import model_key

    assert model_key(changed, "student") != model_key(spec, "student")  # another schedule, another cache entry


def test_prior_is_the_commonest_training_answer():
    class S:
        def __init__(self, answer):
            self.metadata = {"answer_text": answer}

    train = [S("1"), S("1"), S("2")]
    assert prior_accuracy(train, [S("1"), S("3"), S("1"), S("2")]) == pytest.approx(0.5)


def test_more_passes_extend_the_cached_model_equal_to_a_fresh_run(tmp_path):
    from safetensors.torch import load_file

    spec = tiny_spec(tmp_path)
    short = build_models(spec, tmp_path / "out", ("student",), say=lambda t: None)["student"].resolve()
    longer = spec.model_copy(update={"student": spec.student.model_copy(update={"passes": 3})})
    said: list[str] = []
    extended = build_models(longer, tmp_path / "out", ("student",), say=said.append)["student"].resolve()
    assert any("extending" in line for line in said) and not any("warm-up" in line for line in said)
    before = json.loads((short / "plateau.json").read_text())
    after = json.loads((extended / "plateau.json").read_text())
    assert after["steps"] == [2, 4, 6] and after["accuracy"][:2] == before["accuracy"]
    assert after["warmup"] == before["warmup"]
    assert sorted(p.name for p in (extended.parent / "passes").iterdir()) == ["pass-1", "pass-2"]

    fresh_spec = longer.model_copy(update={"cache_dir": str(tmp_path / "fresh-cache")})
    fresh = build_models(fresh_spec, tmp_path / "fresh", ("student",), say=lambda t: None)["student"].resolve()
    a, b = load_file(str(extended / "model.safetensors")), load_file(str(fresh / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # continuing = running them all
