"""masters' training step side by side with TRL's distillation and RL trainers, in one run.

    flock /tmp/masters-bench.lock /tmp/venv/bin/python benchmarks/peers.py [--sizes tiny,medium]
        [--steps 20] [--medium-steps 5] [--warmup 2] [--rounds 3] [--trl-python /tmp/trl-venv/bin/python]

The peers run from their own virtual environment (masters is not installed there). Rebuild it with
exactly this line (torch in the same pip command, or pip pulls a multi-GB CUDA build):

    python3 -m venv /tmp/trl-venv && /tmp/trl-venv/bin/pip install torch==2.13.0 trl==1.16.0 \
        transformers==5.24.0 accelerate==1.15.0 datasets==5.2.0 pillow

What is compared, at two sizes (tiny: student LLaVA 64 hidden / 2 layers, teacher 128 / 3, 32 px
images; medium: student 256 / 4, teacher 512 / 8, 64 px images), on one teacher/student pair saved
to a temporary directory, the shapes task, and completions of exactly ``--completion-len`` tokens
(``min_new_tokens`` = ``max_new_tokens`` for every sampler: the models' generation_config.json and
each trainer's generation kwargs):

- ``masters``: masters' training step (method ``masters``, online masked teacher, a group of
  ``n_teacher + n_student`` = ``--group`` banked responses, one question per step);
- ``masters e2e``: the same, with bank generation + scoring + the reference log-prob pass spread
  over the sequences trained (every banked row is trained exactly once);
- ``TRL GOLD``: ``trl.experimental.gold.GOLDTrainer`` off-policy (``lmbda=0``, JSD ``beta=0.5``),
  VLM teacher and student, trained on the *same* banked responses as masters;
- ``TRL Distillation``: ``trl.DistillationTrainer`` (always on-policy: the student samples its
  completions every step), JSD ``beta=0.5``;
- ``TRL GRPO``: ``trl.GRPOTrainer``, online generation, ``num_generations`` = the group size, an
  exact-match reward, TRL's default ``beta=0`` (no reference model);
- ``TRL GKD (text)``: ``trl.experimental.gkd.GKDTrainer`` off-policy (``lmbda=0``, ``beta=0.5``)
  on the banked responses *without images* (it has no image path; where it fails with images is
  probed and recorded). Its sequences are shorter by the image tokens.

Every contender: fp32 weights, no mixed precision, no gradient checkpointing (TRL's
DistillationConfig defaults to bf16 + checkpointing: overridden), AdamW, constant learning rate,
gradient clipping at 1.0, ``--group`` sequences per optimizer step, one intra-op thread
(``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``). Each run is its own subprocess; the parent
samples the RSS of the child's process tree with psutil every 20 ms (peak memory, design decision
15). Contenders are interleaved: every round runs each once, in a rotated order, and the reported
step time is the median over rounds of each run's median step interval (the wall time between
consecutive optimizer-step ends, so data loading, generation and logging count for everyone).
The first ``--warmup`` steps of each run are not timed.

Writes benchmarks/results/peers.json and .md (machine, versions, load average, every run);
``--render [peers.json]`` rewrites the notes and the .md from a results file without measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "results"
CONTENDERS = ("masters", "gold", "distillation", "grpo", "gkd_text")
LABELS = {"masters": "masters (training step)",
          "masters_e2e": "masters end-to-end (bank generation + scoring + reference pass spread over the sequences)",
          "gold": "TRL GOLD (off-policy)", "distillation": "TRL Distillation (on-policy)",
          "grpo": "TRL GRPO (online)", "gkd_text": "TRL GKD (text only)"}
ORDER = ("masters", "masters_e2e", *CONTENDERS[1:])
SHORT = {"masters": "masters step", "masters_e2e": "masters end-to-end"}
VENV = {"masters": "masters", "gold": "trl", "distillation": "trl", "grpo": "trl", "gkd_text": "trl"}
LEARNING_RATE = 1e-5
PINNED_TRL = "1.16.0"  # the peers' API (experimental GOLD/GKD, DistillationTrainer) moves fast: rerun on a bump

# size -> (image px, student dims, teacher dims). pad_vocab_to=8 for both: TRL's JSD needs equal vocabularies.
SIZES = {
    "tiny": (32, dict(hidden=64, layers=2, heads=4, intermediate=128, vision_hidden=32, vision_layers=2),
             dict(hidden=128, layers=3, heads=4, intermediate=256, vision_hidden=64, vision_layers=2)),
    "medium": (64, dict(hidden=256, layers=4, heads=4, intermediate=512, vision_hidden=64, vision_layers=2),
               dict(hidden=512, layers=8, heads=8, intermediate=1024, vision_hidden=128, vision_layers=2)),
}


def _rss_now_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


# =============================================================================================
# Workers (run in a subprocess; the TRL ones in the TRL venv, which has no masters)
# =============================================================================================


def worker_prepare(a: dict) -> dict:
    """Tokenizer, teacher, student (masters venv), the shapes data as PNG + JSONL for TRL."""
    import masters.models.tiny as tiny
    from masters.tasks.shapes import generate_shapes
    from masters.models import build_tiny_model, build_tokenizer

    root = Path(a["root"])
    image, student_dims, teacher_dims = SIZES[a["size"]]
    tiny.IMAGE_SIZE = image  # the recipe reads the module constant: 64 px towers and processors for "medium"
    build_tokenizer(root / "tokenizer")
    for name, dims in (("student", student_dims), ("teacher", teacher_dims)):
        model, proc = build_tiny_model("llava", "tiny", root / name, tokenizer_dir=root / "tokenizer", seed=0,
                                       pad_vocab_to=8, **dims)
        # Every sampler (masters' bank, TRL's online generation) draws exactly completion_len plain words:
        # no EOS before the end, no special or padding-row token. Decoded and re-tokenised, a banked
        # response is then the same tokens again, so the off-policy peers train on equal lengths.
        tok = proc.tokenizer
        vocab = model.config.text_config.vocab_size
        special = [i for i in range(len(tok)) if re.fullmatch(r"<[^ ]+>", tok.convert_ids_to_tokens(i) or "")]
        suppress = sorted(set(special) | set(range(len(tok), vocab)))
        cfg_path = root / name / "generation_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.update(min_new_tokens=a["completion_len"], max_new_tokens=a["completion_len"], suppress_tokens=suppress)
        cfg_path.write_text(json.dumps(cfg, indent=2))
        (root / "suppress_tokens.json").write_text(json.dumps(suppress))
    splits = generate_shapes(a["n_train"], 0, 1, image_size=image, seed=0)
    (root / "images").mkdir(exist_ok=True)
    with open(root / "data.jsonl", "w") as handle:
        for s in splits["train"]:
            path = root / "images" / f"{s.id}.png"
            s.images[0].save(path)
            handle.write(json.dumps({"id": s.id, "question": s.question, "answer": s.answer, "image": str(path)}) + "\n")
    return {"questions": len(splits["train"])}


def _masters_spec(a: dict, output_dir: Path) -> dict:
    root = Path(a["root"])
    half = a["group"] // 2
    return {
        "output_dir": str(output_dir), "bank_dir": str(root / "bank"),
        "teacher": str(root / "teacher"), "student": str(root / "student"),
        "data": {"source": "shapes", "n_train": a["n_train"], "n_validation": 0, "n_test": 1,
                 "image_size": SIZES[a["size"]][0]},
        "generation": {"n_teacher_responses": half, "n_student_responses": a["group"] - half,
                       "max_new_tokens": a["completion_len"], "batch_size": 8},
        "training": {"method": "masters", "n_teacher": half, "n_student": a["group"] - half,
                     "questions_per_step": 1, "learning_rate": LEARNING_RATE, "teacher_signal": "online",
                     "checkpoint_every": 10**6},
    }


def worker_masters_bank(a: dict) -> dict:
    """Generate and score the bank (timed), then export its rows as text for the off-policy peers."""
    _one_thread()
    from masters.bank.scoring import score_bank
    from masters.bank.store import ResponseBank
    from masters.data import load_splits
    from masters.engine.generation import bank_dir, generate_bank
    from masters.config import validate_run_spec

    # Imports first, untimed, as for every contender (the TRL workers import trl, which pulls these in,
    # before their timers start). Loading the models stays in the timed bank stage: it is its own stage.
    from transformers import AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration  # noqa: F401

    import masters.adapters.resolve  # noqa: F401
    import masters.masking.runtime  # noqa: F401

    rss_imports = _rss_now_mib()
    spec = validate_run_spec(_masters_spec(a, Path(a["root"]) / "bank-run"))
    splits = load_splits(spec.task)
    t0 = time.perf_counter()
    report = generate_bank(spec, progress=False, splits=splits)
    t1 = time.perf_counter()
    bank = ResponseBank(bank_dir(spec))
    score_bank(bank, {s.id: s for s in splits["train"]}, spec.rewards, progress=False)
    t2 = time.perf_counter()
    rows = bank.table(["question_id", "source", "token_ids", "response_text"]).to_pylist()
    lengths = [len(r["token_ids"]) for r in rows]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(Path(a["root"]) / "student"))
    # Plain words joined by spaces (not decode(), whose clean-up glues "? ." into one unknown word).
    texts = [" ".join(tok.convert_ids_to_tokens(list(r["token_ids"]))) for r in rows]
    retok = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    same = sum(ids == list(r["token_ids"]) for ids, r in zip(retok, rows))
    retok = [len(ids) for ids in retok]
    with open(Path(a["root"]) / "bank.jsonl", "w") as handle:
        for r, text in zip(rows, texts):
            handle.write(json.dumps({"question_id": r["question_id"], "source": r["source"],
                                     "text": text, "tokens": len(r["token_ids"])}) + "\n")
    return {"generate_s": t1 - t0, "score_s": t2 - t1,  "rows": len(rows), "rows_written": report.rows_written,
            "response_tokens_mean": statistics.mean(lengths), "response_tokens_min": min(lengths),
            "response_tokens_max": max(lengths), "retokenized_equal_rows": same,
            "retokenized_tokens_mean": statistics.mean(retok), "rss_after_imports_mib": rss_imports}


def worker_masters(a: dict) -> dict:
    _one_thread()
    import torch

    from transformers import AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration  # noqa: F401

    import masters.adapters.resolve  # noqa: F401
    import masters.masking.runtime  # noqa: F401
    from masters.engine.trainer import Trainer
    from masters.config import validate_run_spec

    rss_imports = _rss_now_mib()
    ends: list[float] = []
    extra: dict = {}

    class Timed(Trainer):
        def _reference(self, *args, **kwargs):  # the trainer's signature moves (model passed since the engine rework)
            t = time.perf_counter()
            try:
                return super()._reference(*args, **kwargs)
            finally:
                extra["reference_s"] = time.perf_counter() - t

        def _optimizer_step(self, step):
            out = super()._optimizer_step(step)
            ends.append(time.perf_counter())
            extra.setdefault("tokens", []).append(out.get("tokens"))
            return out

    out_dir = Path(tempfile.mkdtemp(prefix="masters-run-", dir=a["root"]))
    spec = validate_run_spec(_masters_spec(a, out_dir))
    t = time.perf_counter()
    result = Timed(spec).run(progress=False)
    total = time.perf_counter() - t
    intervals = [b - x for x, b in zip(ends, ends[1:])][a["warmup"]:]
    tokens = extra.get("tokens", [])
    return {"intervals": intervals, "sequences_per_step": a["group"], "steps": result.steps,
            "completion_tokens_per_sequence": (statistics.mean(tokens) / a["group"]) if tokens else None,
            "reference_s": extra.get("reference_s"), "run_s": total, "threads": torch.get_num_threads(),
            "rss_after_imports_mib": rss_imports}


def _trl_common(a: dict, out: str) -> dict:
    return dict(output_dir=out, per_device_train_batch_size=a["group"], gradient_accumulation_steps=1,
                max_steps=a["warmup"] + a["steps"] + 1, learning_rate=LEARNING_RATE, lr_scheduler_type="constant",
                warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", bf16=False, fp16=False,
                gradient_checkpointing=False, use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
                disable_tqdm=True, dataloader_num_workers=0, seed=0)


def _load_rows(a: dict) -> tuple[list[dict], list[dict]]:
    root = Path(a["root"])
    data = [json.loads(x) for x in (root / "data.jsonl").read_text().splitlines()]
    bank = [json.loads(x) for x in (root / "bank.jsonl").read_text().splitlines()]
    return data, bank


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.logs: list[dict] = []

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs:
                self.logs.append(dict(logs))

    return StepTimer()


def _models(a: dict, *, teacher: bool = True):
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    root = Path(a["root"])
    student = LlavaForConditionalGeneration.from_pretrained(str(root / "student"), dtype=torch.float32)
    t = LlavaForConditionalGeneration.from_pretrained(str(root / "teacher"), dtype=torch.float32) if teacher else None
    processor = AutoProcessor.from_pretrained(str(root / "student"))
    return student, t, processor


def _vision_dataset(a: dict, *, with_completion: bool, repeat: int = 1):
    from datasets import Dataset
    from PIL import Image

    data, bank = _load_rows(a)
    by_id = {d["id"]: d for d in data}
    if not with_completion and repeat > 1:
        data = (data * repeat)[: max(len(data), repeat)]
    if with_completion:  # the banked responses, in bank order: exactly what masters trains on
        rows = [{"prompt": [{"role": "user", "content": by_id[b["question_id"]]["question"]}],
                 "completion": [{"role": "assistant", "content": b["text"]}],
                 "images": [Image.open(by_id[b["question_id"]]["image"]).convert("RGB")]} for b in bank]
    else:
        rows = [{"prompt": [{"role": "user", "content": d["question"]}], "answer": d["answer"],
                 "images": [Image.open(d["image"]).convert("RGB")]} for d in data]
    return Dataset.from_list(rows)


def _generation_kwargs(a: dict) -> dict:
    """Exactly completion_len plain-word tokens, as in masters' bank (see worker_prepare)."""
    suppress = json.loads((Path(a["root"]) / "suppress_tokens.json").read_text())
    return {"min_new_tokens": a["completion_len"], "suppress_tokens": suppress}


