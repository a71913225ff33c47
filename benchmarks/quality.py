"""Quality on the shapes task: the baselines, TRL GOLD and Masters over seeds, and the paper's sweeps.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality.py [--seeds 0,1,2,3,4] [--out runs/quality]
        [--trl-python /tmp/trl-venv/bin/python] [--skip-gold]

One teacher and one base student (``masters demo``'s: a LLaVA "small" teacher trained from scratch
on the shapes task and a LLaVA "tiny" student after a short supervised warm-up, both cached by their
settings), one response bank generated at every level from 0 to 0.5 in steps of 0.05 (8 teacher
responses per question and level, 8 student responses per question) and scored once. Every cell
below trains from that base student on the same 512 questions for the same 128 optimizer steps,
then is scored by greedy exact match on the same 1000 held-out test questions (``--n-eval``; the
runs' own 300-question test split is their first 300):

1. ``main``: SFT, naive KD, mask-progressive KD and full Masters (r_max 0.2, 4 + 4) x seeds, plus
   TRL's GOLDTrainer off-policy (``lmbda=0``, JSD ``beta=0.5``) on the same questions, answers,
   steps, batch and learning rate as naive KD (its closest counterpart), run in the TRL venv;
2. ``rmax``: Masters with r_max in {0, 0.1, ..., 0.5} (the paper's Table 5a) x seeds;
3. ``mix``: Masters with n_teacher + n_student in {8+0, 6+2, 4+4, 2+6, 0+8} (Table 5c) x seeds;
4. ``lr``: the four engine methods again at learning rates 5e-5 and 5e-4, so that no method's rank
   rests on the one shared learning rate (2e-4, chosen for the demo);
5. ``objective``: Masters with its terms taken out one at a time (the distillation reward, the KL
   to the initial student), next to mask-progressive KD (no policy term at all): which term moves
   the result;
6. ``policy``: the policy term alone (accuracy reward, no KL, no JSD loss: offline GRPO over the
   bank) with 8 + 0, 4 + 4 and 0 + 8 responses: does it help on its own, and with whose responses?
7. ``negative``: Masters with its push-down bounded (``training.negative_advantages``:
   ``probability_weighted`` or ``zero``), with and without the KL and the JSD loss: is it the
   push-down half of the policy term that costs?
8. ``rmax_bounded``: the r_max sweep again with ``negative_advantages: zero``: with the policy term
   no longer costing accuracy, does masking the teacher help (the paper's central claim)?

Seeds vary the distillation run's data order, group draws and sampling (decision 10); the teacher,
the base student and the bank are shared (the paper's pretrained checkpoints, and decision 10's
shared bank, which holds the base student's own responses). The grids run through
``masters.engine.ablate.run_grid``, so a killed study reruns only the unfinished cells.

Writes benchmarks/results/quality.json, quality.md and quality.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "results"
BANK_LEVELS_MAX = 0.5
RMAX_SWEEP = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
MIX_SWEEP = [[8, 0], [6, 2], [4, 4], [2, 6], [0, 8]]
METHODS = ["sft", "naive_kd", "progressive_kd", "masters"]
LR_CHECK = [5e-5, 5e-4]  # around the shared 2e-4: is a method's rank an artefact of one learning rate?
OBJECTIVE = {"training.method": ["masters", "masters_no_distill_reward"], "training.beta": [0.0, 0.1]}
NEGATIVE = {"training.negative_advantages": ["probability_weighted", "zero"],
            "training.beta+training.distill_loss_weight": [[0.1, 1.0], [0.0, 1.0], [0.0, 0.0]]}
POLICY_ONLY = {"training.method": ["masters_no_distill_reward"], "training.beta": [0.0],
               "training.distill_loss_weight": [0.0], "training.n_teacher+training.n_student": [[8, 0], [4, 4], [0, 8]]}
RMAX_BOUNDED = {"schedule.r_max": RMAX_SWEEP, "training.negative_advantages": ["zero"]}
ABLATIONS = {"objective": OBJECTIVE, "policy": POLICY_ONLY, "negative": NEGATIVE, "rmax_bounded": RMAX_BOUNDED}
LABELS = {"base": "base student", "sft": "SFT", "naive_kd": "naive KD", "gold": "TRL GOLD (off-policy JSD)",
          "progressive_kd": "mask-progressive KD", "masters": "Masters"}


# =============================================================================================
# Shared pieces: data, teacher, base student, the bank
# =============================================================================================


def demo_spec(out: Path, cache: Path | None):
    from masters.demo.spec import DemoSpec

    return DemoSpec(output_dir=str(out), cache_dir=str(cache) if cache else None)


def prepare(spec, out: Path, n_eval: int) -> dict:
    """The task's splits, the shared tokenizer, the teacher and the base student (cached)."""
    from masters.tasks.shapes import generate_shapes
    from masters.demo.run import _trained_model
    from masters.models import build_tokenizer

    d = spec.data
    n_train = max(spec.teacher.n_train, spec.student.n_train, spec.distill.n_train)
    splits = generate_shapes(n_train, 0, spec.n_test, image_size=d.image_size, seed=d.seed, forms=d.forms,
                             question_types=d.question_types, max_shapes=d.max_shapes)
    # The report's test set: the same stream drawn further (its first n_test items are the runs' own test
    # split, and no item is in train), so a seed-to-seed difference is not lost in the test set's noise.
    big = generate_shapes(n_train, 0, n_eval, image_size=d.image_size, seed=d.seed, forms=d.forms,
                          question_types=d.question_types, max_shapes=d.max_shapes)
    assert [x.id for x in big["train"]] == [x.id for x in splits["train"]]
    assert [x.id for x in big["test"][: spec.n_test]] == [x.id for x in splits["test"]]
    tokenizer = out / "tokenizer"
    if not (tokenizer / "tokenizer.json").exists():
        build_tokenizer(tokenizer)
    say = lambda text: print(text, flush=True)  # noqa: E731
    teacher, _, _ = _trained_model(spec, "teacher", spec.teacher, tokenizer, splits, True, say)
    student, _, _ = _trained_model(spec, "student", spec.student, tokenizer, splits, True, say)
    return {"splits": splits, "eval": big["test"], "teacher": teacher, "student": student}


