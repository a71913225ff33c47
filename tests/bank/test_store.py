"""The bank store: atomic shards, resumable appends, identity checks, clear corruption errors."""

from __future__ import annotations

import json
import os
import shutil
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
    dead = bank.shards / ".part-0123456789ab.parquet.masters-tmp.999999999.0123abcd"  # a killed writer's
    legacy = bank.shards / "part-0123456789ab.parquet.tmp"  # an earlier version's temporary name
    live = bank.shards / f".part-x.parquet.masters-tmp.{os.getppid()}.0123abcd"  # a live process's, in flight
    user = [tmp_path / "notes.tmp", bank.shards / "mine.tmp"]  # the user's own files
    for path in (dead, legacy, live, *user):
        path.write_bytes(b"half a shard")
    bank = open_bank(tmp_path)
    assert len(bank) == 1 and not dead.exists() and not legacy.exists()
    assert live.exists() and all(p.exists() for p in user)


def test_repair_keeps_one_copy_of_each_key(tmp_path):
    bank = open_bank(tmp_path)
    bank.append([make_row(0, 0), make_row(0, 1)])
    bank.write_scores("exact_match-abc", [("teacher/t0/2000/q0/0", 1.0)])
    for path in [*bank.shard_paths(), *bank.score_dir("exact_match-abc").glob("*.parquet")]:
        shutil.copy(path, path.with_name("part-ffffffffffff.parquet" if "shards" in str(path) else
                                         "scores-ffffffffffff.parquet"))  # a second writer banked every row again
    with pytest.raises(DataError, match="duplicate bank rows"):
        ResponseBank(tmp_path).keys()
    removed = ResponseBank(tmp_path).repair()
    assert removed == {"shards": 2, "scores/exact_match-abc": 1}
    bank = ResponseBank(tmp_path)
    assert len(bank) == 2 and bank.scores("exact_match-abc") == {"teacher/t0/2000/q0/0": 1.0}
    assert ResponseBank(tmp_path).repair() == {"shards": 0, "scores/exact_match-abc": 0}


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