def _finish(a: dict, trainer, timer, rss_imports: float, **extra) -> dict:
    import torch

    trainer.train()
    intervals = [b - x for x, b in zip(timer.ends, timer.ends[1:])][a["warmup"]:]
    return {"intervals": intervals, "sequences_per_step": a["group"], "steps": len(timer.ends),
            "threads": torch.get_num_threads(), "rss_after_imports_mib": rss_imports,
            "last_log": timer.logs[-2] if len(timer.logs) > 1 else (timer.logs or [None])[-1], **extra}


def worker_gold(a: dict) -> dict:
    _one_thread()
    from trl.experimental.gold import GOLDConfig, GOLDTrainer

    rss_imports = _rss_now_mib()
    student, teacher, processor = _models(a)
    args = GOLDConfig(**_trl_common(a, tempfile.mkdtemp(dir=a["root"])), lmbda=0.0, beta=0.5, temperature=1.0,
                      max_completion_length=a["completion_len"] + 1, max_length=None, seq_kd=False)
    timer = _step_timer()
    trainer = GOLDTrainer(model=student, teacher_model=teacher, args=args, processing_class=processor,
                          train_dataset=_vision_dataset(a, with_completion=True), callbacks=[timer])
    return _finish(a, trainer, timer, rss_imports)


