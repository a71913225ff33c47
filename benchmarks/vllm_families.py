"""Every built-in tiny family through the vllm backend, against the hf backend.

    flock /tmp/masters-bench.lock python benchmarks/vllm_families.py [--families llava gemma3 ...]

For each of the nine tiny families of ``masters.models.tiny`` (plus the ``llava_next`` plugin),
built at head size 32 (the least vLLM's CPU attention takes: hidden 128, 4 heads), one batch of
eight rows (four shapes questions, two seeds each) is sampled by both backends with the bank's
settings (temperature 1, top-k 50, top-p 0.9, repetition penalty 1.05, 10 new tokens) and
compared: the prompt ids vLLM built, the sampled token ids, and the per-token behaviour log-probs
(max absolute difference). A family that vLLM cannot load records the error instead. The
tests (``tests/backends``) assert this for LLaVA, Qwen2-VL, InternVL and LLaVA-NeXT; this script
is the wider survey. Needs ``.venv-vllm`` (``bash .ci/setup test``). Writes
benchmarks/results/vllm_families.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
import traceback
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = dict(temperature=1.0, top_p=0.9, top_k=50, repetition_penalty=1.05, max_new_tokens=10)


def build(family: str, root: Path) -> Path:
    from masters.models import build_tiny_model, build_tokenizer

    if not (root / "tokenizer").exists():
        build_tokenizer(root / "tokenizer")
    path = root / family
    if family == "llava_next":
        from masters_llava_next import tiny

        tiny.SIZES.setdefault("vllm", (128, 2, 64, 2))
        tiny.build_tiny_llava_next(path, size="vllm", seed=1, tokenizer_dir=root / "tokenizer")
    else:
        build_tiny_model(family, "small", path, tokenizer_dir=root / "tokenizer", seed=1)
    return path


@contextlib.contextmanager
def causal_image_attention(model_type: str):
    """transformers' Gemma3 without ``token_type_ids``: a causal mask over the image tokens too."""
    import functools

    from transformers.models.gemma3 import modeling_gemma3

    assert model_type == "gemma3", model_type
    cls = modeling_gemma3.Gemma3ForConditionalGeneration
    forward = cls.forward

    @functools.wraps(forward)  # generate() checks keyword arguments against the signature
    def causal(self, *args, **kwargs):
        kwargs.pop("token_type_ids", None)
        return forward(self, *args, **kwargs)

    cls.forward = causal
    try:
        yield
    finally:
        cls.forward = forward


def compare(family: str, root: Path) -> dict:
    from masters.backends.specs import HFBackendSpec, VLLMBackendSpec
    from masters.config import run_spec_model
    from masters.interfaces import SamplingSettings
    from masters.tasks.shapes import generate_shapes

    row: dict = {"family": family}
    plugins = contextlib.nullcontext()
    if family == "llava_next":
        from masters.testing import allow_plugins

        plugins = allow_plugins("llava_next")
    with plugins:
        try:
            path = build(family, root)
            entry = run_spec_model().model_fields["student"].annotation.model_validate({"path": str(path)})
            qs = list(generate_shapes(4, 0, 1, seed=321, max_shapes=2)["train"])
            batch = [qs[i // 2] for i in range(8)]
            seeds = [1000 + i for i in range(8)]
            settings = SamplingSettings(**SETTINGS)
            hf = HFBackendSpec().build().open(entry, vocab_limit=120)
            want = hf.generate(batch, seeds, settings)
            prompt_ids = [hf.adapter.encode([s]).inputs["input_ids"][0].tolist() for s in batch]
            row["model_type"] = json.loads((path / "config.json").read_text())["model_type"]
            hf.close()
            started = time.perf_counter()
            from masters.backends.vllm import BIDIRECTIONAL_IMAGE_ATTENTION

            mismatch = row["model_type"] in BIDIRECTIONAL_IMAGE_ATTENTION
            if mismatch:  # refused by default (its rows may not share the hf bank): measured with its own bank
                row["note"] = "refused unless attention_mismatch: own_bank"
            vllm = VLLMBackendSpec(kv_cache_mib=32, attention_mismatch="own_bank" if mismatch else "refuse"
                                   ).build().open(entry, vocab_limit=120)
            row["engine_startup_s"] = round(time.perf_counter() - started, 1)
            got = vllm.generate(batch, seeds, settings)
            row["prompt_ids_equal"] = vllm.last_prompt_ids == prompt_ids
            vllm.close()
            row["rows_equal"] = [g.token_ids for g in got] == [w.token_ids for w in want]
            row["rows_equal_count"] = sum(g.token_ids == w.token_ids for g, w in zip(got, want))
            diffs = [abs(a - b) for g, w in zip(got, want) if g.token_ids == w.token_ids
                     for a, b in zip(g.behaviour_logprobs, w.behaviour_logprobs)]
            row["max_logprob_diff"] = max(diffs) if diffs else None
            if mismatch:  # the control: transformers with a causal mask over the image tokens, as vLLM computes
                with causal_image_attention(row["model_type"]):
                    hf = HFBackendSpec().build().open(entry, vocab_limit=120)
                    causal = hf.generate(batch, seeds, settings)
                    hf.close()
                diffs = [abs(a - b) for g, w in zip(got, causal) if g.token_ids == w.token_ids
                         for a, b in zip(g.behaviour_logprobs, w.behaviour_logprobs)]
                row["max_logprob_diff_vs_causal_hf"] = max(diffs) if diffs else None
                row["note"] += f"; against transformers with a causal image mask: {row['max_logprob_diff_vs_causal_hf']:.1e}"
            # a refused model is ok when the refusal is what the measurement shows is needed
            exact = (row["max_logprob_diff_vs_causal_hf"] if mismatch else row["max_logprob_diff"]) or 0
            row["ok"] = bool(row["rows_equal"] and row["prompt_ids_equal"] and exact <= 1e-5)
        except Exception as exc:  # noqa: BLE001 - recorded per family
            row["ok"] = False
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            traceback.print_exc()
    return row


def main(argv: list[str] | None = None) -> int:
    from masters.models.tiny import TINY_FAMILIES

    families = [*TINY_FAMILIES, "llava_next"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", default=families, choices=families)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="masters-vllm-families-") as tmp:
        for family in args.families:
            row = compare(family, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    from masters.backends.vllm import shared_worker, stop_workers

    hello = shared_worker().hello
    stop_workers()
    result = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "settings": SETTINGS,
              "machine": {"platform": platform.platform(), "vllm": hello.get("vllm"), "vllm_torch": hello.get("torch"),
                          "vllm_transformers": hello.get("transformers")}, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vllm_families.json").write_text(json.dumps(result, indent=2) + "\n")
    head = ["family", "model_type", "prompt ids equal", "rows equal", "max |log-prob diff|", "engine s", "note"]
    body = []
    for r in rows:
        diff = r.get("max_logprob_diff")
        body.append([r["family"], r.get("model_type", ""), str(r.get("prompt_ids_equal", "")),
                     f"{r['rows_equal_count']}/8" if "rows_equal_count" in r else "",
                     f"{diff:.1e}" if isinstance(diff, float) else "", str(r.get("engine_startup_s", "")),
                     r.get("error", "") or r.get("note", "")])
    md = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                    *("| " + " | ".join(x) + " |" for x in body)])
    (RESULTS / "vllm_families.md").write_text(
        "# The vllm backend per family, against the hf backend\n\n" + result["what"] + "\n\n"
        f"{platform.platform()}; worker: vllm {hello.get('vllm')}, torch {hello.get('torch')}, transformers "
        f"{hello.get('transformers')}.\n\n" + md + "\n")
    print(md)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
