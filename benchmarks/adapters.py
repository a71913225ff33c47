"""Per-family forward+backward and generation times of the tiny models.

    flock /tmp/masters-bench.lock python benchmarks/adapters.py [--size tiny] [--repeats 5]

For every tiny family: teacher forcing of a batch of 4 shapes questions with 8-token responses,
forward + backward (median of ``--repeats``), and batched greedy generation of 16 new tokens for
the same batch (EOS suppressed so every run decodes the same number of steps). Writes
benchmarks/results/adapters.json and .md.
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


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first calls pay for lazy initialisation
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_family(family: str, size: str, root: Path, repeats: int, new_tokens: int) -> dict:
    import torch

    from masters.adapters import resolve_adapter
    from masters.tasks.shapes import generate_shapes
    from masters.models import build_tiny_model

    path = root / f"{family}-{size}"
    build_tiny_model(family, size, path)
    adapter = resolve_adapter(path)
    samples = generate_shapes(4, 0, 1, seed=0)["train"]
    words = adapter.response_ids(["red blue circle square big small left right"])[0]  # 8 words + EOS
    responses = [words[:8] for _ in samples]
    eos = adapter.eos_token_ids

    def fwd_bwd():
        adapter.model.zero_grad(set_to_none=True)
        adapter.teacher_force(samples, responses).token_loss().backward()

    class NoEos:  # decode exactly new_tokens steps
        def __call__(self, input_ids, scores):
            scores[:, eos] = -float("inf")
            return scores

    def generate():
        adapter.generate(samples, max_new_tokens=new_tokens, temperature=0, logits_processor=[NoEos()])

    prompt_len = adapter.encode(samples).inputs["input_ids"].shape[1]
    return {
        "family": family,
        "size": size,
        "parameters": sum(p.numel() for p in adapter.model.parameters()),
        "prompt_tokens": int(prompt_len),
        "forward_backward_ms": round(1000 * _median_time(fwd_bwd, repeats), 1),
        "generate_ms": round(1000 * _median_time(generate, max(1, repeats // 2)), 1),
        "generate_ms_per_token": None,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--families", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 keeps medians stable on a shared machine)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    import transformers

    from masters.models import TINY_FAMILIES

    rows = []
    with tempfile.TemporaryDirectory(prefix="masters-bench-") as tmp:
        for family in args.families or TINY_FAMILIES:
            row = bench_family(family, args.size, Path(tmp), args.repeats, args.new_tokens)
            row["generate_ms_per_token"] = round(row["generate_ms"] / args.new_tokens, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "what": "tiny VLMs: teacher-forced forward+backward (batch 4, 8 response tokens) and batched greedy "
        f"generation ({args.new_tokens} new tokens, batch 4); medians",
        "machine": {"python": sys.version.split()[0], "torch": torch.__version__,
                    "transformers": transformers.__version__, "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "adapters.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| family | params | prompt tokens | fwd+bwd ms | generate ms | ms/token |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['family']} | {r['parameters']:,} | {r['prompt_tokens']} | {r['forward_backward_ms']} | "
              f"{r['generate_ms']} | {r['generate_ms_per_token']} |" for r in rows]
    (RESULTS / "adapters.md").write_text(result["what"] + "\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