def worker_distillation(a: dict) -> dict:
    _one_thread()
    from trl import DistillationConfig, DistillationTrainer

    rss_imports = _rss_now_mib()
    student, teacher, processor = _models(a)
    n = a["completion_len"]
    needed = a["group"] * (a["warmup"] + a["steps"] + 1)  # one completion per prompt: group prompts per step
    args = DistillationConfig(**_trl_common(a, tempfile.mkdtemp(dir=a["root"])), beta=0.5, temperature=1.0,
                              top_p=0.9, top_k=50, repetition_penalty=1.05, max_completion_length=n,
                              generation_kwargs=_generation_kwargs(a))
    timer = _step_timer()
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, processing_class=processor,
                                  train_dataset=_vision_dataset(a, with_completion=False, repeat=needed),
                                  callbacks=[timer])
    return _finish(a, trainer, timer, rss_imports)


def worker_grpo(a: dict) -> dict:
    _one_thread()
    from trl import GRPOConfig, GRPOTrainer

    rss_imports = _rss_now_mib()
    student, _, processor = _models(a, teacher=False)
    n = a["completion_len"]

    def reward(completions, answer, **kw):
        """Exact match of the first word, plus a word-diversity term so that groups of a random model
        still differ in reward and the policy-gradient path does real work."""
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        words = [t.split() or [""] for t in texts]
        return [float(w[0] == str(x)) + 0.1 * len(set(w)) / len(w) for w, x in zip(words, answer)]

    args = GRPOConfig(**_trl_common(a, tempfile.mkdtemp(dir=a["root"])), num_generations=a["group"],
                      max_completion_length=n, temperature=1.0, top_p=0.9, top_k=50, repetition_penalty=1.05,
                      generation_kwargs=_generation_kwargs(a), beta=0.0)
    timer = _step_timer()
    trainer = GRPOTrainer(model=student, reward_funcs=reward, args=args, processing_class=processor,
                          train_dataset=_vision_dataset(a, with_completion=False), callbacks=[timer])
    return _finish(a, trainer, timer, rss_imports)


