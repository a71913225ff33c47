"""Masking benchmark: ranking, level switches, extra memory and forward cost of the masked teacher.

    flock /tmp/masters-bench.lock python benchmarks/masking.py            # ~120M maskable, fp32 + bf16
    python benchmarks/masking.py --model qwen2.5-vl-7b --dtypes bf16 --contenders on_the_fly --no-forward
    python benchmarks/masking.py --model qwen2.5-vl-7b --dtypes bf16 --contenders copy,stored --no-forward \
        --copy-reuse --tag stored    # the stored mode needs ~21 GB: run it alone
    python benchmarks/masking.py --rank-compare row,column --rank-repeats 5 --tag column \
        # column vs row ranking time, interleaved in one process per dtype (issue 12)

Each contender runs in its own subprocess (design decision 15) on the same randomly initialised
Qwen2.5-VL teacher built from a config, and samples its own RSS with psutil in a thread:

* ``copy``: ``copy_`` of every in-scope tensor into a preallocated buffer: the memory-traffic floor
  that a level switch is compared with (target: a switch within 2x of it).
* ``prune``: ``torch.nn.utils.prune.l1_unstructured`` (a full copy plus a bool mask per tensor);
  its "switch" recomputes ``weight = weight_orig * mask``.
* ``stored`` / ``indexed`` / ``on_the_fly``: :class:`masters.masking.MaskedTeacher` in each memory mode,
  once per masker of ``--maskers`` (default ``magnitude``, the paper's).

``--rank-compare row,column`` measures only ranking time, side by side: one process per dtype builds
the teacher once and, for each memory mode, ranks it ``--rank-repeats`` times with each masker,
alternating which goes first and restoring in between, so both see the same machine load (on a
shared machine, separate processes minutes apart do not). The column masker (a strided unit
layout) is compared with the row masker (contiguous units) it mirrors.

Switch times: the median over the whole sequence in ``SWITCHES`` (full jumps such as 0 -> 0.2
included), and the median of the four staircase steps (0.2 -> 0.15 -> ... -> 0) alone.

Results go to ``benchmarks/results/masking.json`` and ``.md`` (or ``masking-<model>.*``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = ("0.2", "0.15", "0.1", "0.05", "0")
SWITCHES = ("0.2", "0.15", "0.1", "0.05", "0", "0.2", "0.05", "0.15", "0")  # down, then up and down again
CONTENDERS = ("copy", "prune", "stored", "indexed", "on_the_fly")
MODES = ("stored", "indexed", "on_the_fly")  # the contenders that are a MaskedTeacher (one per masker)
STAIRCASE_STEPS = slice(1, 5)  # SWITCHES[1:5]: 0.2 -> 0.15 -> 0.1 -> 0.05 -> 0, what a staircase schedule does

MODELS = {
    # ~121M maskable weights: big enough to be memory-bound, small enough for a CPU benchmark.
    "qwen2.5-vl-120m": dict(
        text=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                  num_key_value_heads=4, vocab_size=8192, max_position_embeddings=4096,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 8, 8]}),
        vision=dict(depth=8, hidden_size=512, intermediate_size=1376, num_heads=8, out_hidden_size=1024,
                    fullatt_block_indexes=[3, 7], window_size=112, patch_size=14, spatial_merge_size=2,
                    temporal_patch_size=2),
    ),
    # The published Qwen2.5-VL-7B-Instruct config.json, written out by hand (no hub access here).
    "qwen2.5-vl-7b": dict(
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064, max_position_embeddings=128000,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                    fullatt_block_indexes=[7, 15, 23, 31], window_size=112, patch_size=14, spatial_merge_size=2,
                    temporal_patch_size=2),
    ),
}


# ---------------------------------------------------------------------------------------------
# Worker (one contender, one dtype, in its own process)
# ---------------------------------------------------------------------------------------------


class RSSSampler:
    """Peak RSS since the last mark, sampled every 2 ms in a thread (torch ops release the GIL)."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = self.rss()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def mark(self) -> int:
        peak, self.peak = max(self.peak, self.rss()), self.rss()
        return peak

    def settled(self) -> int:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed arenas back so RSS shows what is held
        except OSError:
            pass
        return self.rss()


