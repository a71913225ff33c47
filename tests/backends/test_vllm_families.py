"""The vllm backend against the hf backend, per family: prompt ids, sampled rows, behaviour log-probs.

With ``sampler: gumbel`` masters' own per-row Gumbel sampler runs inside vLLM as a logits
processor, so every row must equal the hf backend's token for token, and the behaviour log-prob
of each token (the bank's ``behaviour_logprobs``) must agree to 1e-5.
"""

from __future__ import annotations

import contextlib

import pytest

from vllm_helpers import BACKEND, VLLM_FAMILIES, model_entry

SETTINGS = dict(temperature=1.0, top_p=0.9, top_k=50, repetition_penalty=1.05, max_new_tokens=10)


def samples(n: int = 4):
    from masters.tasks.shapes import generate_shapes

    return list(generate_shapes(n, 0, 1, seed=321, max_shapes=2)["train"])


def plugins_for(family: str):
    if family == "llava_next":
        from masters.testing import allow_plugins

        return allow_plugins("llava_next")
    return contextlib.nullcontext()


@pytest.mark.slow
@pytest.mark.parametrize("family", VLLM_FAMILIES)
def test_rows_prompt_ids_and_logprobs_equal_hf(family, vllm_worker, vllm_checkpoints):
    from masters.backends.specs import HFBackendSpec, VLLMBackendSpec
    from masters.interfaces import SamplingSettings

    with plugins_for(family):
        model = model_entry(vllm_checkpoints[family])
        qs = samples()
        batch = [qs[i // 2] for i in range(8)]  # two rows per question, as the bank asks
        seeds = [1000 + i for i in range(8)]
        hf = HFBackendSpec().build().open(model, vocab_limit=120)
        vllm = VLLMBackendSpec(**BACKEND).build().open(model, vocab_limit=120)
        try:
            for temperature in (1.0, 0.0):
                settings = SamplingSettings(**{**SETTINGS, "temperature": temperature})
                want = hf.generate(batch, seeds, settings)
                got = vllm.generate(batch, seeds, settings)
                assert vllm.last_prompt_ids == [hf.adapter.encode([s]).inputs["input_ids"][0].tolist() for s in batch]
                assert [g.token_ids for g in got] == [w.token_ids for w in want], f"{family} at T={temperature}"
                for g, w in zip(got, want):
                    assert len(g.behaviour_logprobs) == len(g.token_ids)
                    assert max((abs(a - b) for a, b in zip(g.behaviour_logprobs, w.behaviour_logprobs)),
                               default=0.0) <= 1e-5
                if temperature > 0:  # not degenerate: seeds give different rows, ids spread over the vocabulary
                    assert len({tuple(g.token_ids) for g in got}) >= 6
                    assert len({t for g in got for t in g.token_ids}) >= 20
        finally:
            hf.close()
            vllm.close()


@pytest.mark.slow
def test_vllm_backend_passes_the_backend_conformance_kit(vllm_worker, vllm_checkpoints, tmp_path):
    """masters.testing's backend kit (per-row seeds, vocabulary, EOS, masked levels ...) on a
    head-size-32 LLaVA whose generation config lists many EOS ids, as the kit's own checkpoint does."""
    import json
    import shutil

    from masters.backends.specs import VLLMBackendSpec
    from masters.testing import check_backend
    from masters.testing.backends import EOS_SHARE, _tokenizer_info

    model = tmp_path / "multi-eos"
    shutil.copytree(vllm_checkpoints["teacher"], model)
    info = _tokenizer_info(model)
    config = json.loads((model / "generation_config.json").read_text())
    words = [i for i in range(info["vocab_limit"]) if i not in info["special"]]
    config["eos_token_id"] = [info["eos"], *words[::EOS_SHARE]]
    (model / "generation_config.json").write_text(json.dumps(config, indent=2))
    report = check_backend(VLLMBackendSpec(**BACKEND), model_dir=model)
    assert all(v == "ok" for v in report.values()), report
