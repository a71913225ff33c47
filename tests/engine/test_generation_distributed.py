"""Multi-process banks: ``accelerate launch masters generate`` (and ``train --cache-only``) on 2 gloo
processes equal one process row for row, and a rank killed mid-stage loses and duplicates nothing.

One pass through the commands a user types, each launch under a subprocess timeout (a hang
fails instead of stalling CI):

1. ``generate`` with rank 1 killed after its first shard (``MASTERS_TEST_KILL_AFTER=generate:4@1``):
   the launch ends (the other rank does not hang), the shards written so far stay;
2. the killed bank is resumed by one process (a copy) and by the same launch (``masters run
   --stages generate,score,train``: the pipeline's generate stage runs on every rank): both equal
   the bank one process generates uninterrupted, row for row and column for column; in the same
   launch, rank 1 dies again while filling the teacher cache (``teacher-cache:8@1``);
3. ``train --cache-only`` finishes the cache under the launch: it equals one process's, entry
   for entry.

The launched runs take one question per rank per step; the one-process reference takes two
(gradient accumulation 2): the same global batch, so the same plan and, with ``bank_levels:
scheduled``, the same rows. 7 questions in batches of 2 leave the ranks uneven shares.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from masters.bank.scoring import score_bank
from masters.bank.store import ResponseBank
from masters.config import validate_run_spec
from masters.data import load_splits
from masters.engine.generation import bank_dir, generate_bank
from masters.engine.teacher_cache import TeacherCache
from masters.engine.trainer import build_teacher_cache, training_dir

N_TRAIN = 7


def config(tiny_pair, out, **overrides) -> dict:
    teacher, student = tiny_pair
    data = {
        "output_dir": str(out), "teacher": str(teacher), "student": str(student),
        "task": {"name": "shapes", "n_train": N_TRAIN, "n_validation": 0, "n_test": 2},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 4, "batch_size": 2},
        "training": {"n_teacher": 2, "n_student": 2, "questions_per_step": 1, "teacher_signal": "cached",
                     "cache_top_k": 4},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


ONE_PROCESS = {"training": {"gradient_accumulation_steps": 2}}  # 2 ranks x 1 question = 1 process x 2


def write_config(tiny_pair, out: Path, **overrides) -> Path:
    path = out.parent / f"{out.name}.yaml"  # beside, not in, the output directory (masters claims it)
    path.write_text(yaml.safe_dump(config(tiny_pair, out, **overrides)))
    return path


def rows(out: Path) -> list[dict]:
    """The bank read back in canonical order (by row id); every column."""
    table = ResponseBank(out / "bank").table().to_pylist()
    assert len({r["row_id"] for r in table}) == len(table)  # no duplicates
    return table


def cache_entries(spec) -> dict:
    return TeacherCache(training_dir(spec) / "teacher_cache").entries()


def close(a: dict, b: dict, tol: float = 1e-6) -> bool:
    """Cache entries: equal keys and top-k ids, log-probs within ``tol``."""
    if a.keys() != b.keys():
        return False
    for key, (ids, lps) in a.items():
        ids_b, lps_b = b[key]
        if ids != ids_b or any(abs(x - y) > tol for row, row_b in zip(lps, lps_b) for x, y in zip(row, row_b)):
            return False
    return True


@pytest.mark.slow
def test_launched_bank_and_cache_killed_and_resumed_equal_one_process(tiny_pair, tmp_path, launch):
    # The references: one process, uninterrupted.
    ref = validate_run_spec(config(tiny_pair, tmp_path / "ref", **ONE_PROCESS))
    generate_bank(ref, progress=False)
    score_bank(ResponseBank(bank_dir(ref)), {s.id: s for s in load_splits(ref.task)["train"]}, ref.rewards,
               progress=False)
    build_teacher_cache(ref)
    expected, expected_cache = rows(tmp_path / "ref"), cache_entries(ref)
    assert len(expected) > 20 and len(expected_cache) > 16

    # 1. rank 1 dies after its first shard: the launch ends, what was banked stays.
    out = tmp_path / "launched"
    path = write_config(tiny_pair, out)
    killed, seconds = launch(path, "generate", kill="generate:4@1")
    assert killed.returncode != 0, killed.stderr[-3000:]
    # rank 0 stopped by the launcher's SIGTERM, not hung until its SIGKILL
    assert "terminated: run the same command again to resume" in killed.stderr, killed.stderr[-2500:]
    partial = rows(out)
    assert 0 < len(partial) < len(expected), len(partial)
    assert all(r in expected for r in partial)  # whole shards of the final rows, nothing else

    # 2a. one process resumes a copy of it ...
    shutil.copytree(out, tmp_path / "one")
    generate_bank(validate_run_spec(config(tiny_pair, tmp_path / "one", **ONE_PROCESS)), progress=False)
    assert rows(tmp_path / "one") == expected
    # 2b. ... and the same launch resumes it: `masters run`, whose generate stage runs on every rank;
    # then scoring (rank 0) and training, whose teacher cache every rank fills: rank 1 dies there.
    resumed, _ = launch(path, "run", "--stages", "generate,score,train", kill="teacher-cache:8@1")
    assert resumed.returncode != 0, resumed.stderr[-6000:]
    assert rows(out) == expected
    spec = validate_run_spec(config(tiny_pair, out))
    assert 0 < len(cache_entries(spec)) < len(expected_cache)

    # 3. the teacher cache finished by `train --cache-only` under the launch.
    done, _ = launch(path, "train", "--cache-only")
    assert done.returncode == 0, done.stderr[-6000:]
    assert done.stdout.count("teacher cache written to") == 1  # printed once, by rank 0
    assert close(cache_entries(spec), expected_cache)


def test_tensor_parallel_above_one_is_refused_without_gpus(tiny_pair, tmp_path, capsys):
    from masters.cli import main

    path = write_config(tiny_pair, tmp_path / "tp", backend={"name": "vllm", "tensor_parallel_size": 2})
    code = main(["generate", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "backend.tensor_parallel_size" in err and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "tp" / "bank" / "bank.json").exists()


def test_a_world_size_without_a_launcher_is_refused(tiny_pair, tmp_path, capsys, monkeypatch):
    from masters.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    code = main(["generate", str(write_config(tiny_pair, tmp_path / "ws"))])
    err = capsys.readouterr().err
    assert code == 2 and "no launcher started this process" in err and "Traceback" not in err
    assert not (tmp_path / "ws").exists()