def build_model(name: str, dtype: str):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = MODELS[name]
    special = {}
    if cfg["text"]["vocab_size"] < 151656:  # keep the image/video special tokens inside a small vocabulary
        top = cfg["text"]["vocab_size"]
        special = dict(image_token_id=top - 4, video_token_id=top - 3, vision_start_token_id=top - 2,
                       vision_end_token_id=top - 1)
    config = Qwen2_5_VLConfig(text_config=cfg["text"], vision_config=cfg["vision"], tie_word_embeddings=False, **special)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    with torch.device("meta"):  # no time spent on an init we overwrite anyway
        model = Qwen2_5_VLForConditionalGeneration(config)
    model = model.to_empty(device="cpu").to(torch_dtype)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02, generator=generator)
            else:
                p.fill_(1.0)
        for b in model.buffers():  # rotary inv_freq etc. were never computed on meta
            pass
    model.eval()
    return model, config


def fix_rotary(model) -> None:
    """Buffers created on the meta device hold garbage after to_empty: recompute rotary frequencies."""
    import torch

    for module in model.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "dim") and hasattr(module, "theta"):
            module.inv_freq = 1.0 / (module.theta ** (torch.arange(0, module.dim, 2, dtype=torch.float) / module.dim))
        elif hasattr(module, "inv_freq") and hasattr(module, "rope_init_fn"):
            inv_freq, _ = module.rope_init_fn(module.config, "cpu")
            module.inv_freq = inv_freq
            if hasattr(module, "original_inv_freq"):
                module.original_inv_freq = inv_freq


def forward_inputs(config, tokens: int = 128, grid: int = 8):
    """One image (grid x grid patches) and ``tokens`` text tokens, as the processor would give them."""
    import torch

    v = config.vision_config
    patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size
    n_image_tokens = grid * grid // (v.spatial_merge_size ** 2)
    g = torch.Generator().manual_seed(1)
    text = torch.randint(10, 1000, (1, tokens), generator=g)
    ids = torch.cat([torch.tensor([[config.vision_start_token_id]]), torch.full((1, n_image_tokens), config.image_token_id),
                     torch.tensor([[config.vision_end_token_id]]), text], dim=1)
    types = (ids == config.image_token_id).long()
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types,
                pixel_values=torch.randn(grid * grid, patch_dim, generator=g),
                image_grid_thw=torch.tensor([[1, grid, grid]]))


def time_forward(model, inputs, repeats: int = 3) -> float:
    import torch

    with torch.no_grad():
        model(**inputs)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(**inputs)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def masker_spec_class(name: str):
    from masters.masking.specs import BUILTIN_MASKER_SPECS

    by_name = {cls.model_fields["name"].default: cls for cls in BUILTIN_MASKER_SPECS}
    if name not in by_name:
        raise SystemExit(f"unknown masker {name!r}; built-ins: {', '.join(sorted(by_name))}")
    return by_name[name]


