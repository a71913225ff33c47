"""masters probe: the calibration gates, and that today's shapes task fails G1-G3 (one-word answers,
no measured capacity gap, a masked teacher no closer to the student)."""

from __future__ import annotations

import json

import pytest
import yaml

from masters.config import validate_run_spec
from masters.engine.probe import failure, plateau_gain, run_probe


def shapes_config(tiny_pair, out) -> dict:
    teacher, student = tiny_pair
    return {"output_dir": str(out), "teacher": str(teacher), "student": str(student),
            "task": {"name": "shapes", "n_train": 8, "n_validation": 48, "n_test": 1},
            "rewards": ["exact_match", "jsd_distill"],
            "generation": {"max_new_tokens": 4}}


@pytest.fixture(scope="module")
def shapes_report(tiny_pair, tmp_path_factory):
    spec = validate_run_spec(shapes_config(tiny_pair, tmp_path_factory.mktemp("probe")))
    # small sizes keep the test cheap; the gates' thresholds are the real ones
    return run_probe(spec, min_validation=48, n_levels=32, n_level_accuracy=16, n_groups=8, levels=(0.1, 0.2),
                     batch_size=32)


def test_g1_to_g3_fail_on_todays_shapes_task(shapes_report):
    failed = {g.name for g in shapes_report.failed}
    assert {"G1", "G2", "G3"} <= failed, [(g.name, g.value, g.detail) for g in shapes_report.gates]
    g3 = shapes_report.gate("G3")
    # one-word answers: the answer token (the first token) carries the span, or there is no span at all
    assert "answer" in g3.detail and g3.fix
    error = failure(shapes_report)
    assert error.exit_code == 2 and "G1 (capacity gap) failed: value" in error.message and "shrink the student" in error.fix
    assert {r["masker"] for r in shapes_report.levels} == {"(unmasked)", "magnitude", "random"}


def test_plateau_gain_and_its_interval():
    gain, se = plateau_gain({"steps": [100, 200, 300, 400], "accuracy": [0.3, 0.4, 0.5, 0.52], "n": 2000})
    assert gain == pytest.approx(0.02) and abs(gain) <= 1.96 * se  # flat within noise: at the plateau
    gain, se = plateau_gain({"steps": [100, 200, 300, 400], "accuracy": [0.3, 0.4, 0.45, 0.55], "n": 2000})
    assert abs(gain) > 1.96 * se  # still climbing


def test_cli_prints_the_gates_and_exits_2(tiny_pair, tmp_path, capsys, monkeypatch, shapes_report):
    import masters.engine.probe as probe
    from masters.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(shapes_config(tiny_pair, tmp_path / "run")))
    monkeypatch.setattr(probe, "run_probe", lambda spec, **kw: shapes_report)  # the measurement is tested above
    assert main(["probe", str(config), "--out", str(tmp_path / "p")]) == 2
    captured = capsys.readouterr()
    assert "calibration gates" in captured.out and "G1" in captured.err and "fix" in captured.err
    assert (tmp_path / "p" / "probe.png").exists()
    assert set(json.loads((tmp_path / "p" / "probe.json").read_text())["failed"]) >= {"G1", "G2", "G3"}


def test_g1_names_the_teacher_when_the_student_is_at_the_answer_prior():
    from masters.engine.probe import _gate_g1, answer_prior

    class S:
        def __init__(self, kind, answer):
            self.metadata = {"kind": kind, "answer_text": answer}

    train = [S("count", "1"), S("count", "1"), S("compare", "no")]
    validation = [S("count", "1"), S("count", "2"), S("compare", "no"), S("relation", "red")]
    assert answer_prior(train, validation) == pytest.approx(0.5)  # 1 + 0 + 1 + 0 (relation never trained) of 4
    curve = {"steps": [1, 2, 3, 4], "accuracy": [0.5, 0.5, 0.5, 0.5], "n": 2000}
    at_prior = _gate_g1(0.62, 0.51, 2000, 2000, curve, prior=0.5)
    assert not at_prior.passed and "answer prior" in at_prior.detail and "train the teacher longer" in at_prior.fix
    above = _gate_g1(0.62, 0.55, 2000, 2000, curve, prior=0.5)
    assert "shrink the student" in above.fix and "answer prior" not in above.detail
    assert answer_prior([S("count", "1")], [type("T", (), {"metadata": {"kind": "count"}})()]) is None
