"""Stage outputs on masters.files' one mechanism (decision 18): checkpoints, the reference store and
the teacher cache write under the program's own temporary names, and cleanup touches only those."""

from __future__ import annotations

import os

import torch

from masters.engine.checkpoint import KEEP, latest_checkpoint, load_checkpoint, save_checkpoint
from masters.engine.reference import ReferenceStore
from masters.engine.teacher_cache import TeacherCache
from masters.files import clean_temporaries


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_checkpoints_leave_no_temporaries_and_keep_the_last_ones(tmp_path):
    model, optimizer = _model_and_optimizer()
    directory = tmp_path / "checkpoints"
    for step in range(1, 5):
        save_checkpoint(directory, step, model, optimizer, {"train_hash": "h"})
    names = sorted(p.name for p in directory.iterdir())
    assert names == [f"step-{s:06d}" for s in range(5 - KEEP, 5)]  # pruned, no temporary left behind
    assert latest_checkpoint(directory).name == "step-000004"
    state = load_checkpoint(directory / "step-000004", *_model_and_optimizer())
    assert state["step"] == 4 and state["format"] == "full"


def test_a_killed_checkpoint_write_is_ignored_and_cleaned_but_a_users_tmp_stays(tmp_path):
    model, optimizer = _model_and_optimizer()
    directory = tmp_path / "checkpoints"
    save_checkpoint(directory, 1, model, optimizer, {})
    dead = directory / ".step-000002.masters-tmp.999999999.0123abcd"  # a killed writer's half checkpoint
    legacy = directory / "step-000002.tmp"  # an earlier version's name
    for path in (dead, legacy):
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"half")
    user = directory / "notes.tmp"
    user.write_text("mine\n")
    assert latest_checkpoint(directory).name == "step-000001"
    assert clean_temporaries(tmp_path) == 2
    assert not dead.exists() and not legacy.exists() and user.exists()
    assert (directory / "step-000001" / "state.json").exists()


def test_a_checkpoint_written_again_replaces_the_previous_one_whole(tmp_path):
    model, optimizer = _model_and_optimizer()
    directory = tmp_path / "checkpoints"
    save_checkpoint(directory, 1, model, optimizer, {"attempt": 1})
    save_checkpoint(directory, 1, model, optimizer, {"attempt": 2})  # a resumed run at the same step
    assert sorted(p.name for p in directory.iterdir()) == ["step-000001"]
    assert load_checkpoint(directory / "step-000001", *_model_and_optimizer())["attempt"] == 2


def test_reference_store_and_teacher_cache_clean_only_their_own_temporaries(tmp_path):
    store = ReferenceStore(tmp_path / "reference")
    store.write({"r0": [-0.5, -1.0]})
    cache = TeacherCache(tmp_path / "cache")
    cache.write({"k0": ([[1, 2]], [[-0.1, -0.2]])})
    for directory, prefix in ((store.directory, "ref"), (cache.directory, "cache")):
        assert [p.name for p in directory.iterdir() if not p.name.endswith(".parquet")] == []
        dead = directory / f".{prefix}-0123456789ab.parquet.masters-tmp.999999999.0123abcd"
        live = directory / f".{prefix}-x.parquet.masters-tmp.{os.getppid()}.0123abcd"  # a live writer's
        legacy = directory / f"{prefix}-0123456789ab.parquet.tmp"
        user = directory / "mine.tmp"
        for path in (dead, live, legacy, user):
            path.write_bytes(b"half")
        (store if prefix == "ref" else cache).clean_partial()
        assert not dead.exists() and not legacy.exists() and live.exists() and user.exists()
    assert ReferenceStore(store.directory).values() == {"r0": [-0.5, -1.0]}
    assert TeacherCache(cache.directory).entries()["k0"][0] == [[1, 2]]


def test_sharded_checkpoint_files_hold_about_32_mib_of_a_rank_each():
    """DCP serialises a whole file in memory: FSDP2 checkpoints are cut into files of bounded size."""
    import torch

    from masters.engine.checkpoint import SHARD_FILE_BYTES, _file_index

    flat = {f"model.layer{i}.weight": torch.empty(1024, 1024 * 3) for i in range(8)}  # 12 MiB each, 6 on a rank
    flat["optim.layer0.weight.step"] = torch.zeros(())
    index = _file_index(flat, world_size=1)
    assert _file_index(dict(reversed(list(flat.items()))), world_size=1) == index  # the same on every rank
    per_file: dict[int, int] = {}
    for name, f in index.items():
        per_file[f] = per_file.get(f, 0) + flat[name].numel() * 4
    assert len(per_file) == 4 and max(per_file.values()) <= SHARD_FILE_BYTES