def worker_gkd_text(a: dict) -> dict:
    _one_thread()
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    rss_imports = _rss_now_mib()
    student, teacher, processor = _models(a)
    root = Path(a["root"])
    probes: dict[str, str] = {}

    def probe(name, fn):
        try:
            fn()
            probes[name] = "ran"
        except Exception as exc:  # noqa: BLE001 - the error text is the result
            tb = traceback.extract_tb(exc.__traceback__)
            where = next((f"{f.filename.split('site-packages/')[-1]}:{f.lineno} in {f.name}" for f in reversed(tb)
                          if "/trl/" in f.filename), f"{Path(tb[-1].filename).name}:{tb[-1].lineno}")
            probes[name] = f"{type(exc).__name__} at {where}: {str(exc).splitlines()[0][:300]}"

    n = a["completion_len"]
    kw = dict(lmbda=0.0, beta=0.5, temperature=1.0, max_new_tokens=n, seq_kd=False)
    probe("llava_processor_with_images", lambda: GKDTrainer(
        model=student, teacher_model=teacher, processing_class=processor,
        args=GKDConfig(**_trl_common(a, tempfile.mkdtemp(dir=a["root"])), **kw),
        train_dataset=_vision_dataset(a, with_completion=True)))
    probe("teacher_given_as_path", lambda: GKDTrainer(
        model=student, teacher_model=str(root / "teacher"), processing_class=processor.tokenizer,
        args=GKDConfig(**_trl_common(a, tempfile.mkdtemp(dir=a["root"])), **kw),
        train_dataset=_text_dataset(a)))
    args = GKDConfig(**_trl_common(a, tempfile.mkdtemp(dir=a["root"])), **kw)
    timer = _step_timer()
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, processing_class=processor.tokenizer,
                         train_dataset=_text_dataset(a), callbacks=[timer])
    return _finish(a, trainer, timer, rss_imports, probes=probes)


