"""The bank store: atomic shards, resumable appends, identity checks, clear corruption errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from masters.bank.schema import row_id
from masters.bank.store import ResponseBank
from masters.errors import DataError, MastersError


def make_row(q: int, s: int, level_bp: int | None = 2000, source: str = "teacher") -> dict:
    teacher = "t0" if source == "teacher" else ""
    return {
        "row_id": row_id(source, teacher, level_bp, f"q{q}", s), "source": source, "teacher": teacher,
        "level_bp": level_bp, "question_id": f"q{q}", "sample_index": s, "response_text": f"answer {q}",
        "token_ids": [5, 6, 2], "num_tokens": 3, "truncated": False, "empty": False, "seed": q * 100 + s,
        "generation": json.dumps({"temperature": 1.0}), "stage_hash": "h1",
    }


def open_bank(path, **kw):
    return ResponseBank.open(path, stage_hash=kw.pop("stage_hash", "h1"),
                             tokenizer_fingerprint=kw.pop("fp", "tok1"), **kw)


def test_append_skips_rows_already_banked(tmp_path):
    bank = open_bank(tmp_path)
    assert bank.append([make_row(0, 0), make_row(0, 1)]) == 2
    assert bank.append([make_row(0, 1), make_row(1, 0), make_row(1, 0)]) == 1
    reopened = open_bank(tmp_path)
    assert len(reopened) == 3 and reopened.table().num_rows == 3
    assert reopened.table().column("row_id").to_pylist() == sorted(reopened.keys())


def test_student_rows_have_no_level(tmp_path):
    bank = open_bank(tmp_path)
    bank.append([make_row(0, 0, level_bp=None, source="student")])
    assert bank.table().column("level_bp").to_pylist() == [None]
    assert bank.table().column("row_id").to_pylist() == ["student/-/-/q0/0"]


def test_other_stage_hash_or_tokenizer_is_refused_unless_forced(tmp_path):
    open_bank(tmp_path).append([make_row(0, 0)])
    with pytest.raises(MastersError, match="other generation settings") as info:
        open_bank(tmp_path, stage_hash="h2")
    assert "--force" in info.value.render()
    with pytest.raises(MastersError, match="other tokenizer"):
        open_bank(tmp_path, fp="tok2")
    bank = open_bank(tmp_path, stage_hash="h2", force=True)
    assert len(bank) == 1 and bank.manifest()["forced"] == ["h2"]


def test_corrupt_shard_names_the_file_and_the_fix(tmp_path):
    bank = open_bank(tmp_path)
    bank.append([make_row(0, 0)])
    shard = bank.shard_paths()[0]
    shard.write_bytes(b"not parquet")
    with pytest.raises(DataError) as info:
        open_bank(tmp_path).keys()
    assert str(shard) in info.value.render() and "delete this file" in info.value.render()


def test_leftover_temporaries_are_cleaned_and_ignored(tmp_path):
    bank = open_bank(tmp_path)
    bank.append([make_row(0, 0)])
    (bank.shards / "part-dead.parquet.tmp").write_bytes(b"half a shard")
    bank = open_bank(tmp_path)
    assert len(bank) == 1 and not list(bank.shards.glob("*.tmp"))


def test_scores_are_keyed_by_row_and_resumable(tmp_path):
    bank = open_bank(tmp_path)
    bank.append([make_row(0, 0), make_row(0, 1)])
    assert bank.write_scores("exact_match-abc", [("teacher/t0/2000/q0/0", 1.0)]) == 1
    assert bank.write_scores("exact_match-abc", [("teacher/t0/2000/q0/0", 0.0), ("teacher/t0/2000/q0/1", 0.0)]) == 1
    assert bank.scores("exact_match-abc") == {"teacher/t0/2000/q0/0": 1.0, "teacher/t0/2000/q0/1": 0.0}


def test_killed_writer_resumes_without_loss_or_duplicates(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from masters.bank.store import ResponseBank
        from masters.engine.faults import kill_point
        from rows import make_row
        bank = ResponseBank.open({str(tmp_path / 'bank')!r}, stage_hash="h1", tokenizer_fingerprint="tok1")
        written = 0
        for q in range(6):
            pending = [make_row(q, s) for s in range(3)]
            written += bank.append(pending)
            kill_point("bank-test", written)
    """)
    (tmp_path / "rows.py").write_text(textwrap.dedent(f"import json\nfrom masters.bank.schema import row_id\n") +
                                      textwrap.dedent(__import__("inspect").getsource(make_row)))
    env = {**__import__("os").environ, "MASTERS_TEST_KILL_AFTER": "bank-test:7"}
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert first.returncode == 137, first.stderr
    assert len(ResponseBank(tmp_path / "bank").keys()) == 9  # three whole shards, nothing partial
    env.pop("MASTERS_TEST_KILL_AFTER")
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    bank = ResponseBank(tmp_path / "bank")
    assert len(bank) == 18 and bank.table().num_rows == 18