def base_config(spec, teacher: Path, student: Path, out: Path) -> dict:
    """The run config every cell starts from: the demo's distillation settings, a shared all-level bank."""
    d = spec.distill
    return {
        "output_dir": str(out / "base-run"), "bank_dir": str(out / "bank"), "seed": 0,
        "teacher": str(teacher), "student": str(student),
        "data": {**spec.data.model_dump(mode="json"), "n_train": d.n_train, "n_test": spec.n_test, "n_validation": 0},
        "schedule": {"name": "staircase", "r_max": d.r_max, "step": d.step},
        "rewards": ["exact_match", "jsd_distill"],
        "generation": {"n_teacher_responses": 8, "n_student_responses": 8, "max_new_tokens": d.max_new_tokens,
                       "batch_size": 64, "bank_levels": "all"},
        "training": {"method": "masters", "learning_rate": d.learning_rate, "n_teacher": 4, "n_student": 4,
                     "questions_per_step": d.questions_per_step, "checkpoint_every": 10**9},
    }


def build_bank(base: dict) -> dict:
    """Generate and score the bank at every level 0..0.5 (a run spec with r_max 0.5 and bank_levels all)."""
    import copy

    from masters.bank.store import ResponseBank
    from masters.engine.pipeline import run_pipeline
    from masters.config import validate_run_spec

    config = copy.deepcopy(base)
    config["schedule"]["r_max"] = BANK_LEVELS_MAX
    config["output_dir"] = str(Path(base["bank_dir"]).parent / "bank-run")
    run = validate_run_spec(config, source="quality bank")
    rows_before = len(ResponseBank(Path(base["bank_dir"]))) if Path(base["bank_dir"]).exists() else 0
    began = time.perf_counter()
    run_pipeline(run, stages=["generate", "score"], progress=True,
                 on_stage=lambda stage, state: print(f"  bank {stage}: {state}", flush=True))
    table = ResponseBank(Path(base["bank_dir"])).table(["level_bp", "source"])
    levels = sorted({bp / 10_000 for bp in table["level_bp"].to_pylist() if bp is not None})
    sources = table["source"].to_pylist()
    # Seconds accumulate over invocations: a rerun finds the bank complete and adds almost nothing.
    info_path = Path(base["bank_dir"]).parent / "bank-info.json"
    spent = json.loads(info_path.read_text())["seconds"] if info_path.exists() else 0.0
    if not info_path.exists() and rows_before == table.num_rows:
        spent = None  # generated by an earlier invocation that did not record its time
    info = {"rows": table.num_rows, "levels": levels, "teacher_rows": sources.count("teacher"),
            "student_rows": sources.count("student"),
            "seconds": None if spent is None else round(spent + time.perf_counter() - began, 1)}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return info