def _text_dataset(a: dict):
    from datasets import Dataset

    data, bank = _load_rows(a)
    by_id = {d["id"]: d for d in data}
    def part(text):  # the tiny chat templates read content as a list of parts
        return [{"type": "text", "text": text}]

    return Dataset.from_list([{"messages": [{"role": "user", "content": part(by_id[b["question_id"]]["question"])},
                                            {"role": "assistant", "content": part(b["text"])}]} for b in bank])


WORKERS = {"prepare": worker_prepare, "masters_bank": worker_masters_bank, "masters": worker_masters,
           "gold": worker_gold, "distillation": worker_distillation, "grpo": worker_grpo, "gkd_text": worker_gkd_text}


def worker_main(name: str, args_path: str, out_path: str) -> int:
    a = json.loads(Path(args_path).read_text())
    try:
        result = {"ok": True, **WORKERS[name](a)}
    except Exception as exc:  # noqa: BLE001 - a peer that cannot run is a result, not a crash
        tb = traceback.extract_tb(exc.__traceback__)
        frames = [f for f in tb if "site-packages" in f.filename] or tb
        f = frames[-1]
        result = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:600]}",
                  "where": f"{f.filename.split('site-packages/')[-1]}:{f.lineno} in {f.name}",
                  "traceback": traceback.format_exc()[-4000:]}
    Path(out_path).write_text(json.dumps(result, default=str))
    return 0


# =============================================================================================
# Parent: subprocesses, RSS sampling, rounds, tables
# =============================================================================================


