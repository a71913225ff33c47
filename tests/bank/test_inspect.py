"""`masters bank inspect`: per-group numbers on a small hand-made scored bank, and the plot."""

from __future__ import annotations

import json

import pytest
import yaml

from masters.bank.importer import fingerprint_of, import_files, student_tokenizer
from masters.bank.inspect import group_stats
from masters.bank.scoring import accuracy_specs, score_key
from masters.bank.store import ResponseBank
from masters.cli import main
from masters.config import validate_run_spec

Q0, Q1 = "shapes-0-train-000000", "shapes-0-train-000001"


@pytest.fixture
def scored_bank(tiny_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps the table's headers at the default 80
    teacher, student = tiny_pair
    data = {"output_dir": str(tmp_path / "run"), "teacher": str(teacher), "student": str(student),
            "data": {"source": "shapes", "n_train": 4, "n_validation": 0, "n_test": 1},
            "generation": {"max_new_tokens": 4}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    spec = validate_run_spec(data)
    tok = student_tokenizer(spec)

    def ids(text, eos=True):
        return tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])

    t = spec.teachers[0].path
    table = [  # (source, teacher, level, question, sample, text, eos, score)
        ("teacher", t, 2000, Q0, 0, "red", True, 0.0),
        ("teacher", t, 2000, Q0, 1, "red", True, 0.0),
        ("teacher", t, 2000, Q1, 0, "blue left", True, 1.0),
        ("teacher", t, 2000, Q1, 1, "", True, 0.0),
        ("teacher", t, 0, Q0, 0, "blue", True, 1.0),
        ("teacher", t, 0, Q0, 1, "red blue green yellow", False, 0.0),  # 4 tokens, no EOS: truncated
        ("student", "", None, Q0, 0, "red", True, 1.0),
        ("student", "", None, Q0, 1, "green", True, None),  # unscored
    ]
    records = [{"source": s, "teacher": te, "level_bp": lv, "question_id": q, "sample_index": k, "response_text": x,
                "token_ids": ids(x, eos), "tokenizer_fingerprint": fingerprint_of(tok)}
               for s, te, lv, q, k, x, eos, _ in table]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    import_files(spec, [path])
    bank = ResponseBank(tmp_path / "run" / "bank")
    (key, reward), = accuracy_specs(spec.rewards)
    rid = {(r["source"], r["level_bp"], r["question_id"], r["sample_index"]): r["row_id"] for r in bank.table().to_pylist()}
    bank.write_scores(score_key(reward), [(rid[(s, lv, q, k)], v) for s, _, lv, q, k, _, _, v in table if v is not None])
    return spec, config, bank, key


def test_group_numbers(scored_bank):
    spec, _, bank, key = scored_bank
    from masters.bank.inspect import inspect_bank

    stats, summary = inspect_bank(spec)
    by = {(s.source, s.level_bp): s for s in stats}
    assert [(s.source, s.level_bp) for s in stats] == [("teacher", 2000), ("teacher", 0), ("student", None)]
    high, low, student = by["teacher", 2000], by["teacher", 0], by["student", None]
    assert (high.rows, high.questions, high.accuracy[key]) == (4, 2, 0.25)
    assert high.mean_tokens == 2.0 and high.truncation_rate == 0 and high.empty_rate == 0.25
    assert high.distinct_ratio == 0.75  # Q0: 1 of 2 distinct, Q1: 2 of 2
    assert high.distinct_2 == 0.75  # Q0: {(red, eos)} of 2 bigrams; Q1: 2 of 2 (the lone EOS has none)
    assert (low.accuracy[key], low.mean_tokens, low.truncation_rate, low.empty_rate) == (0.5, 3.0, 0.5, 0.0)
    assert (low.distinct_ratio, low.distinct_2) == (1.0, 1.0)
    assert student.accuracy[key] is None and student.scored[key] == 1  # partly scored: no mean shown
    written = json.loads(summary.read_text())
    assert summary.parent == bank.directory and written["rows"] == 8
    assert written["groups"][0]["accuracy"][key] == 0.25 and written["groups"][0]["mask_ratio"] == 0.2


def test_cli_prints_the_table_and_writes_the_plot(scored_bank, tmp_path, capsys):
    _, config, _, key = scored_bank
    png = tmp_path / "plots" / "degradation.png"
    assert main(["bank", "inspect", str(config), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "teacher @ 0.20" in out and "0.250" in out and "1/2 scored" in out and "distinct-2" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_plot_without_scores_exits_2_after_the_table(scored_bank, tmp_path, capsys):
    spec, config, bank, _ = scored_bank
    import shutil

    shutil.rmtree(bank.directory / "scores")
    assert main(["bank", "inspect", str(config), "--plot", str(tmp_path / "p.png")]) == 2
    captured = capsys.readouterr()
    assert "mean tokens" in captured.out and "masters score" in captured.err
    assert not (tmp_path / "p.png").exists()


def test_inspect_without_a_bank_exits_2(tiny_pair, tmp_path, capsys):
    teacher, student = tiny_pair
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "nothing"), "teacher": str(teacher),
                                      "student": str(student)}))
    assert main(["bank", "inspect", str(config)]) == 2
    assert "no bank.json" in capsys.readouterr().err


def test_distinct_measures_skip_questions_without_bigrams():
    rows = [{"row_id": f"r{i}", "source": "student", "teacher": "", "level_bp": None, "question_id": "q",
             "response_text": "a", "token_ids": [5], "num_tokens": 1, "truncated": False, "empty": False} for i in range(2)]
    (stat,) = group_stats(rows, {})
    assert stat.distinct_ratio == 0.5 and stat.distinct_2 != stat.distinct_2  # NaN: no bigram at all