def evaluate_teacher_levels(spec, base: dict, teacher: Path, student: Path, test: list, out: Path) -> list[dict]:
    """Greedy test accuracy of the teacher at every bank level and of the base student."""
    path = out / f"teacher-levels-{len(test)}.json"
    if path.exists():
        return json.loads(path.read_text())
    from masters.adapters.resolve import resolve_adapter
    from masters.engine.evaluate import evaluate_model
    from masters.masking.runtime import MaskedTeacher
    from masters.ratios import Ratio
    from masters.config import validate_run_spec

    run = validate_run_spec(base)
    rows = []
    adapter = resolve_adapter(str(teacher))
    levels = [Ratio(bp) for bp in range(0, 5001, 500)]
    masked = MaskedTeacher.from_model(adapter.model, run.masker, levels, maskable=adapter.maskable_parameters())
    try:
        for level in sorted(levels):
            masked.set_level(level)
            res = evaluate_model(teacher, test, run.rewards, adapter=adapter, batch_size=100,
                                 max_new_tokens=spec.distill.max_new_tokens)
            rows.append({"model": "teacher", "level": float(level), "accuracy": res.accuracy["exact_match"]})
            print(f"  teacher @ {float(level):.2f}: {res.accuracy['exact_match']:.3f}", flush=True)
    finally:
        masked.close()
    res = evaluate_model(student, test, run.rewards, batch_size=100, max_new_tokens=spec.distill.max_new_tokens)
    rows.append({"model": "base student", "level": None, "accuracy": res.accuracy["exact_match"]})
    path.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


# =============================================================================================
# TRL GOLD (runs in the TRL venv, which has no masters: it reads plain JSONL + PNG)
# =============================================================================================


def export_gold_data(spec, splits: dict, student: Path, out: Path) -> Path:
    """The distillation questions with their reference answers, as TRL reads them."""
    from masters.adapters.resolve import resolve_adapter

    root = out / "gold" / "data"
    if (root / "done").exists():
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    adapter = resolve_adapter(str(student))
    eos = adapter.processor.tokenizer.eos_token
    with open(root / "train.jsonl", "w") as handle:
        for s in splits["train"][: spec.distill.n_train]:
            path = root / "images" / f"{s.id}.png"
            s.load_images()[0].save(path)
            handle.write(json.dumps({"id": s.id, "question": s.question, "answer": s.answer, "image": str(path),
                                     "masters_prompt": adapter.prompt_text(s)}) + "\n")
    (root / "meta.json").write_text(json.dumps({"eos_token": eos}) + "\n")
    (root / "done").write_text("")
    return root


def worker_gold(args: dict) -> dict:
    """Train the base student with GOLDTrainer (off-policy, JSD) and save it; in the TRL venv."""
    import torch
    from datasets import Dataset
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from trl.experimental.gold import GOLDConfig, GOLDTrainer

    torch.set_num_threads(1)
    data = Path(args["data"])
    rows = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines()]
    eos = json.loads((data / "meta.json").read_text())["eos_token"]
    processor = AutoProcessor.from_pretrained(args["student"])
    student = LlavaForConditionalGeneration.from_pretrained(args["student"], dtype=torch.float32)
    teacher = LlavaForConditionalGeneration.from_pretrained(args["teacher"], dtype=torch.float32)
    # The prompt TRL builds must be the one masters evaluates with (image first, then the question).
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": rows[0]["question"]}]}]
    trl_prompt = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    # The tiny chat template ends an assistant turn with nothing; masters' reference responses end in
    # EOS, so the completion carries it explicitly (otherwise the student never learns to stop).
    dataset = Dataset.from_list([
        {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}],
         "completion": [{"role": "assistant", "content": [{"type": "text", "text": r["answer"] + eos}]}],
         "images": [Image.open(r["image"]).convert("RGB")]}
        for r in rows
    ])
    config = GOLDConfig(
        output_dir=str(Path(args["out"]) / "trainer"), per_device_train_batch_size=args["batch"],
        gradient_accumulation_steps=1, num_train_epochs=1, learning_rate=args["learning_rate"],
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=args["max_grad_norm"],
        optim="adamw_torch", bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
        save_strategy="no", logging_steps=16, disable_tqdm=True, dataloader_num_workers=0, seed=args["seed"],
        data_seed=args["seed"], lmbda=0.0, beta=0.5, temperature=1.0, max_completion_length=args["max_new_tokens"] + 2,
        max_length=None, seq_kd=False,
    )
    trainer = GOLDTrainer(model=student, teacher_model=teacher, args=config, processing_class=processor,
                          train_dataset=dataset)
    began = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - began
    final = Path(args["out"]) / "student"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    # What GOLD trains on for one example: its VLM collator (the trainer's own collator is the identity
    # on VLM data; batches are collated inside the step).
    collate = getattr(trainer, "_vlm_collator", None) or trainer.data_collator
    batch = collate([dict(trainer.train_dataset[0])])
    label_ids = [int(x) for x in batch["labels"][0] if int(x) != -100]
    import trl

    return {"trl_version": trl.__version__, "steps": int(output.global_step), "train_loss": float(output.training_loss), "seconds": round(seconds, 1),
            "prompt_matches_masters": trl_prompt == rows[0]["masters_prompt"], "trl_prompt": trl_prompt,
            "masters_prompt": rows[0]["masters_prompt"],
            "first_labels": processor.tokenizer.convert_ids_to_tokens(label_ids),
            "eos_in_labels": processor.tokenizer.eos_token_id in label_ids}