def worker(contender: str, dtype: str, model_name: str, forward: bool, masker: str = "magnitude",
           rank_repeats: int = 1) -> dict:
    import torch

    from masters.masking.runtime import MaskedTeacher
    from masters.masking.scope import find_maskable, select_scope

    torch.manual_seed(0)
    model, config = build_model(model_name, dtype)
    fix_rotary(model)
    spec = masker_spec_class(masker)(memory=contender if contender in ("stored", "indexed", "on_the_fly") else "stored")
    scope = select_scope(find_maskable(model), spec)
    tensors = [t for _, t in scope.values()]
    n = sum(t.numel() for t in tensors)
    bytes_per = tensors[0].element_size()
    inputs = forward_inputs(config) if forward else None
    sampler = RSSSampler()
    base = sampler.settled()
    sampler.mark()
    out: dict = {"contender": contender, "masker": masker if contender in MODES else None, "dtype": dtype, "maskable": n, "params": sum(p.numel() for p in model.parameters()),
                 "tensors": len(tensors), "baseline_rss": base, "threads": torch.get_num_threads()}

    if contender == "copy":
        if os.environ.get("MASTERS_BENCH_COPY_REUSE"):
            # A 7B teacher has no room for a second copy of itself: one buffer per distinct shape, reused.
            # Each copy still streams the whole source tensor from memory, so it remains the traffic floor.
            by_shape: dict = {}
            buffers = [by_shape.setdefault((t.shape, t.dtype), torch.empty_like(t)) for t in tensors]
            out["copy_buffers"] = "one per distinct shape (reused)"
        else:
            buffers = [torch.empty_like(t) for t in tensors]
        for b in buffers:
            b.zero_()  # fault the pages in: the floor is the copy, not the first touch
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for b, t in zip(buffers, tensors):
                b.copy_(t)
            times.append(time.perf_counter() - start)
        out["copy_s"] = statistics.median(times)
        out["extra_rss"] = sampler.settled() - base
    elif contender == "prune":
        from torch.nn.utils import prune

        owners = [(m, "weight") for m in model.modules() if isinstance(m, torch.nn.Linear) and any(m.weight is t for t in tensors)]
        start = time.perf_counter()
        for module, attr in owners:
            prune.l1_unstructured(module, attr, amount=0.2)
        out["prune_first_level_s"] = time.perf_counter() - start
        out["extra_rss"] = sampler.settled() - base
        out["peak_rank_rss"] = sampler.mark() - base
        # every level: torch.prune recomputes the mask from weight_orig (one topk per tensor and level)
        start = time.perf_counter()
        masks = {}
        for level in LEVELS[1:-1]:
            method = prune.L1Unstructured(amount=float(level))
            masks[level] = [method.compute_mask(getattr(m, attr + "_orig"), torch.ones_like(getattr(m, attr + "_mask"))) for m, attr in owners]
        out["rank_s"] = out["prune_first_level_s"] + time.perf_counter() - start
        masks.clear()
        times = []
        for _ in range(3):  # a switch: install a mask and recompute weight = orig * mask
            start = time.perf_counter()
            for m, attr in owners:
                setattr(m, attr, getattr(m, attr + "_orig") * getattr(m, attr + "_mask"))
            times.append(time.perf_counter() - start)
        out["switch_s"] = statistics.median(times)
    else:
        start = time.perf_counter()
        teacher = MaskedTeacher(scope, spec.build(), LEVELS, memory=spec.memory, model=model)
        out["rank_s"] = time.perf_counter() - start
        out["peak_rank_rss"] = sampler.mark() - base
        out["extra_rss"] = sampler.settled() - base
        out["extra_bytes_accounted"] = teacher.extra_bytes()
        out["bound_bytes"] = int(0.2 * n * (bytes_per + 4)) if contender == "indexed" else int(0.2 * n * bytes_per + n / 8)
        switches = []
        for level in SWITCHES:
            start = time.perf_counter()
            teacher.set_level(level)
            switches.append({"to": level, "s": time.perf_counter() - start})
        out["switches"] = switches
        out["switch_s"] = statistics.median(s["s"] for s in switches)
        out["switch_max_s"] = max(s["s"] for s in switches)
        out["step_switch_s"] = statistics.median(s["s"] for s in switches[STAIRCASE_STEPS])
        out["peak_switch_rss"] = sampler.mark() - base
        rep = teacher.report("0.2")
        out["realised_ratio_at_0.2"] = rep.ratio
        if forward:
            teacher.set_level("0.2")
            out["forward_s"] = time_forward(model, inputs)
            out["peak_forward_rss"] = sampler.mark() - base
            teacher.set_level("0")
            out["forward_unmasked_s"] = time_forward(model, inputs)
        if rank_repeats > 1:  # more rankings of the restored teacher; rank_s becomes their median
            teacher.close()
            del teacher
            times = [out["rank_s"]]
            for _ in range(rank_repeats - 1):
                gc.collect()
                start = time.perf_counter()
                again = MaskedTeacher(scope, spec.build(), LEVELS, memory=spec.memory, model=model)
                times.append(time.perf_counter() - start)
                again.close()
                del again
            out["rank_times_s"] = times
            out["rank_s"] = statistics.median(times)
    return out