def run_child(python: str, name: str, a: dict, timeout: float) -> dict:
    from _measure import PeakRSS

    with tempfile.TemporaryDirectory() as tmp:
        args_path, out_path = Path(tmp) / "args.json", Path(tmp) / "out.json"
        args_path.write_text(json.dumps(a))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore",
               "CUDA_VISIBLE_DEVICES": ""}
        if VENV.get(name) == "trl":
            env.pop("PYTHONPATH", None)
        else:
            env["PYTHONPATH"] = str(HERE.parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
        started = time.perf_counter()
        proc = subprocess.Popen([python, str(HERE), "--worker", name, str(args_path), str(out_path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with PeakRSS(proc.pid, tree=True) as rss:
            try:
                log, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                log, _ = proc.communicate()
                return {"ok": False, "error": f"timed out after {timeout:.0f} s", "where": "benchmark",
                        "log": log[-2000:]}
        wall = time.perf_counter() - started
        if not out_path.exists():
            return {"ok": False, "error": f"worker exited {proc.returncode} without a result", "where": "worker",
                    "log": log[-3000:]}
        result = json.loads(out_path.read_text())
        result.update(peak_rss_mib=rss.peak / 2**20, wall_s=wall)
        if not result.get("ok"):
            result["log"] = log[-2000:]
        return result


def _versions(python: str) -> dict:
    code = ("import json,torch,transformers,accelerate,datasets;d=dict(torch=torch.__version__,"
            "transformers=transformers.__version__,accelerate=accelerate.__version__,datasets=datasets.__version__)\n"
            "try:\n import trl;d['trl']=trl.__version__\nexcept ImportError: pass\nprint(json.dumps(d))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": out.stderr[-500:]}


def _machine() -> dict:
    import psutil

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def summarise(size: str, runs: dict[str, list[dict]], bank: dict, a: dict) -> dict:
    rows = {}
    for name, results in runs.items():
        ok = [r for r in results if r.get("ok") and r.get("intervals")]
        if not ok:
            bad = next((r for r in results if not r.get("ok")), results[0] if results else {})
            rows[name] = {"ok": False, "error": bad.get("error"), "where": bad.get("where")}
            continue
        step = statistics.median(statistics.median(r["intervals"]) for r in ok)
        seqs = ok[0]["sequences_per_step"]
        rows[name] = {"ok": True, "step_s": step, "sequences_per_s": seqs / step,
                      "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in ok),
                      "rss_after_imports_mib": statistics.median(r["rss_after_imports_mib"] for r in ok),
                      "per_round_step_s": [statistics.median(r["intervals"]) for r in ok],
                      "timed_steps_per_run": [len(r["intervals"]) for r in ok]}
        if name == "masters" and bank.get("ok"):
            ref = statistics.median(r.get("reference_s") or 0.0 for r in ok)
            trained = ok[0]["steps"] * seqs  # every banked row trained once
            offline = bank["generate_s"] + bank["score_s"] + ref
            per_seq = offline / trained + step / seqs
            rows["masters_e2e"] = {"ok": True, "step_s": per_seq * seqs, "sequences_per_s": 1 / per_seq,
                                   "peak_rss_mib": max(rows[name]["peak_rss_mib"], bank["peak_rss_mib"]),
                                   "rss_after_imports_mib": rows[name]["rss_after_imports_mib"],
                                   "bank_generate_s": bank["generate_s"], "bank_score_s": bank["score_s"],
                                   "reference_s": ref, "sequences_trained": trained,
                                   "bank_peak_rss_mib": bank["peak_rss_mib"]}
    base = rows.get("masters", {})
    for r in rows.values():
        if r.get("ok") and base.get("ok"):
            r["throughput_vs_masters"] = r["sequences_per_s"] / base["sequences_per_s"]
            r["peak_rss_vs_masters"] = r["peak_rss_mib"] / base["peak_rss_mib"]
    return rows


def offline_per_sequence(e2e: dict) -> float:
    return (e2e["bank_generate_s"] + e2e["bank_score_s"] + e2e["reference_s"]) / e2e["sequences_trained"]


def render_md(report: dict) -> str:
    m, v = report["machine"], report["versions"]
    lines = [
        "# masters vs TRL peers, side by side (one run)", "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared), {m['ram_gib']} GiB RAM, {m['platform']}; "
        f"load average {report['load_before']} before, {report['load_after']} after.",
        f"masters venv: torch {v['masters'].get('torch')}, transformers {v['masters'].get('transformers')}; "
        f"peer venv: trl {v['trl'].get('trl')}, torch {v['trl'].get('torch')}, transformers {v['trl'].get('transformers')}.",
        f"Settings: fp32, no mixed precision, no gradient checkpointing, 1 intra-op thread, "
        f"{report['args']['group']} sequences per step, completions of {report['args']['completion_len']} tokens, "
        f"{report['args']['rounds']} interleaved rounds, medians. Ratios are to masters' training step "
        "(> 1: faster / more memory than masters).", "",
    ]
    for size, s in report["sizes"].items():
        lines += [f"## {size}: {s['description']}", "",
                  "| contender | step s | sequences/s | vs masters | peak RSS MiB | vs masters | RSS after imports MiB "
                  "| step s per round |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in ORDER:
            r = s["rows"].get(name)
            if r is None:
                continue
            label = LABELS[name]
            if not r["ok"]:
                lines.append(f"| {label} | failed: {(r.get('error') or '')[:120]} (`{r.get('where')}`) | | | | | | |")
                continue
            lines.append(f"| {label} | {r['step_s']:.3f} | {r['sequences_per_s']:.1f} | "
                         f"{r.get('throughput_vs_masters', float('nan')):.2f}x | {r['peak_rss_mib']:.0f} | "
                         f"{r.get('peak_rss_vs_masters', float('nan')):.2f}x | {r['rss_after_imports_mib']:.0f} | "
                         + ", ".join(f"{x:.3f}" for x in r.get("per_round_step_s", [])) + " |")
        e2e = s["rows"].get("masters_e2e")
        if e2e:
            lines += ["", f"masters offline costs: bank generation {e2e['bank_generate_s']:.1f} s (loading both "
                      f"models included, imports not) + scoring "
                      f"{e2e['bank_score_s']:.2f} s + reference log-probs {e2e['reference_s']:.2f} s over "
                      f"{e2e['sequences_trained']} sequences trained = "
                      f"{1000 * offline_per_sequence(e2e):.1f} ms per sequence, against "
                      f"{1000 * s['rows']['masters']['step_s'] / report['args']['group']:.1f} ms per sequence in the "
                      f"training step; bank stage peak RSS {e2e['bank_peak_rss_mib']:.0f} MiB."]
        lines.append("")
    lines += ["## What the peers cannot do", ""] + [f"- {x}" for x in report["limitations"]] + [""]
    lines += ["## Caveats", ""] + [f"- {x}" for x in report["caveats"]] + [""]
    return "\n".join(lines)


def print_table(report: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(render_md(report))
        return
    console = Console()
    for size, s in report["sizes"].items():
        table = Table(title=f"{size}: {s['description']}")
        for col in ("contender", "step s", "seq/s", "vs masters", "peak RSS MiB", "vs masters"):
            table.add_column(col, justify="left" if col == "contender" else "right")
        for name in ORDER:
            r = s["rows"].get(name)
            if r is None:
                continue
            label = SHORT.get(name, LABELS[name])
            if not r["ok"]:
                table.add_row(label, "failed", (r.get("error") or "")[:60], "", "", "")
                continue
            table.add_row(label, f"{r['step_s']:.3f}", f"{r['sequences_per_s']:.1f}",
                          f"{r.get('throughput_vs_masters', float('nan')):.2f}x", f"{r['peak_rss_mib']:.0f}",
                          f"{r.get('peak_rss_vs_masters', float('nan')):.2f}x")
        console.print(table)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        return worker_main(*argv[1:4])
    if argv and argv[0] == "--render":  # rewrite the notes and peers.md from a peers.json (no measuring)
        path = Path(argv[1] if len(argv) > 1 else RESULTS / "peers.json")
        report = json.loads(path.read_text())
        report["limitations"], report["caveats"] = notes(report)
        report["versions"].setdefault("trl_pinned", PINNED_TRL)
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        path.with_suffix(".md").write_text(render_md(report))
        print_table(report)
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="tiny,medium")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run at the tiny size")
    p.add_argument("--medium-steps", type=int, default=5, help="timed steps per run at the medium size")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each contender once per round)")
    p.add_argument("--group", type=int, default=8, help="sequences per step (GRPO num_generations; n_teacher+n_student)")
    p.add_argument("--completion-len", type=int, default=16)
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--trl-python", default="/tmp/trl-venv/bin/python")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    contenders = [c for c in args.contenders.split(",") if c]
    python = {"masters": sys.executable, "trl": args.trl_python}
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    report = {"args": vars(args), "machine": _machine(), "load_before": load_before,
              "versions": {"masters": _versions(sys.executable), "trl": _versions(args.trl_python)}, "sizes": {}}
    report["versions"]["trl_pinned"] = PINNED_TRL
    if report["versions"]["trl"].get("trl") != PINNED_TRL:
        print(f"WARNING: the peer venv has trl {report['versions']['trl'].get('trl')}, this benchmark pins "
              f"{PINNED_TRL}; results are recorded with the version found", flush=True)
    for size in args.sizes.split(","):
        steps = args.steps if size == "tiny" else args.medium_steps
        image, sd, td = SIZES[size]
        with tempfile.TemporaryDirectory(prefix=f"peers-{size}-") as root:
            a = {"root": root, "size": size, "steps": steps, "warmup": args.warmup, "group": args.group,
                 "completion_len": args.completion_len, "n_train": args.warmup + steps + 1}
            print(f"[{size}] preparing models and data in {root}", flush=True)
            prep = run_child(python["masters"], "prepare", a, args.timeout)
            if not prep.get("ok"):
                raise SystemExit(f"prepare failed: {prep}")
            bank = run_child(python["masters"], "masters_bank", a, args.timeout)
            if not bank.get("ok"):
                raise SystemExit(f"bank generation failed: {bank}")
            print(f"[{size}] bank: {bank['rows']} rows, generate {bank['generate_s']:.1f} s, "
                  f"score {bank['score_s']:.2f} s", flush=True)
            runs: dict[str, list[dict]] = {c: [] for c in contenders}
            for rnd in range(args.rounds):
                order = contenders[rnd % len(contenders):] + contenders[:rnd % len(contenders)]
                for name in order:
                    r = run_child(python[VENV[name]], name, a, args.timeout)
                    runs[name].append(r)
                    msg = (f"median step {statistics.median(r['intervals']):.3f} s, peak {r['peak_rss_mib']:.0f} MiB"
                           if r.get("ok") and r.get("intervals") else f"FAILED {r.get('error')} at {r.get('where')}")
                    print(f"[{size}] round {rnd + 1} {name}: {msg}", flush=True)
            report["sizes"][size] = {
                "description": f"student {sd['hidden']} hidden / {sd['layers']} layers, teacher {td['hidden']} / "
                               f"{td['layers']}, {image} px images",
                "student": sd, "teacher": td, "image_px": image, "bank": bank,
                "rows": summarise(size, runs, bank, a),
                "runs": {k: [{kk: vv for kk, vv in r.items() if kk != "traceback"} for r in v] for k, v in runs.items()},
            }
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = time.perf_counter() - started
    report["limitations"], report["caveats"] = notes(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "peers.md").write_text(render_md(report))
    print_table(report)
    print(f"wrote {out / 'peers.json'} and peers.md in {report['seconds']:.0f} s")
    return 0


def notes(report: dict) -> tuple[list[str], list[str]]:
    """What the peers could not do (failures and probes of this run, plus what their APIs lack), and caveats."""
    limits, caveats = [], []
    for size, s in report["sizes"].items():
        for name, results in s["runs"].items():
            bad = next((r for r in results if not r.get("ok")), None)
            if bad:
                limits.append(f"{LABELS[name]} ({size}) failed: {bad.get('error')} at `{bad.get('where')}`")
            probes = next((r.get("probes") for r in results if r.get("probes")), None)
            for k, v in (probes or {}).items():
                limits.append(f"TRL GKD ({size}), {k.replace('_', ' ')}: {v}")
    limits += [
        "TRL GKD: its loss forwards only `input_ids` and `attention_mask` to student and teacher "
        "(trl/experimental/gkd/gkd_trainer.py, `compute_loss`), so even past `__init__` no image reaches either "
        "model; it runs here text-only on the same banked responses, with the LLaVA models' language path.",
        "TRL DistillationTrainer: always on-policy (the student generates every completion); it cannot train on a "
        "fixed or teacher-generated bank, nor mix teacher and student responses in a group.",
        "None of the TRL trainers masks the teacher (no progressive teacher capacity) or combines the distillation "
        "signal with a group-relative RL reward; GRPO has no teacher, GOLD/GKD/Distillation have no reward.",
    ]
    args = report["args"]
    caveats += [
        "Throughput counts sequences (responses) per second at equal completion length: every sampler was forced "
        f"to exactly {args['completion_len']} plain-word tokens (min_new_tokens = max_new_tokens, special and "
        "padding-row tokens suppressed), and the off-policy peers train on masters' own banked responses "
        "(re-tokenised to the same ids). GKD's chat-ML collator labels 15-16 of the 16 tokens.",
        "Prompts are the same chat-templated shapes questions with the same images (16 image tokens at 32 px, "
        "64 at 64 px); GKD (text only) has no image tokens, so its sequences are shorter and its step cheaper.",
        "Like with like, not like the defaults: TRL's DistillationConfig defaults to bf16 and gradient "
        "checkpointing; every contender ran fp32 without checkpointing (../shared/peers.md measured TRL's "
        "defaults 20-37 % slower on this CPU). "
        "GRPO uses TRL's default beta=0 (no reference model), which favours GRPO; masters' KL uses reference "
        "log-probs precomputed once (their cost is in the end-to-end row).",
        "masters' step interval includes its per-step teacher level changes (staircase schedule), the online "
        "masked teacher's forward, reward and advantage computation and the metrics write. TRL's includes its "
        "data loading, collation (image processing) and logging.",
        "The end-to-end row spreads the bank stage (loading student and teacher, sampling, masking the teacher "
        "level by level, writing shards) over this run's sequences, every banked row trained once; its imports "
        "are excluded as for every contender. With several epochs or seeds over one bank (decision 10) it is "
        "spread thinner; the offline-cost lines under each table give it per sequence.",
        "masters' run ends with a checkpoint and a save of the student (outside the timed steps, inside the "
        "peak-RSS window); the TRL runs save nothing (save_strategy='no').",
        "Peak RSS is the whole process (Python, torch, transformers, TRL imports included: see the after-imports "
        "column); at these sizes framework memory dominates, so the ratios say little about large models.",
        f"Shared 2-core machine with other agents' work (load average {report['load_before']} before, "
        f"{report['load_after']} after): absolute times are noisy; contenders were interleaved and ratios are "
        "medians over rounds. Per-round medians are in peers.json.",
    ]
    return limits, caveats


if __name__ == "__main__":
    sys.exit(main())