def run_gold(spec, args, prepared: dict, base: dict, out: Path) -> list[dict]:
    from masters.engine.evaluate import evaluate_model
    from masters.config import validate_run_spec

    data = export_gold_data(spec, prepared["splits"], prepared["student"], out)
    run = validate_run_spec(base)
    results = []
    for seed in args.seeds:
        home = out / "gold" / f"seed-{seed}"
        done = home / f"result-{len(prepared['eval'])}.json"
        if done.exists():
            results.append(json.loads(done.read_text()))
            continue
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        job = {"data": str(data), "student": str(prepared["student"]), "teacher": str(prepared["teacher"]),
               "out": str(home), "seed": seed, "batch": spec.distill.questions_per_step,
               "learning_rate": spec.distill.learning_rate, "max_grad_norm": run.training.max_grad_norm,
               "max_new_tokens": spec.distill.max_new_tokens}
        (home / "job.json").write_text(json.dumps(job))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}
        env.pop("PYTHONPATH", None)
        print(f"  TRL GOLD seed {seed}: training", flush=True)
        proc = subprocess.run([args.trl_python, str(HERE), "--worker-gold", str(home / "job.json"),
                               str(home / "worker.json")], env=env, capture_output=True, text=True)
        (home / "worker.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode or not (home / "worker.json").exists():
            raise SystemExit(f"TRL GOLD seed {seed} failed (exit {proc.returncode}); see {home / 'worker.log'}:\n"
                             + (proc.stdout + proc.stderr)[-3000:])
        worker = json.loads((home / "worker.json").read_text())
        res = evaluate_model(home / "student", prepared["eval"], run.rewards, batch_size=100,
                             max_new_tokens=spec.distill.max_new_tokens)
        result = {"seed": seed, "accuracy": res.accuracy["exact_match"], "n_eval": len(prepared["eval"]), **worker}
        done.write_text(json.dumps(result, indent=2) + "\n")
        print(f"  TRL GOLD seed {seed}: {result['accuracy']:.3f} ({worker['steps']} steps, "
              f"prompt matches masters: {worker['prompt_matches_masters']}, EOS trained: {worker['eos_in_labels']})",
              flush=True)
        results.append(result)
    return results


# =============================================================================================
# Grids
# =============================================================================================


def run_study_grid(name: str, base: dict, grid: dict, out: Path) -> list[dict]:
    from masters.engine.ablate import run_grid

    began = time.perf_counter()
    cells = run_grid(base, grid, out / name, progress=False,
                     on_cell=lambda cell, state: print(f"  [{name}] {cell.label}: {state}", flush=True))
    print(f"  [{name}] {len(cells)} cells in {time.perf_counter() - began:.0f} s", flush=True)
    return [{**{k: v for k, v in c.overrides.items()}, "accuracy": c.result["accuracy.exact_match"],
             "train_s": c.result["seconds"].get("train"), "cell": c.key,
             "student": str(Path(c.spec.output_dir) / "student"),
             "train_identity": c.result["stage_identities"].get("train")} for c in cells]


def evaluate_students(rows: list[dict], out: Path, test: list, reward_specs, max_new_tokens: int) -> None:
    """Each cell's student on the report's test set (cached per student directory and test size)."""
    from masters.engine.evaluate import evaluate_model

    path = out / f"students-{len(test)}.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    for row in rows:
        student = row["student"]
        if student not in cache:
            res = evaluate_model(student, test, reward_specs, batch_size=100, max_new_tokens=max_new_tokens)
            cache[student] = res.accuracy["exact_match"]
            path.write_text(json.dumps(cache, indent=2) + "\n")
        row["accuracy_runs_test"] = row["accuracy"]
        row["accuracy"] = cache[student]


def lr_table(main_rows: list[dict], lr_rows: list[dict], shared_lr: float) -> dict:
    """method -> learning rate -> mean/std over seeds (the shared rate's cells come from ``main``)."""
    table: dict = {}
    for row in main_rows:
        table.setdefault(row["training.method"], {}).setdefault(shared_lr, []).append(row["accuracy"])
    for row in lr_rows:
        table.setdefault(row["training.method"], {}).setdefault(row["training.learning_rate"], []).append(row["accuracy"])
    return {m: {f"{lr:g}": mean_std(v) for lr, v in sorted(by.items())} for m, by in table.items()} if lr_rows else {}


def objective_table(main_rows: list[dict], objective_rows: list[dict], policy_rows: list[dict],
                    negative_rows: list[dict]) -> dict:
    """Label -> mean/std over seeds plus ``short`` (its plot label), ``full`` (the paper's objective)
    and ``bounded`` (push-down bounded): Masters with its terms removed, KD with no policy term, the
    policy term alone with each response mix, and Masters with its push-down bounded."""
    if not objective_rows:
        return {}
    table: dict = {}

    def add(label: str, short: str, accuracy: float, **role: bool) -> None:
        table.setdefault(label, {"short": short, "values": [], **role})["values"].append(accuracy)

    for row in objective_rows:
        distill = row["training.method"] == "masters"
        kl = f" + KL (beta {row['training.beta']:g})" if row["training.beta"] else " (no KL)"
        add(f"policy (reward: accuracy{' + distillation' if distill else ' only'}) + JSD loss{kl}",
            f"policy[acc{'+distill' if distill else ''}] + JSD{' + KL' if row['training.beta'] else ' (no KL)'}",
            row["accuracy"], full=distill and bool(row["training.beta"]))
    for row in main_rows:
        if row["training.method"] == "progressive_kd":
            add("JSD loss only (mask-progressive KD)", "JSD only (progressive KD)", row["accuracy"])
    for row in policy_rows:
        t, st = row["training.n_teacher"], row["training.n_student"]
        add(f"policy only (reward: accuracy), {t} teacher + {st} student", f"policy[acc] only, {t}+{st}", row["accuracy"])
    for row in negative_rows:
        how, brief = {"zero": ("set to 0", "0"), "probability_weighted": ("probability-weighted", "p-weighted")}[
            row["training.negative_advantages"]]
        jsd, beta = row["training.distill_loss_weight"], row["training.beta"]
        tail = (" + JSD loss" if jsd else "") + (f" + KL (beta {beta:g})" if beta else " (no KL)")
        short_tail = (" + JSD" if jsd else "") + (" + KL" if beta else " (no KL)")
        add(f"policy with negative advantages {how} (reward: accuracy + distillation){tail}",
            f"policy[acc+distill], negatives {brief}{short_tail}", row["accuracy"], bounded=True)
    return {label: {**row, **mean_std(row["values"])} for label, row in table.items()}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def group_by(rows: list[dict], key: str) -> dict:
    out: dict = {}
    for row in rows:
        out.setdefault(json.dumps(row[key]), []).append(row["accuracy"])
    return {k: mean_std(v) for k, v in out.items()}


# =============================================================================================
# Report
# =============================================================================================


def cells_summary(report: dict) -> str:
    rows = [r for rows in report["cells"].values() for r in rows]
    train = sum(r.get("train_s") or 0 for r in rows)
    return (f"{len(rows)} trained cells, {train / 60:.0f} min of training in all; this invocation took "
            f"{report['seconds']:.0f} s (cells finished earlier are reused)")


def render_md(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Quality on the shapes task",
        "",
        f"{report['date']}, {m['platform']}, {m['cpus']} CPUs, torch {m['torch']}, transformers {m['transformers']}"
        + (f", TRL {report['trl_version']}" if report.get("trl_version") else "") + f"; {cells_summary(report)}.",
        f"Produced by `benchmarks/quality.py`. Greedy exact-match accuracy on the same {report['n_eval']} held-out test "
        f"questions (binomial standard error about {(0.25 / report['n_eval']) ** 0.5:.3f} at 0.5); "
        f"mean ± standard deviation over seeds {', '.join(map(str, report['seeds']))} (seeds vary the distillation "
        "run's data order, group draws and sampling; the teacher, the base student and the bank are shared).",
        "",
        f"Setting: the demo's models (LLaVA-architecture teacher, hidden 128 / 3 layers, trained from scratch on the "
        f"task; student hidden 64 / 2 layers after a 64-step supervised warm-up), 512 training questions, "
        f"128 optimizer steps of 4 questions, learning rate 2e-4, staircase restore with step 0.05. One bank: "
        f"{report['bank']['rows']} rows, teacher levels 0 to 0.5 (8 responses per question and level) and "
        f"8 student responses per question, generated and scored "
        + (f"in {report['bank']['seconds']:.0f} s." if report["bank"]["seconds"] is not None
           else "by an earlier invocation (its time was not recorded)."),
        "",
        "## Methods (r_max 0.2, 4 teacher + 4 student responses per group)",
        "",
        "| method | accuracy | vs base student | seeds |",
        "|---|---|---|---|",
    ]
    base = report["base_student"]
    for key, row in report["main"].items():
        delta = "" if key == "base" else f"{row['mean'] - base:+.3f}"
        lines.append(f"| {LABELS[key]} | {row['mean']:.3f} ± {row['std']:.3f} | {delta} | {row['n']} |")
    lines += ["", "## Teacher at each mask level (magnitude per tensor, the bank's levels)", "",
              "| level | " + " | ".join(f"{r['level']:.2f}" for r in report["teacher"]) + " |",
              "|---|" + "---|" * len(report["teacher"]),
              "| accuracy | " + " | ".join(f"{r['accuracy']:.3f}" for r in report["teacher"]) + " |",
              "", "## r_max sweep (Masters, 4 + 4; the paper's Table 5a)", "",
              "| r_max | accuracy (paper's objective) | accuracy (negative_advantages: zero) | seeds |",
              "|---|---|---|---|"]
    bounded = report.get("rmax_bounded") or {}
    for key, row in report["rmax"].items():
        other = bounded.get(key)
        cell = f"{other['mean']:.3f} ± {other['std']:.3f}" if other else ""
        lines.append(f"| {float(key):.1f} | {row['mean']:.3f} ± {row['std']:.3f} | {cell} | {row['n']} |")
    lines += ["", "## Response mix (Masters, r_max 0.2; the paper's Table 5c)", "",
              "| teacher + student | accuracy | seeds |", "|---|---|---|"]
    for key, row in report["mix"].items():
        t, s = json.loads(key)
        lines.append(f"| {t} + {s} | {row['mean']:.3f} ± {row['std']:.3f} | {row['n']} |")
    if report.get("lr"):
        rates = sorted({lr for by in report["lr"].values() for lr in by}, key=float)
        lines += ["", "## Learning-rate check (r_max 0.2, 4 + 4)", "",
                  "| method | " + " | ".join(f"lr {r}" for r in rates) + " |", "|---|" + "---|" * len(rates)]
        for method, by in report["lr"].items():
            cells = [f"{by[r]['mean']:.3f} ± {by[r]['std']:.3f}" if r in by else "" for r in rates]
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    if report.get("objective"):
        lines += ["", "## Objective ablation (r_max 0.2, 4 + 4, lr 2e-4): Masters with terms removed", "",
                  "| objective | accuracy | seeds |", "|---|---|---|"]
        for label, row in report["objective"].items():
            lines.append(f"| {label} | {row['mean']:.3f} ± {row['std']:.3f} | {row['n']} |")
    lines += ["", "## Reading", ""] + [f"- {x}" for x in report["notes"]]
    lines += ["", "![quality](quality.png)", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objective = report.get("objective") or {}
    fig = plt.figure(figsize=(17, 3.8 + (0.32 * len(objective) + 1.2 if objective else 0)))
    grid = fig.add_gridspec(2 if objective else 1, 4, height_ratios=[3.8, 0.32 * len(objective) + 1.2] if objective else None)
    axes = [fig.add_subplot(grid[0, i]) for i in range(4)]
    ax = axes[0]
    keys = list(report["main"])
    ax.bar(range(len(keys)), [report["main"][k]["mean"] for k in keys],
           yerr=[report["main"][k]["std"] for k in keys], capsize=3, color="tab:blue")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([LABELS[k].split(" (")[0] for k in keys], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_title("methods (r_max 0.2, 4+4)")
    lo = min(r["mean"] - r["std"] for r in report["main"].values()) - 0.05
    ax.set_ylim(max(0, lo), min(1, max(r["mean"] + r["std"] for r in report["main"].values()) + 0.05))
    ax = axes[1]
    ax.plot([r["level"] for r in report["teacher"]], [r["accuracy"] for r in report["teacher"]], "o-")
    ax.axhline(report["base_student"], color="grey", ls="--", label="base student")
    ax.set_xlabel("mask ratio")
    ax.set_title("teacher at each level")
    ax.legend(fontsize=8)
    for ax, key, title, xlabel in ((axes[2], "rmax", "r_max sweep (Masters)", "r_max"),
                                   (axes[3], "mix", "response mix (Masters)", "teacher + student")):
        rows = report[key]
        xs = list(range(len(rows)))
        ax.errorbar(xs, [r["mean"] for r in rows.values()], yerr=[r["std"] for r in rows.values()], fmt="o-", capsize=3,
                    label="paper's objective")
        if key == "rmax" and report.get("rmax_bounded"):
            bounded = [report["rmax_bounded"][k] for k in rows]
            ax.errorbar([x + 0.1 for x in xs], [r["mean"] for r in bounded], yerr=[r["std"] for r in bounded],
                        fmt="s-", capsize=3, color="tab:green", label="negative advantages 0")
            ax.legend(fontsize=7)
        labels = [f"{float(k):.1f}" if key == "rmax" else "+".join(map(str, json.loads(k))) for k in rows]
        ax.set_xticks(xs)
        ax.set_xticklabels(labels)
        ax.axhline(report["base_student"], color="grey", ls="--")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
    if objective:
        ax = fig.add_subplot(grid[1, :])
        labels = list(objective)
        ys = range(len(labels))
        ax.barh(ys, [objective[k]["mean"] for k in labels], xerr=[objective[k]["std"] for k in labels], capsize=3,
                color=["tab:green" if objective[k].get("bounded") else "tab:blue" for k in labels])
        ax.set_yticks(list(ys))
        ax.set_yticklabels([objective[k]["short"] for k in labels], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(report["base_student"], color="grey", ls="--", label="base student")
        ax.axvline(report["main"]["masters"]["mean"], color="tab:red", ls=":", label="Masters (paper's objective)")
        ax.set_xlim(0.2, max(r["mean"] + r["std"] for r in objective.values()) + 0.03)
        ax.set_xlabel("test accuracy")
        ax.set_title("objective ablation (r_max 0.2, 4+4 unless stated; green: push-down bounded)")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> dict:
    import torch
    import transformers

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker-gold":
        result = worker_gold(json.loads(Path(argv[1]).read_text()))
        Path(argv[2]).write_text(json.dumps(result, indent=2))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/quality", help="work directory (resumable)")
    p.add_argument("--cache", default=None, help="where the trained teacher and base student are cached "
                   "(default OUT/cache; runs/demo/cache reuses the demo's)")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--trl-python", default="/tmp/trl-venv/bin/python")
    p.add_argument("--skip-gold", action="store_true")
    p.add_argument("--skip-lr", action="store_true", help="skip the learning-rate check")
    p.add_argument("--skip-objective", action="store_true", help="skip the objective ablation")
    p.add_argument("--n-eval", type=int, default=1000, help="test questions every model is scored on in the "
                   "report (the runs' own 300 are its first 300)")
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    spec = demo_spec(out, Path(args.cache) if args.cache else None)
    print("[prepare] teacher and base student", flush=True)
    prepared = prepare(spec, out, args.n_eval)
    base = base_config(spec, prepared["teacher"], prepared["student"], out)
    print("[bank] levels 0..0.5, 8 + 8 responses per question", flush=True)
    bank = build_bank(base)
    print(f"[bank] {bank['rows']} rows", flush=True)
    print("[teacher] accuracy at every level", flush=True)
    levels = evaluate_teacher_levels(spec, base, prepared["teacher"], prepared["student"], prepared["eval"], out)
    base_acc = next(r["accuracy"] for r in levels if r["model"] == "base student")
    print("[main] methods x seeds", flush=True)
    main_rows = run_study_grid("main", base, {"training.method": METHODS, "seed": args.seeds}, out)
    gold = [] if args.skip_gold else run_gold(spec, args, prepared, base, out)
    print("[rmax] r_max sweep x seeds", flush=True)
    rmax_rows = run_study_grid("rmax", base, {"schedule.r_max": RMAX_SWEEP, "seed": args.seeds}, out)
    print("[mix] response mix x seeds", flush=True)
    mix_rows = run_study_grid("mix", base, {"training.n_teacher+training.n_student": MIX_SWEEP, "seed": args.seeds}, out)
    lr_rows = [] if args.skip_lr else run_study_grid(
        "lr", base, {"training.method": METHODS, "training.learning_rate": LR_CHECK, "seed": args.seeds}, out)
    ablation = {name: [] if args.skip_objective else run_study_grid(name, base, {**grid, "seed": args.seeds}, out)
                for name, grid in ABLATIONS.items()}
    objective_rows, policy_rows, negative_rows, rmax_bounded_rows = (ablation[k] for k in ABLATIONS)
    print(f"[evaluate] every student on {args.n_eval} test questions", flush=True)
    from masters.config import validate_run_spec

    rewards = validate_run_spec(base).rewards
    for rows in (main_rows, rmax_rows, mix_rows, lr_rows, objective_rows, policy_rows, negative_rows,
                 rmax_bounded_rows):
        evaluate_students(rows, out, prepared["eval"], rewards, spec.distill.max_new_tokens)

    by_method = group_by(main_rows, "training.method")
    main_table = {"base": {"mean": base_acc, "std": 0.0, "n": 1, "values": [base_acc], "n_eval": args.n_eval}}
    for method in METHODS:
        main_table[method] = by_method[json.dumps(method)]
        if method == "naive_kd" and gold:
            main_table["gold"] = mean_std([g["accuracy"] for g in gold])
    mix = {}
    for r in mix_rows:
        mix.setdefault(json.dumps([r["training.n_teacher"], r["training.n_student"]]), []).append(r["accuracy"])
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "seeds": args.seeds, "n_eval": args.n_eval,
        "trl_version": (gold[0].get("trl_version") if gold else None) or _trl_version(args.trl_python, args.skip_gold),
        "bank": bank, "teacher": [r for r in levels if r["model"] == "teacher"], "base_student": base_acc,
        "main": main_table, "gold_runs": gold,
        "rmax": group_by(rmax_rows, "schedule.r_max"),
        "rmax_bounded": group_by(rmax_bounded_rows, "schedule.r_max"),
        "mix": {k: mean_std(v) for k, v in mix.items()},
        "lr": lr_table(main_rows, lr_rows, base["training"]["learning_rate"]),
        "objective": objective_table(main_rows, objective_rows, policy_rows, negative_rows),
        "cells": {"main": main_rows, "rmax": rmax_rows, "mix": mix_rows, "lr": lr_rows, "objective": objective_rows,
                  "policy": policy_rows, "negative": negative_rows,
                  "rmax_bounded": rmax_bounded_rows},
        "seconds": time.perf_counter() - began,
    }
    report["notes"] = notes(report)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "quality.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (results / "quality.md").write_text(render_md(report))
    plot(report, results / "quality.png")
    print((results / "quality.md").read_text())
    return 0


def _trl_version(python: str, skipped: bool) -> str | None:
    if skipped:
        return None
    proc = subprocess.run([python, "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True)
    return proc.stdout.strip() or None


def difference(a: dict, b: dict) -> tuple[float, float]:
    """Mean difference of two rows and its standard error (Welch; a single-run row adds the test set's
    binomial variance instead of a seed variance of zero)."""
    def var(row: dict) -> float:
        if row["n"] > 1:
            return row["std"] ** 2 / row["n"]
        return row["mean"] * (1 - row["mean"]) / row.get("n_eval", 1000)
    return a["mean"] - b["mean"], (var(a) + var(b)) ** 0.5


def verdict(gap: float, se: float) -> str:
    return "a real difference" if abs(gap) > 2 * se else "within noise"


def notes(report: dict) -> list[str]:
    """What the numbers say, computed from them (so a rerun cannot leave stale prose)."""
    main = report["main"]
    out = []
    best = max((k for k in main if k != "base"), key=lambda k: main[k]["mean"])
    out.append(f"Best method: {LABELS[best]} at {main[best]['mean']:.3f}; base student {report['base_student']:.3f}.")
    for other in ("base", "sft", "naive_kd", "gold", "progressive_kd"):
        if other in main and "masters" in main:
            gap, se = difference(main["masters"], main[other])
            out.append(f"Masters - {LABELS[other]} = {gap:+.3f} (standard error {se:.3f}: {verdict(gap, se)}).")
    if "gold" in main and "naive_kd" in main:
        gap, se = difference(main["gold"], main["naive_kd"])
        out.append(f"TRL GOLD - masters' naive KD = {gap:+.3f} (standard error {se:.3f}): the same off-policy JSD "
                   "recipe in two implementations.")
    teacher = report["teacher"]
    t0 = teacher[0]["accuracy"]
    t_end = teacher[-1]["accuracy"]
    out.append(f"The teacher goes from {t0:.3f} unmasked to {t_end:.3f} at mask 0.5; the paper's premise is a "
               "gradual degradation that the staircase walks back up.")
    by_identity: dict = {}
    for rows in report["cells"].values():
        for row in rows:
            by_identity.setdefault(row["train_identity"], []).append(row["accuracy_runs_test"])
    repeats = [v for v in by_identity.values() if len(v) > 1]
    if repeats:
        same = sum(len(set(v)) == 1 for v in repeats)
        out.append(f"Reproducibility: {len(repeats)} configurations ran in more than one grid (e.g. Masters at r_max 0.2, "
                   f"4 + 4); {same} of {len(repeats)} gave identical accuracy in every run (separate processes "
                   "and directories, same seed).")
    if report.get("lr"):
        best = {m: max(by.items(), key=lambda kv: kv[1]["mean"]) for m, by in report["lr"].items()}
        ranked = sorted(best.items(), key=lambda kv: -kv[1][1]["mean"])
        out.append("Each method at its best learning rate: " + ", ".join(
            f"{LABELS[m]} {row['mean']:.3f} (lr {lr})" for m, (lr, row) in ranked) + ".")
    objective = report.get("objective") or {}
    if objective:
        full = next(k for k, row in objective.items() if row.get("full"))
        for label, row in objective.items():
            if label != full:
                gap, se = difference(row, objective[full])
                out.append(f"Objective: {label} - full Masters = {gap:+.3f} (standard error {se:.3f}: "
                           f"{verdict(gap, se)}).")
    rmax = report["rmax"]
    best_r = max(rmax, key=lambda k: rmax[k]["mean"])
    out.append(f"r_max sweep: best r_max {float(best_r):.1f} ({rmax[best_r]['mean']:.3f}); r_max 0 (no masking) "
               f"{rmax[json.dumps(0.0)]['mean']:.3f}. The paper finds 0.2 best (Table 5a).")
    bounded = report.get("rmax_bounded") or {}
    if bounded:
        best_b = max(bounded, key=lambda k: bounded[k]["mean"])
        gap, se = difference(bounded[json.dumps(0.2)], bounded[json.dumps(0.0)])
        out.append(f"r_max sweep with negative advantages 0: best r_max {float(best_b):.1f} ({bounded[best_b]['mean']:.3f}); "
                   f"the paper's r_max 0.2 - no masking = {gap:+.3f} (standard error {se:.3f}: "
                   f"{verdict(gap, se)}).")
    mix = report["mix"]
    best_m = max(mix, key=lambda k: mix[k]["mean"])
    out.append(f"Response mix: best {'+'.join(map(str, json.loads(best_m)))} ({mix[best_m]['mean']:.3f}); "
               "the paper finds 4+4 best (Table 5c).")
    return out


if __name__ == "__main__":
    sys.exit(main())