def worker_rank_compare(dtype: str, model_name: str, maskers: list[str], repeats: int) -> dict:
    """Ranking time of each masker in each memory mode, interleaved in this one process."""
    import torch

    from masters.masking.runtime import MaskedTeacher
    from masters.masking.scope import find_maskable, select_scope

    torch.manual_seed(0)
    model, _ = build_model(model_name, dtype)
    first = list(select_scope(find_maskable(model), masker_spec_class(maskers[0])()).items())[:3]
    original = {n: t.detach().clone() for n, (_, t) in first}  # a few masked tensors, to check each close() restores
    out: dict = {"contender": "rank_compare", "dtype": dtype, "maskers": maskers, "repeats": repeats,
                 "threads": torch.get_num_threads(), "times": {}}
    for mode in MODES:
        times: dict[str, list[float]] = {m: [] for m in maskers}
        for i in range(repeats):
            for masker in maskers if i % 2 == 0 else list(reversed(maskers)):
                spec = masker_spec_class(masker)(memory=mode)
                scope = select_scope(find_maskable(model), spec)
                gc.collect()
                start = time.perf_counter()
                teacher = MaskedTeacher(scope, spec.build(), LEVELS, memory=mode, model=model)
                times[masker].append(time.perf_counter() - start)
                teacher.close()
                del teacher
        out["times"][mode] = times
    out["maskable"] = sum(t.numel() for _, t in scope.values())
    out["restored"] = all(torch.equal(t.detach(), original[n]) for n, (_, t) in first)
    return out


# ---------------------------------------------------------------------------------------------
# Parent: run every contender, print and record ratios
# ---------------------------------------------------------------------------------------------


