"""Generation throughput: the bank's generation path against plain batched transformers ``generate``.

    flock /tmp/masters-bench.lock python benchmarks/generation.py [--batch-size 8] [--new-tokens 32]

For a tiny and a medium LLaVA (randomly initialised, built offline), over the same batch of
shapes prompts, at the same batch size and ``max_new_tokens``:

* ``bank``: what :func:`masters.engine.generation.generate_bank` runs per batch:
  ``generate(do_sample=False, repetition_penalty=1.05, logits_processor=[LimitVocabulary,
  PerRowGumbelSampler(per-row seeds, T=1, top-k 50, top-p 0.9)])``;
* ``plain``: ``generate(do_sample=True, temperature=1, top_k=50, top_p=0.9,
  repetition_penalty=1.05)`` (one RNG stream for the batch: not reproducible per row).

Both get ``min_new_tokens = max_new_tokens`` (transformers masks EOS until then), so every row
of every call decodes exactly ``max_new_tokens`` tokens (checked) and tokens/s compare the same
work (plain sampling may draw the pad token or padded embedding rows, which the bank path forbids;
the adapter trims a trailing pad token from such a row, but the decoding steps are the same). Contenders alternate within one run (one warm-up each, then ``--repeats`` timed calls
each); the ratio is bank tokens/s over plain tokens/s from that run.

A second table isolates the sampler: one decoding step's sampling (temperature, top-k, top-p,
draw) on random logits at realistic vocabulary sizes, per-row Gumbel against
``softmax`` + ``multinomial``, since the tiny models' ~80-token vocabulary hides that cost.

Writes benchmarks/results/generation.json and .md.

``--backends`` instead compares the two generation backends on the bank path itself (a
``GenerationSession.generate`` call per batch, per-row seeds, the same sampling settings): ``hf``
against ``vllm`` (masters' Gumbel sampler inside vLLM, rows equal to hf's) at three sizes (tiny,
~10M, ~25M parameters; head size >= 32, the least vLLM's CPU attention takes) in float32 and
bfloat16. The vLLM worker's start-up (venv imports) and each engine's start-up are reported
separately from the per-call medians; whether the rows came out equal is recorded per row.
Needs ``.venv-vllm`` (``bash .ci/setup test``). Writes benchmarks/results/generation-vllm.json and .md::

    flock /tmp/masters-bench.lock python benchmarks/generation.py --backends [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLING = {"temperature": 1.0, "top_k": 50, "top_p": 0.9, "repetition_penalty": 1.05}
MODELS = {
    # name: (size, overrides, image size in px)
    "tiny": ("tiny", {}, 32),
    "medium": ("small", {"hidden": 384, "layers": 6, "heads": 6, "intermediate": 1024, "vision_hidden": 128,
                         "vision_layers": 2}, 64),
}


def build(name: str, root: Path) -> Path:
    import masters.models.tiny as tiny

    size, overrides, px = MODELS[name]
    path = root / name
    previous = tiny.IMAGE_SIZE
    tiny.IMAGE_SIZE = px  # the tiny recipes read the image size from this module constant
    try:
        tiny.build_tiny_model("llava", size, path, **overrides)
    finally:
        tiny.IMAGE_SIZE = previous
    return path


# --backends: name -> (size, overrides, image px); all with attention head size >= 32
BACKEND_MODELS = {
    "tiny": ("small", {}, 32),
    "10M": ("small", {"hidden": 384, "layers": 6, "heads": 6, "intermediate": 1024, "vision_hidden": 128,
                      "vision_layers": 2}, 64),
    "25M": ("small", {"hidden": 512, "layers": 8, "heads": 8, "intermediate": 1536, "vision_hidden": 128,
                      "vision_layers": 2}, 64),
}


def build_backend_model(name: str, root: Path) -> Path:
    import masters.models.tiny as tiny

    size, overrides, px = BACKEND_MODELS[name]
    path = root / f"backend-{name}"
    previous = tiny.IMAGE_SIZE
    tiny.IMAGE_SIZE = px
    try:
        tiny.build_tiny_model("llava", size, path, **overrides)
    finally:
        tiny.IMAGE_SIZE = previous
    return path


def bench_backends(name: str, dtype: str, root: Path, batch_size: int, new_tokens: int, repeats: int,
                   threads: int = 1) -> dict:
    """hf vs vllm sessions on one batch of the bank path: alternating calls, medians, start-ups apart."""
    from masters.backends.specs import HFBackendSpec, VLLMBackendSpec
    from masters.config import run_spec_model
    from masters.engine.identity import derived_seed
    from masters.interfaces import SamplingSettings
    from masters.tasks.shapes import generate_shapes

    path = root / f"backend-{name}"
    if not (path / "config.json").exists():
        build_backend_model(name, root)
    entry = run_spec_model().model_fields["student"].annotation.model_validate(
        {"path": str(path), "adapter": {"name": "llava", "dtype": dtype}})
    questions = generate_shapes(max(1, batch_size // 2), 0, 1, seed=0, image_size=BACKEND_MODELS[name][2])["train"]
    samples = [questions[i // 2] for i in range(batch_size)]
    settings = SamplingSettings(max_new_tokens=new_tokens, **SAMPLING)
    started = time.perf_counter()
    hf = HFBackendSpec().build().open(entry, vocab_limit=10**9)
    hf_open = time.perf_counter() - started
    vocab_limit = len(hf.adapter.tokenizer)
    hf.vocab_limit = vocab_limit
    backend = VLLMBackendSpec(keep_engines=False, kv_cache_mib=128, max_num_seqs=max(batch_size, 8),
                              threads=threads, reduced_precision="refuse" if dtype == "float32" else "own_bank").build()
    worker_started = time.perf_counter()
    worker = backend.worker()
    worker_s = time.perf_counter() - worker_started if worker.startup_s > 0 else 0.0
    started = time.perf_counter()
    vllm = backend.open(entry, vocab_limit=vocab_limit)
    vllm_open = time.perf_counter() - started
    contenders = {"hf": hf, "vllm": vllm}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    tokens: dict[str, int] = {}
    equal = True
    for call in range(repeats + 1):  # call 0 warms up
        seeds = [derived_seed(0, "teacher", name, call, s.id, i % 2) for i, s in enumerate(samples)]
        outputs = {}
        for key, session in contenders.items():
            start = time.perf_counter()
            outputs[key] = [r.token_ids for r in session.generate(samples, seeds, settings)]
            if call:
                times[key].append(time.perf_counter() - start)
                tokens[key] = tokens.get(key, 0) + sum(len(r) for r in outputs[key])
        equal = equal and outputs["hf"] == outputs["vllm"]
    params = sum(p.numel() for p in hf.adapter.model.parameters())
    cfg = hf.adapter.model.config.text_config
    row = {"model": name, "dtype": dtype, "parameters": params, "hidden": cfg.hidden_size,
           "layers": cfg.num_hidden_layers, "head_size": cfg.hidden_size // cfg.num_attention_heads,
           "image_px": BACKEND_MODELS[name][2], "batch_size": batch_size, "new_tokens": new_tokens,
           "hf_load_s": round(hf_open, 2), "vllm_worker_startup_s": round(worker_s, 2),
           "vllm_engine_startup_s": round(vllm_open, 2), "rows_equal": equal}
    for key in contenders:
        per_call = tokens[key] / repeats
        median = statistics.median(times[key])
        row[f"{key}_s"] = round(median, 4)
        row[f"{key}_tokens_per_s"] = round(per_call / median, 1)
        row[f"{key}_spread"] = round((max(times[key]) - min(times[key])) / median, 2)
    row["ratio_vllm_over_hf"] = round(row["vllm_tokens_per_s"] / row["hf_tokens_per_s"], 2)
    hf.close()
    vllm.close()
    return row


def main_backends(args: argparse.Namespace) -> int:
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="masters-bench-") as tmp:
        for name in args.backend_models:
            for dtype in args.dtypes:
                row = bench_backends(name, dtype, Path(tmp), args.batch_size, args.new_tokens, args.repeats,
                                     args.threads)
                rows.append(row)
                print(json.dumps(row), flush=True)
    from masters.backends.vllm import shared_worker, stop_workers

    hello = shared_worker().hello
    stop_workers()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "what": "bank generation throughput, hf backend (transformers generate + PerRowGumbelSampler) vs vllm backend "
        "(vLLM engine in its own venv and process, the same sampler as a logits processor), one "
        f"GenerationSession.generate call of {args.batch_size} rows (two per question, per-row seeds) with sampling "
        f"settings {SAMPLING} and max_new_tokens {args.new_tokens}; tokens/s = generated tokens / median call time "
        f"over {args.repeats} alternating calls after one warm-up; {args.threads} torch/OpenMP thread(s) on each "
        "side; start-ups (hf model load, vLLM worker import, vLLM engine) measured apart",
        "machine": {"python": sys.version.split()[0], "torch": torch.__version__,
                    "transformers": transformers.__version__, "vllm": hello.get("vllm"),
                    "vllm_torch": hello.get("torch"), "vllm_transformers": hello.get("transformers"),
                    "platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads,
                    "load_average_at_end": [round(x, 2) for x in load] if load else None,
                    "note": "CPU only, 2 cores shared with other processes: absolute numbers are noisy, compare "
                    "the ratios (alternating calls in one run)"},
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generation-vllm.json").write_text(json.dumps(result, indent=2) + "\n")
    head = ["model", "dtype", "params", "hidden x layers", "batch", "new tok", "hf tok/s", "vllm tok/s",
            "vllm / hf", "rows equal", "hf load s", "vLLM worker s", "vLLM engine s"]
    body = [[r["model"], r["dtype"], f"{r['parameters']:,}", f"{r['hidden']} x {r['layers']}", str(r["batch_size"]),
             str(r["new_tokens"]), f"{r['hf_tokens_per_s']:.1f}", f"{r['vllm_tokens_per_s']:.1f}",
             f"{r['ratio_vllm_over_hf']:.2f}", "yes" if r["rows_equal"] else "no", f"{r['hf_load_s']:.1f}",
             f"{r['vllm_worker_startup_s']:.1f}", f"{r['vllm_engine_startup_s']:.1f}"] for r in rows]
    md = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                    *("| " + " | ".join(x) + " |" for x in body)])
    (RESULTS / "generation-vllm.md").write_text(
        "# Bank generation: hf backend vs vllm backend\n\n" + result["what"] + ".\n\n"
        f"{platform.platform()}, {os.cpu_count()} CPUs; masters: torch {torch.__version__}, transformers "
        f"{transformers.__version__}; worker: vllm {hello.get('vllm')}, torch {hello.get('torch')}, transformers "
        f"{hello.get('transformers')}. {result['machine']['note']}. The vLLM worker start-up is paid once per "
        "process (it is 0 after the first row), an engine once per model and dtype.\n\n" + md + "\n")
    print(md)
    return 0


def bench_model(name: str, root: Path, batch_size: int, new_tokens: int, repeats: int) -> dict:
    import torch

    from masters.adapters import resolve_adapter
    from masters.tasks.shapes import generate_shapes
    from masters.engine.identity import derived_seed
    from masters.engine.sampling import LimitVocabulary, PerRowGumbelSampler, banned_response_ids

    adapter = resolve_adapter(build(name, root))
    samples = generate_shapes(batch_size, 0, 1, seed=0, image_size=MODELS[name][2])["train"]
    vocab_size = len(adapter.tokenizer)

    def bank(call: int) -> list[list[int]]:
        seeds = [derived_seed(0, "teacher", name, call, s.id, 0) for s in samples]
        processors = [LimitVocabulary(vocab_size, banned_response_ids(adapter)),
                      PerRowGumbelSampler(seeds, temperature=SAMPLING["temperature"], top_k=SAMPLING["top_k"],
                                          top_p=SAMPLING["top_p"])]
        return adapter.generate(samples, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                repetition_penalty=SAMPLING["repetition_penalty"], logits_processor=processors)

    def plain(call: int) -> list[list[int]]:
        return adapter.generate(samples, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                                seed=call, **SAMPLING)

    contenders = {"bank": bank, "plain": plain}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for call in range(repeats + 1):  # call 0 is the warm-up
        for key, fn in contenders.items():
            start = time.perf_counter()
            out = fn(call)
            elapsed = time.perf_counter() - start
            # Every call decodes exactly new_tokens steps (EOS is masked until then); the adapter trims a
            # trailing pad token from a row, which only plain sampling can produce (the bank bans it).
            lengths = {len(r) for r in out}
            if len(out) != batch_size or max(lengths) != new_tokens or (key == "bank" and lengths != {new_tokens}):
                raise RuntimeError(f"{name}/{key}: expected {batch_size} rows of {new_tokens} tokens, got {lengths}")
            if call:
                times[key].append(elapsed)
    tokens = batch_size * new_tokens
    row = {
        "model": name,
        "parameters": sum(p.numel() for p in adapter.model.parameters()),
        "hidden": adapter.model.config.text_config.hidden_size,
        "layers": adapter.model.config.text_config.num_hidden_layers,
        "image_px": MODELS[name][2],
        "vocab": vocab_size,
        "prompt_tokens": int(adapter.encode(samples).inputs["input_ids"].shape[1]),
        "batch_size": batch_size,
        "new_tokens": new_tokens,
        "torch_threads": torch.get_num_threads(),
    }
    for key in contenders:
        median = statistics.median(times[key])
        row[f"{key}_s"] = round(median, 4)
        row[f"{key}_tokens_per_s"] = round(tokens / median, 1)
        row[f"{key}_spread"] = round((max(times[key]) - min(times[key])) / median, 2)
    row["ratio_bank_over_plain"] = round(row["bank_tokens_per_s"] / row["plain_tokens_per_s"], 3)
    return row


def bench_sampler(vocab: int, batch_size: int, repeats: int) -> dict:
    """One step's sampling on (batch, vocab) random logits: per-row Gumbel vs softmax + multinomial."""
    import torch

    from masters.engine.sampling import PerRowGumbelSampler, filter_top_k_top_p

    logits = torch.randn(batch_size, vocab, generator=torch.Generator().manual_seed(0)) * 3
    sampler = PerRowGumbelSampler(list(range(batch_size)), temperature=1.0, top_k=50, top_p=0.9)

    def gumbel():
        return sampler(None, logits).argmax(-1)

    def multinomial():
        probs = torch.softmax(filter_top_k_top_p(logits / 1.0, 50, 0.9), dim=-1)
        return torch.multinomial(probs, 1)

    def median_ms(fn) -> float:
        fn()
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return 1000 * statistics.median(out)

    g, m = median_ms(gumbel), median_ms(multinomial)
    return {"vocab": vocab, "batch_size": batch_size, "gumbel_ms": round(g, 3), "multinomial_ms": round(m, 3),
            "ratio_gumbel_over_multinomial": round(g / m, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--sampler-vocab", nargs="*", type=int, default=[32_000, 151_936],
                        help="vocabulary sizes for the sampler-only table (Llama 2, Qwen)")
    parser.add_argument("--backends", action="store_true", help="compare the hf and vllm generation backends")
    parser.add_argument("--backend-models", nargs="*", default=list(BACKEND_MODELS), choices=list(BACKEND_MODELS))
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.backends:
        return main_backends(args)
    import torch
    import transformers
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="masters-bench-") as tmp:
        for name in args.models:
            row = bench_model(name, Path(tmp), args.batch_size, args.new_tokens, args.repeats)
            rows.append(row)
            print(json.dumps(row), flush=True)
    sampler_rows = [bench_sampler(v, args.batch_size, max(args.repeats, 10)) for v in args.sampler_vocab]
    for row in sampler_rows:
        print(json.dumps(row), flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "what": "generation throughput, bank path (LimitVocabulary + PerRowGumbelSampler, do_sample=False) over "
        "plain batched transformers generate(do_sample=True), same prompts, batch size, max_new_tokens and "
        f"sampling settings {SAMPLING}; min_new_tokens = max_new_tokens so every row decodes exactly "
        f"{args.new_tokens} tokens; median of {args.repeats} alternating calls per contender after one warm-up",
        "machine": {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                    "platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads,
                    "load_average_at_end": [round(x, 2) for x in load] if load else None,
                    "note": "CPU only; the cores are shared with other processes, so absolute numbers are noisy: "
                    "compare the ratio, taken from one run with alternating calls"},
        "rows": rows,
        "sampler_step": sampler_rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generation.json").write_text(json.dumps(result, indent=2) + "\n")

    head = ["model", "params", "hidden x layers", "image px", "vocab", "prompt tok", "batch", "new tok",
            "bank tok/s", "plain tok/s", "bank / plain"]
    body = [[r["model"], f"{r['parameters']:,}", f"{r['hidden']} x {r['layers']}", str(r["image_px"]), str(r["vocab"]),
             str(r["prompt_tokens"]), str(r["batch_size"]), str(r["new_tokens"]), f"{r['bank_tokens_per_s']:.1f}",
             f"{r['plain_tokens_per_s']:.1f}", f"{r['ratio_bank_over_plain']:.3f}"] for r in rows]
    s_head = ["vocab", "batch", "per-row Gumbel ms", "softmax+multinomial ms", "ratio"]
    s_body = [[str(r["vocab"]), str(r["batch_size"]), f"{r['gumbel_ms']:.3f}", f"{r['multinomial_ms']:.3f}",
               f"{r['ratio_gumbel_over_multinomial']:.2f}"] for r in sampler_rows]
    console = Console(width=max(Console().width, 150))
    for title, h, b in (("generation throughput (CPU)", head, body), ("one sampling step (CPU)", s_head, s_body)):
        table = Table(title=title, title_justify="left")
        for column in h:
            table.add_column(column, justify="left" if column == "model" else "right")
        for line in b:
            table.add_row(*line)
        console.print(table)

    def md(h, b):
        return "\n".join(["| " + " | ".join(h) + " |", "|" + "---|" * len(h), *("| " + " | ".join(x) + " |" for x in b)])

    (RESULTS / "generation.md").write_text(
        "# Generation throughput: bank path vs plain `generate`\n\n"
        f"{result['what']}.\n\n{platform.platform()}, {os.cpu_count()} CPUs, {args.threads} torch thread(s), "
        f"torch {torch.__version__}, transformers {transformers.__version__}. {result['machine']['note']}.\n\n"
        + md(head, body) + "\n\nOne decoding step's sampling alone (temperature 1, top-k 50, top-p 0.9) on random "
        "logits at real vocabulary sizes; the per-row Gumbel sampler draws `vocab` uniforms per row from its own "
        "CPU generator:\n\n" + md(s_head, s_body) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
