"""The vllm backend's bad input and faults: a missing or broken venv, a model the CPU engine cannot
load, a worker that dies with its parent or in the middle of a bank (exit 2, shards kept, a rerun
resumes). Runs last of the vLLM tests: the mid-bank test kills the session's worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from vllm_helpers import BACKEND, model_entry, skip_vllm

from masters.bank.store import ResponseBank
from masters.config import validate_run_spec
from masters.engine.generation import generate_bank


def test_missing_venv_names_the_set_up_command(tmp_path):
    from masters.backends.specs import VLLMBackendSpec
    from masters.backends.vllm import VLLMWorkerError

    backend = VLLMBackendSpec(python=str(tmp_path / "no-venv" / "bin" / "python")).build()
    with pytest.raises(VLLMWorkerError, match=r"bash \.ci/setup test") as err:
        backend.worker()
    assert err.value.exit_code == 2


def test_broken_venv_names_the_set_up_command():
    from masters.backends.vllm import VLLMWorker, VLLMWorkerError

    with pytest.raises(VLLMWorkerError, match=r"broken: cannot import vllm.*\n.*bash \.ci/setup test") as err:
        VLLMWorker(sys.executable)  # masters' own venv: no vllm in it
    assert err.value.exit_code == 2


def test_head_size_below_the_cpu_limit_is_refused_before_any_start(tmp_path):
    from masters.backends.specs import VLLMBackendSpec
    from masters.backends.vllm import VLLMWorkerError
    from masters.models import build_tiny_model

    build_tiny_model("llava", "tiny", tmp_path / "tiny")  # hidden 64 / 4 heads: head size 16
    with pytest.raises(VLLMWorkerError, match="head size 16 is below the 32") as err:
        VLLMBackendSpec(python=str(tmp_path / "never-started")).build().open(model_entry(tmp_path / "tiny"),
                                                                             vocab_limit=60)
    assert err.value.exit_code == 2


def test_worker_dies_with_its_parent(tmp_path):
    if skip_vllm():
        pytest.skip("MASTERS_SKIP_VLLM=1")
    from masters.backends.vllm import WORKER, default_python

    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         f"child = subprocess.Popen([{str(default_python())!r}, {str(WORKER)!r}], stdin=subprocess.PIPE, "
         "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
         "print(child.pid, flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # let the worker reach its prctl
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        try:  # a zombie re-parented to init counts as gone once reaped; poll its state
            with open(f"/proc/{child}/stat") as stat:
                if stat.read().split()[2] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the vLLM worker outlived its parent")


@pytest.mark.slow
def test_worker_dying_mid_bank_keeps_the_shards_and_a_rerun_resumes(vllm_worker, vllm_checkpoints, tmp_path,
                                                                     monkeypatch):
    from masters.backends.vllm import VLLMWorker, VLLMWorkerError

    data = {
        "output_dir": str(tmp_path / "run"), "teacher": str(vllm_checkpoints["teacher"]),
        "student": str(vllm_checkpoints["student"]),
        "task": {"name": "shapes", "n_train": 6, "n_validation": 0, "n_test": 2},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 6, "batch_size": 2,
                       "bank_levels": "all"},
    }
    original = VLLMWorker.request
    calls = {"generate": 0}

    def dying(self, op, **fields):
        if op == "generate":
            calls["generate"] += 1
            if calls["generate"] == 3:  # the worker is killed before its third batch
                self.proc.kill()
                self.proc.wait()
        return original(self, op, **fields)

    monkeypatch.setattr(VLLMWorker, "request", dying)
    with pytest.raises(VLLMWorkerError, match="worker died during generate") as err:
        generate_bank(validate_run_spec({**data, "backend": BACKEND}), progress=False)
    assert err.value.exit_code == 2 and "resumes" in err.value.fix
    bank = ResponseBank(tmp_path / "run" / "bank")
    assert len(bank) == 2 * 2 * 2  # the two batches written before the death are kept
    monkeypatch.setattr(VLLMWorker, "request", original)
    # The rerun resumes; the hf backend's rows equal vllm's, so it may finish the bank (a vllm
    # rerun would start a fresh worker: the same rows, a minute more of engine start-up here).
    report = generate_bank(validate_run_spec(data), progress=False)
    assert report.rows_written == 6 * 2 + 6 * 2 * 5 - 8
    whole = tmp_path / "whole"
    generate_bank(validate_run_spec({**data, "output_dir": str(whole)}), progress=False)
    assert ResponseBank(whole / "bank").table().select(["row_id", "token_ids", "seed"]).to_pylist() == \
        bank.table().select(["row_id", "token_ids", "seed"]).to_pylist()


def test_reduced_precision_may_not_share_the_hf_bank(vllm_checkpoints, tmp_path):
    from masters.backends.specs import VLLMBackendSpec
    from masters.backends.vllm import VLLMWorkerError
    from masters.config import run_spec_model

    entry = run_spec_model().model_fields["student"].annotation.model_validate(
        {"path": str(vllm_checkpoints["student"]), "adapter": {"name": "llava", "dtype": "bfloat16"}})
    with pytest.raises(VLLMWorkerError, match="loaded in bfloat16") as err:  # refused before any worker starts
        VLLMBackendSpec(python=str(tmp_path / "never-started")).build().open(entry, vocab_limit=120)
    assert "own_bank" in err.value.fix
    own = VLLMBackendSpec(reduced_precision="own_bank")
    assert own.row_identity() is not None and not own.build().capabilities.rows_equal_hf


def test_bidirectional_image_attention_may_not_share_the_hf_bank(tmp_path):
    """Gemma3 (image tokens attend both ways in transformers, causally in vLLM): refused unless its
    bank is its own; measured by benchmarks/vllm_families.py (1.1e-2 against 2.4e-6 with a causal mask)."""
    from masters.backends.specs import VLLMBackendSpec
    from masters.backends.vllm import VLLMWorkerError
    from masters.models import build_tiny_model, build_tokenizer

    build_tokenizer(tmp_path / "tok")
    build_tiny_model("gemma3", "small", tmp_path / "gemma3", tokenizer_dir=tmp_path / "tok", seed=1)
    with pytest.raises(VLLMWorkerError, match="gemma3: transformers attends bidirectionally") as err:
        VLLMBackendSpec(python=str(tmp_path / "never-started")).build().open({"path": str(tmp_path / "gemma3")},
                                                                            vocab_limit=120)
    assert err.value.exit_code == 2 and "attention_mismatch: own_bank" in err.value.fix
    own = VLLMBackendSpec(attention_mismatch="own_bank")
    assert own.row_identity()["attention_mismatch"] == "own_bank" and not own.build().capabilities.rows_equal_hf
    assert "attention_mismatch" not in VLLMBackendSpec(sampler="native").row_identity()  # older banks' identity kept
