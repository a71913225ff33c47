"""``accelerate launch masters generate`` under the vllm backend: every rank starts its own worker,
and the bank equals one process's hf bank row for row.

Found by this test: transformers 5 writes nothing from ``save_pretrained`` on a torch.distributed
rank other than 0, so rank 1's mask-level weights never reached its engine
(``vllm_export._saved_on_this_rank``).
"""

from __future__ import annotations

import math

import pytest
import yaml
from vllm_helpers import skip_vllm

from masters.bank.store import ResponseBank
from masters.config import validate_run_spec
from masters.engine.generation import generate_bank

pytestmark = pytest.mark.slow


def config(ckpts, out, **overrides) -> dict:
    data = {
        "output_dir": str(out), "teacher": str(ckpts["teacher"]), "student": str(ckpts["student"]),
        "task": {"name": "shapes", "n_train": 5, "n_validation": 0, "n_test": 2},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 6, "batch_size": 2},
        "training": {"questions_per_step": 1},  # 2 ranks x 1 question a step
    }
    data.update(overrides)
    return data


def test_two_ranks_with_a_worker_each_equal_the_one_process_hf_bank(vllm_checkpoints, tmp_path, launch):
    if skip_vllm():
        pytest.skip("MASTERS_SKIP_VLLM=1")
    # one process, hf, the same global batch: 1 process x 2 questions a step
    one = config(vllm_checkpoints, tmp_path / "hf", training={"questions_per_step": 1, "gradient_accumulation_steps": 2})
    generate_bank(validate_run_spec(one), progress=False)
    path = tmp_path / "vllm.yaml"
    backend = {"name": "vllm", "threads": 1, "kv_cache_mib": 32, "max_num_seqs": 16}
    path.write_text(yaml.safe_dump(config(vllm_checkpoints, tmp_path / "vllm", backend=backend)))
    proc, _ = launch(path, "generate")
    assert proc.returncode == 0, proc.stderr[-6000:]

    want = ResponseBank(tmp_path / "hf" / "bank").table().to_pylist()
    got = ResponseBank(tmp_path / "vllm" / "bank").table().to_pylist()
    assert [(r["row_id"], r["token_ids"], r["seed"]) for r in got] == [(r["row_id"], r["token_ids"], r["seed"]) for r in want]
    assert {r["level_bp"] for r in got if r["source"] == "teacher"} - {0}  # masked levels, reloaded by each worker
    for g, w in zip(got, want):
        assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(g["behaviour_logprobs"], w["behaviour_logprobs"]))


def test_level_weights_are_written_by_a_rank_other_than_0(tiny_pair, tmp_path, monkeypatch):
    """The cheap regression of the bug above (no vLLM, no launch): rank 1 as transformers sees it."""
    mixin = pytest.importorskip("transformers.distributed.mixin")
    if not hasattr(mixin, "_get_torch_distributed_rank"):
        pytest.skip("this transformers saves on every rank")
    from masters.adapters.resolve import resolve_adapter
    from masters.backends.vllm_export import write_level_weights

    monkeypatch.setattr(mixin, "_is_torch_distributed_initialized", lambda: True)
    monkeypatch.setattr(mixin, "_get_torch_distributed_rank", lambda: 1)
    model = resolve_adapter(str(tiny_pair[0])).model
    out = write_level_weights(model, tmp_path / "level", model.config.model_type)
    assert list(out.glob("*.safetensors"))
    assert "should_save_on_this_rank" not in vars(model)  # the model is left as it was
