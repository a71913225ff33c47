"""The trainer end to end on tiny models: loss terms, baselines, guardrails, kill and resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from masters.bank.scoring import score_bank
from masters.bank.store import ResponseBank
from masters.data import load_splits
from masters.engine.generation import bank_dir, generate_bank
from masters.engine.trainer import train, training_dir
from masters.objectives.builtin import GroupSignalWarning
from masters.errors import MastersError
from masters.config import validate_run_spec


def config(tiny_pair, out, **overrides) -> dict:
    teacher, student = tiny_pair
    data = {
        "output_dir": str(out), "teacher": str(teacher), "student": str(student),
        "data": {"source": "shapes", "n_train": 6, "n_validation": 0, "n_test": 2},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 4, "batch_size": 3,
                       "bank_levels": "all"},
        "training": {"n_teacher": 2, "n_student": 2, "learning_rate": 1e-3, "questions_per_step": 2,
                     "checkpoint_every": 1},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


@pytest.fixture(scope="module")
def scored_bank(tiny_pair, tmp_path_factory):
    """One bank at every level, scored, shared by the tests (copied into each run directory)."""
    out = tmp_path_factory.mktemp("bank-run")
    spec = validate_run_spec(config(tiny_pair, out))
    generate_bank(spec, progress=False)
    samples = {s.id: s for s in load_splits(spec.task)["train"]}
    score_bank(ResponseBank(bank_dir(spec)), samples, spec.rewards, progress=False)
    return out / "bank"


def prepared(tiny_pair, scored_bank, out, **overrides):
    shutil.copytree(scored_bank, out / "bank")
    return validate_run_spec(config(tiny_pair, out, **overrides))


def metrics(out) -> list[dict]:
    (path,) = (out / "train").glob("*/metrics.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_masters_trains_logs_every_term_and_saves_a_plain_transformers_student(tiny_pair, scored_bank, tmp_path):
    spec = prepared(tiny_pair, scored_bank, tmp_path)
    result = train(spec, progress=False)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert [r["level"] for r in rows] == [0.2, 0.15, 0.05]  # 3 steps over 5 stages: k = floor(i * 5 / 3)
    first = rows[0]
    for key in ("loss/total", "loss/policy", "loss/kl", "loss/distill", "reward/exact_match/raw",
                "reward/jsd_distill/raw", "reward/jsd_distill/weighted", "reward/total", "grad_norm"):
        assert key in first and first[key] == first[key]  # present and not NaN
    assert abs(first["loss/kl"]) < 1e-6  # the student is still the reference at step 0
    assert first["loss/distill"] > 0
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(result.student_dir)
    before = LlavaForConditionalGeneration.from_pretrained(tiny_pair[1])
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, dict(before.named_parameters())[n])]
    assert changed, "training changed no weight"
    record = json.loads((result.student_dir / "masters_run.json").read_text())
    assert record["method"] == "masters"
    assert record["components"]["adapters"] == {"student": "llava", "teachers": ["llava"]}


@pytest.mark.parametrize("method", ["sft", "naive_kd", "progressive_kd", "masters_no_distill_reward", "fixed_mask"])
def test_every_baseline_runs_in_the_same_engine(tiny_pair, scored_bank, tmp_path, method):
    spec = prepared(tiny_pair, scored_bank, tmp_path, training={"method": method})
    train(spec, progress=False)
    rows = metrics(tmp_path)
    assert len(rows) == 3 and all(r["loss/total"] == r["loss/total"] for r in rows)
    if method == "fixed_mask":
        assert {r["level"] for r in rows} == {0.2}
    if method == "naive_kd":
        assert {r["level"] for r in rows} == {0.0}
    if method == "masters_no_distill_reward":
        assert "reward/jsd_distill/raw" not in rows[0]


@pytest.mark.parametrize("negative", ["full", "probability_weighted", "zero"])
def test_negative_advantages_reach_the_loss_as_configured(tiny_pair, scored_bank, tmp_path, monkeypatch, negative):
    from masters.objectives import builtin as trainer

    seen = []
    real = trainer.masters_loss

    def spy(logprobs, mask, advantages, **kwargs):
        seen.append((advantages.detach().clone(), kwargs["negative_advantages"]))
        return real(logprobs, mask, advantages, **kwargs)

    monkeypatch.setattr(trainer, "masters_loss", spy)
    train(prepared(tiny_pair, scored_bank, tmp_path, training={"negative_advantages": negative}), progress=False)
    every = torch.cat([a for a, _ in seen])
    assert {n for _, n in seen} == {negative}
    assert (every > 0).any() and (every < 0).any()  # groups with signal (the distillation reward always varies)


def test_a_knob_at_its_default_leaves_the_training_identity_unchanged(tiny_pair, tmp_path):
    from masters.engine.trainer import LATER_FIELDS, identity_of_training

    default = validate_run_spec(config(tiny_pair, tmp_path))
    assert not LATER_FIELDS.keys() & identity_of_training(default).keys()  # hashes as before the knob
    changed = validate_run_spec(config(tiny_pair, tmp_path, training={"negative_advantages": "zero"}))
    assert identity_of_training(changed)["negative_advantages"] == "zero"
    assert training_dir(default) != training_dir(changed)


def test_the_policy_term_moves_probability_towards_rewarded_responses(tiny_pair, scored_bank, tmp_path, monkeypatch):
    """End to end through bank, groups, rewards and loss: a sign or alignment slip would fail here.

    Rewards are set by hand (even sample index: 1, odd: 0) and only the policy term trains, so
    the rewarded responses must gain log-probability relative to the others.
    """
    from masters.adapters.resolve import resolve_adapter
    from masters.engine import trainer

    original = trainer.Trainer._bank_index
    rewarded: dict[str, bool] = {}

    def hand_rewards(self):
        index = original(self)
        for rows in index._rows.values():
            for row in rows:
                rewarded[row["row_id"]] = row["sample_index"] % 2 == 0
        index.accuracy = {key: {rid: float(ok) for rid, ok in rewarded.items()} for key in index.accuracy}
        return index

    monkeypatch.setattr(trainer.Trainer, "_bank_index", hand_rewards)
    spec = prepared(tiny_pair, scored_bank, tmp_path / "run", rewards=["exact_match"],
                    training={"method": "masters_no_distill_reward", "beta": 0.0, "distill_loss_weight": 0.0})
    result = train(spec, progress=False)
    assert all(r["groups/equal_rewards"] == 0 for r in metrics(tmp_path / "run"))  # every group has signal

    levels = {r["level"] for r in metrics(tmp_path / "run")}
    rows = [r for r in ResponseBank(bank_dir(spec)).table(["row_id", "level_bp", "question_id", "token_ids"]).to_pylist()
            if r["level_bp"] is None or r["level_bp"] / 10_000 in levels]
    samples = {s.id: s for s in load_splits(spec.task)["train"]}

    def gap(path) -> float:
        model = resolve_adapter(path)
        with torch.no_grad():
            forced = model.teacher_force([samples[r["question_id"]] for r in rows], [r["token_ids"] for r in rows])
        mean = (forced.logprobs * forced.mask).sum(1) / forced.mask.sum(1)
        good = torch.tensor([rewarded[r["row_id"]] for r in rows])
        return float(mean[good].mean() - mean[~good].mean())

    before, after = gap(tiny_pair[1]), gap(result.student_dir)
    assert after > before + 0.05, (before, after)


def test_killed_training_resumes_bit_identical(tiny_pair, scored_bank, tmp_path):
    whole = tmp_path / "whole"
    train(prepared(tiny_pair, scored_bank, whole), progress=False)
    resumed = tmp_path / "resumed"
    prepared(tiny_pair, scored_bank, resumed)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config(tiny_pair, resumed)))
    env = {**os.environ, "MASTERS_TEST_KILL_AFTER": "train:2"}
    cmd = [sys.executable, "-m", "masters.cli", "train", str(path)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert first.returncode == 137, first.stderr[-3000:]
    env.pop("MASTERS_TEST_KILL_AFTER")
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    a = load_file(str(whole / "student" / "model.safetensors"))
    b = load_file(str(resumed / "student" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in metrics(resumed)] == [0, 1, 2]  # nothing lost, nothing duplicated


def test_constant_teacher_logits_fail_fast(tiny_pair, scored_bank, tmp_path, monkeypatch):
    from masters.adapters.base import HFVLMAdapter

    real = HFVLMAdapter.teacher_force

    def flat_teacher(self, samples, responses, **kw):
        out = real(self, samples, responses, **kw)
        if not torch.is_grad_enabled():  # the teacher's call
            out.logits = torch.zeros_like(out.logits)
        return out

    monkeypatch.setattr(HFVLMAdapter, "teacher_force", flat_teacher)
    with pytest.raises(MastersError, match="constant"):
        train(prepared(tiny_pair, scored_bank, tmp_path), progress=False)


def test_nan_loss_names_the_step_and_questions(tiny_pair, scored_bank, tmp_path, monkeypatch):
    import masters.objectives.builtin as trainer

    real = trainer.masters_loss

    def nan_loss(*args, **kwargs):
        terms = real(*args, **kwargs)
        terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(trainer, "masters_loss", nan_loss)
    with pytest.raises(MastersError, match=r"loss is nan at optimizer step 0 .*questions shapes-"):
        train(prepared(tiny_pair, scored_bank, tmp_path), progress=False)


def test_groups_with_equal_rewards_warn(tiny_pair, scored_bank, tmp_path):
    spec = prepared(tiny_pair, scored_bank, tmp_path, rewards=["exact_match"])  # random models: all 0
    with pytest.warns(GroupSignalWarning, match="no policy signal"):
        train(spec, progress=False)


def test_cached_teacher_signal_trains_without_the_teacher_and_bounds_the_online_jsd(tiny_pair, scored_bank, tmp_path):
    online = tmp_path / "online"
    train(prepared(tiny_pair, scored_bank, online), progress=False)
    cached = tmp_path / "cached"
    result = train(prepared(tiny_pair, scored_bank, cached, training={"teacher_signal": "cached", "cache_top_k": 8}),
                   progress=False)
    a, b = metrics(online)[0], metrics(cached)[0]
    assert 0 < b["loss/distill"] <= a["loss/distill"] + 1e-6  # bucketing can only lower a divergence
    assert list((cached / "train").glob("*/teacher_cache/*.parquet"))
    assert result.steps == 3


def test_a_cache_that_would_not_fit_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil as sh
    from collections import namedtuple

    from masters.engine.teacher_cache import check_fits

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda path: usage(100, 90, 10 * 2**20))
    with pytest.raises(MastersError, match=r"needs about .* GiB .* but .* GiB are free") as info:
        check_fits(tmp_path / "cache", n_tokens=10_000_000, top_k=64)
    assert "cache_top_k" in info.value.render()


def test_bucketed_jsd_is_exact_when_k_covers_the_vocabulary():
    from masters.engine.teacher_cache import bucket_jsd
    from masters.rewards.jsd import token_jsd

    torch.manual_seed(0)
    teacher, student = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    mask = torch.ones(2, 5, dtype=torch.bool)
    top = torch.topk(torch.log_softmax(teacher, -1), 12, dim=-1)
    exact = token_jsd(teacher, student, mask=mask)
    assert torch.allclose(bucket_jsd(top.indices, top.values, student, mask), exact, atol=1e-5)
    few = torch.topk(torch.log_softmax(teacher, -1), 3, dim=-1)
    assert (bucket_jsd(few.indices, few.values, student, mask) <= exact + 1e-6).all()


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(tiny_pair, scored_bank, tmp_path):
    """gloo data parallelism: each rank trains on its share of every step; the result equals one
    process doing the same global batch as gradient accumulation (the trainer also checks the
    ranks agree before saving)."""
    single = tmp_path / "single"
    train(prepared(tiny_pair, scored_bank, single, training={"questions_per_step": 1,
                                                             "gradient_accumulation_steps": 2}), progress=False)
    double = tmp_path / "double"
    prepared(tiny_pair, scored_bank, double)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config(tiny_pair, double, training={"questions_per_step": 1})))
    from launching import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
           "-m", "masters.cli", "train", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "ACCELERATE_USE_CPU": "true"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    a = load_file(str(single / "student" / "model.safetensors"))
    b = load_file(str(double / "student" / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_costly_diagnostics_are_logged_and_change_nothing_trained(tiny_pair, scored_bank, tmp_path):
    from safetensors.torch import load_file

    plain = prepared(tiny_pair, scored_bank, tmp_path / "plain")
    watched = prepared(tiny_pair, scored_bank, tmp_path / "watched", training={"diagnostics_every": 2})
    assert training_dir(plain).name == training_dir(watched).name  # not part of the training identity
    a, b = train(plain, progress=False), train(watched, progress=False)
    wa, wb = load_file(a.student_dir / "model.safetensors"), load_file(b.student_dir / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the extra passes leave the weights as they were
    rows = metrics(tmp_path / "watched")
    costly = [r for r in rows if "diag/grad_norm_distill" in r]
    assert [r["step"] for r in costly] == [0, 2]
    for r in costly:
        assert r["diag/grad_norm_policy"] > 0 and r["diag/grad_norm_distill"] > 0
        assert r["diag/grad_norm_kl"] == 0 or r["step"] > 0  # the student is its own reference at step 0
        assert r["diag/jsd0_answer"] >= 0  # shapes answers have no trace: every token is an answer token
    # at level > 0 the masked teacher is further from the unmasked one than nothing: JSD to T_0 differs
    assert costly[0]["level"] > 0 and costly[0]["diag/jsd0_answer"] != costly[0]["diag/jsd_answer"]
    assert not any("diag/grad_norm_policy" in r for r in metrics(tmp_path / "plain"))