def run_one(contender: str, dtype: str, model: str, forward: bool, timeout: int, masker: str = "magnitude",
            rank_repeats: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--worker", contender, "--dtypes", dtype, "--model", model,
           "--maskers", masker, "--rank-repeats", str(rank_repeats)]
    if not forward:
        cmd.append("--no-forward")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        return {"contender": contender, "masker": masker if contender in MODES else None, "dtype": dtype,
                "error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def label(r: dict) -> str:
    """A result's contender, with its masker when that is not the default magnitude masker."""
    masker = r.get("masker")
    return r["contender"] if masker in (None, "magnitude") else f"{r['contender']}:{masker}"


def summarise(results: list[dict]) -> list[dict]:
    rows = []
    for dtype in sorted({r["dtype"] for r in results}):
        by = {label(r): r for r in results if r["dtype"] == dtype and "error" not in r}
        copy_s = by.get("copy", {}).get("copy_s")
        for name, r in by.items():
            if name == "copy":
                continue
            n = r["maskable"]
            row = {
                "dtype": dtype, "contender": r["contender"], "masker": r.get("masker"), "maskable_M": round(n / 1e6, 1),
                "rank_all_levels_s": round(r["rank_s"], 3),
                "rank_s_per_100M": round(r["rank_s"] / (n / 1e8), 3),
                "switch_median_s": round(r["switch_s"], 4),
                "copy_floor_s": round(copy_s, 4) if copy_s else None,
                "switch_over_copy": round(r["switch_s"] / copy_s, 2) if copy_s else None,
                "step_switch_s": round(r["step_switch_s"], 4) if "step_switch_s" in r else None,
                "step_over_copy": round(r["step_switch_s"] / copy_s, 2) if copy_s and "step_switch_s" in r else None,
                "extra_bytes_per_param": round(r["extra_rss"] / n, 3),
                "bound_bytes_per_param": round(r["bound_bytes"] / n, 3) if "bound_bytes" in r else None,
                "accounted_bytes_per_param": round(r["extra_bytes_accounted"] / n, 3) if "extra_bytes_accounted" in r else None,
            }
            stored = "stored" if r.get("masker") in (None, "magnitude") else f"stored:{r['masker']}"
            if "forward_s" in r and stored in by and "forward_s" in by[stored]:
                row["forward_s"] = round(r["forward_s"], 3)
                row["forward_over_materialised"] = round(r["forward_s"] / by[stored]["forward_s"], 2)
            rows.append(row)
    return rows


def target_checks(rows: list[dict]) -> list[tuple[str, str, str, str, bool | None]]:
    """(dtype, mode, target, measured, met) for each of the issue's targets that a row measures."""
    checks = []
    for row in rows:
        d, mode, shown = row["dtype"], row["contender"], label(row)
        if mode == "prune":
            continue
        checks.append((d, shown, "all levels ranked in <= 3 s per 100M weights", f"{row['rank_s_per_100M']} s",
                       row["rank_s_per_100M"] <= 3))
        if mode in ("stored", "indexed") and row.get("switch_over_copy") is not None:
            checks.append((d, shown, "a level switch <= 2x the copy floor (median of the sequence)",
                           f"{row['switch_over_copy']}x", row["switch_over_copy"] <= 2))
            checks.append((d, shown, "a staircase step <= 2x the copy floor", f"{row['step_over_copy']}x",
                           row["step_over_copy"] <= 2))
        if mode in ("stored", "indexed") and row.get("bound_bytes_per_param") is not None:
            bound = row["bound_bytes_per_param"]
            checks.append((d, shown, f"extra memory about the mode's bound ({bound} B/weight; RSS within 10%)",
                           f"{row['extra_bytes_per_param']} B/weight RSS, {row['accounted_bytes_per_param']} held",
                           row["extra_bytes_per_param"] <= 1.1 * bound))
        if mode == "on_the_fly":
            checks.append((d, shown, "extra memory near zero (< 0.1 B/weight)", f"{row['extra_bytes_per_param']} B/weight",
                           row["extra_bytes_per_param"] < 0.1))
            if row.get("forward_over_materialised") is not None:
                checks.append((d, shown, "forward time against the materialised mask (reported, no target)",
                               f"{row['forward_over_materialised']}x", None))
    return checks


COLUMN_OVER_ROW_TARGET = 1.5  # issue 12: the column masker ranks within 1.5x of the row masker


def column_vs_row(results: list[dict]) -> list[dict]:
    """Ranking time of the column masker against the row masker, same dtype and memory mode,
    interleaved in one process (``--rank-compare row,column``)."""
    out = []
    for r in results:
        if r.get("contender") != "rank_compare" or "error" in r or not {"row", "column"} <= set(r["maskers"]):
            continue
        for mode, times in r["times"].items():
            row_s, col_s = statistics.median(times["row"]), statistics.median(times["column"])
            ratio = col_s / row_s
            out.append({"dtype": r["dtype"], "mode": mode, "maskable_M": round(r["maskable"] / 1e6, 1),
                        "row_rank_s": round(row_s, 3), "column_rank_s": round(col_s, 3),
                        "column_over_row": round(ratio, 2), "met": ratio <= COLUMN_OVER_ROW_TARGET,
                        "row_times_s": [round(t, 2) for t in times["row"]],
                        "column_times_s": [round(t, 2) for t in times["column"]]})
    return out


def write_results(results: list[dict], rows: list[dict], model: str, wall: float, tag: str = "") -> Path:
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "masking" if model == "qwen2.5-vl-120m" else f"masking-{model}"
    if os.environ.get("OMP_NUM_THREADS"):
        stem += f"-threads{os.environ['OMP_NUM_THREADS']}"
    stem += f"-{tag}" if tag else ""
    meta = {"model": model, "machine": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "levels": list(LEVELS), "switch_sequence": list(SWITCHES), "wall_s": round(wall, 1),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    layouts = column_vs_row(results)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "summary": rows, "column_vs_row": layouts,
                                                      "raw": results}, indent=2) + "\n")
    cols = list(dict.fromkeys(k for row in rows for k in row))
    threads = sorted({r["threads"] for r in results if "threads" in r})
    lines = [f"# Masking benchmark: {model}", "", f"{meta['date']}, {meta['machine']}, {meta['cpus']} CPUs, torch {meta['torch']}, "
             f"torch threads per process: {', '.join(map(str, threads)) or 'unknown'}."]
    if rows:
        lines += ["Each contender ran in its own subprocess; extra memory is settled RSS after ranking minus the baseline.", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for row in rows:
            lines.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in cols) + " |")
        lines += ["", f"Switch sequence {' -> '.join(SWITCHES)}; `step_*` is its staircase part "
                  f"({' -> '.join(SWITCHES[STAIRCASE_STEPS.start - 1:STAIRCASE_STEPS.stop])}).",
                  "", "## Targets (issue 3)", "", "| dtype | mode | target | measured | met |", "|---|---|---|---|---|"]
        lines += [f"| {d} | {m} | {t} | {v} | {'n/a' if ok is None else 'yes' if ok else 'no'} |" for d, m, t, v, ok in target_checks(rows)]
    if layouts:
        lines += ["", "## Column vs row ranking (issue 12)", "",
                  "All levels ranked by the column masker (a strided unit layout: each input column) against the "
                  "row masker (contiguous rows), interleaved in one process per dtype on the same teacher (restored "
                  f"between rankings); target: column <= {COLUMN_OVER_ROW_TARGET}x row. Times are medians of the runs listed.", "",
                  "| dtype | mode | maskable M | row rank s | column rank s | column / row | met | row runs s | column runs s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {c['dtype']} | {c['mode']} | {c['maskable_M']} | {c['row_rank_s']} | {c['column_rank_s']} | "
                  f"{c['column_over_row']}x | {'yes' if c['met'] else 'no'} | {c['row_times_s']} | {c['column_times_s']} |"
                  for c in layouts]
    errors = [r for r in results if "error" in r]
    for r in errors:
        lines += ["", f"**{label(r)} {r['dtype']} failed:**", "```", r["error"][-1500:], "```"]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return RESULTS / f"{stem}.md"


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="masking: ratios against baselines measured in the same run")
    cols = ["dtype", "contender", "masker", "rank_s_per_100M", "switch_median_s", "switch_over_copy", "step_over_copy",
            "extra_bytes_per_param",
            "bound_bytes_per_param", "forward_over_materialised"]
    for c in cols:
        table.add_column(c)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in cols))
    Console().print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-vl-120m", choices=sorted(MODELS))
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--no-forward", action="store_true", help="skip the forward-time comparison")
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per worker (0: torch's default). On a shared, oversubscribed machine "
                             "OpenMP barriers make 2 threads far slower than 1.")
    parser.add_argument("--copy-reuse", action="store_true",
                        help="copy floor into one reused buffer per tensor shape (for teachers with no room for a copy)")
    parser.add_argument("--tag", default="", help="suffix of the results file name (keep earlier runs)")
    parser.add_argument("--maskers", default="magnitude",
                        help="built-in maskers the MaskedTeacher contenders run with, e.g. row,column (one subprocess each)")
    parser.add_argument("--rank-repeats", type=int, default=1,
                        help="rank the restored teacher this many times in each worker and report the median")
    parser.add_argument("--rank-compare", default="",
                        help="only compare ranking times of these maskers (e.g. row,column), interleaved in one process per dtype")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the workers
    if args.copy_reuse:
        os.environ["MASTERS_BENCH_COPY_REUSE"] = "1"
    if args.worker == "rank_compare":
        print(json.dumps(worker_rank_compare(args.dtypes, args.model, args.rank_compare.split(","), args.rank_repeats)))
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, args.dtypes, args.model, not args.no_forward, args.maskers,
                                args.rank_repeats)))
        return 0
    start = time.perf_counter()
    results = []
    if args.rank_compare:
        for dtype in args.dtypes.split(","):
            print(f"ranking {args.rank_compare} {dtype} x{args.rank_repeats} per mode ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--worker", "rank_compare", "--dtypes", dtype, "--model", args.model,
                   "--rank-compare", args.rank_compare, "--rank-repeats", str(args.rank_repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else
                           {"contender": "rank_compare", "dtype": dtype, "error": (proc.stderr or proc.stdout)[-2000:]})
        for c in column_vs_row(results):
            print(f"{c['dtype']} {c['mode']}: row {c['row_rank_s']} s, column {c['column_rank_s']} s, "
                  f"column/row {c['column_over_row']}x", file=sys.stderr)
        path = write_results(results, [], args.model, time.perf_counter() - start, args.tag)
        print(f"results: {path} and {path.with_suffix('.json')}")
        return 0
    for dtype in args.dtypes.split(","):
        for contender in args.contenders.split(","):
            for masker in args.maskers.split(",") if contender in MODES else ["magnitude"]:
                print(f"running {contender} {masker if contender in MODES else ''} {dtype} ...", file=sys.stderr, flush=True)
                results.append(run_one(contender, dtype, args.model, not args.no_forward, args.timeout, masker,
                                       args.rank_repeats))
                if "error" in results[-1]:
                    print(results[-1]["error"][-800:], file=sys.stderr)
    rows = summarise(results)
    print_table(rows)
    path = write_results(results, rows, args.model, time.perf_counter() - start, args.tag)
    print(f"results: {path} and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
