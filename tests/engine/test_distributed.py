"""Every shipped accelerate config trains masters correctly: 2 gloo processes on CPU.

For each engine (DDP, FSDP2, FSDP1, ZeRO-2, ZeRO-3) one ``accelerate launch`` of the shipped
config runs tests/engine/distributed_job.py: training is killed after a few steps and resumed
from its checkpoints, and the final student must equal one process on the same global batch
within 1e-4 (a different seed, the negative control, differs by more). The runs use 15 training
questions, so a step's questions do not split evenly across the 2 ranks and the last step leaves
a rank idle. Each launch runs under a subprocess timeout: a hang fails instead of stalling CI.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from launching import ROOT, accelerate_launch, free_port, needs_deepspeed
from safetensors.torch import load_file

from masters.bank.scoring import score_bank
from masters.bank.store import ResponseBank
from masters.config import validate_run_spec
from masters.data import load_splits
from masters.engine.generation import bank_dir, generate_bank
from masters.engine.trainer import train

CONFIGS = ROOT / "configs" / "accelerate"
JOB = Path(__file__).with_name("distributed_job.py")
TOLERANCE = 1e-4
# FSDP1 and FSDP2 on CPU/gloo are not deterministic from one launch to the next (DDP's 2 processes
# equal 1 bit for bit): repeated launches of the same run, with and without the kill, differed from
# 1 process by 2.5e-6 to 6.8e-5 (FSDP1) and 7.7e-7 to 3.1e-5 (FSDP2), once 1.17e-4 (FSDP1, a
# full-suite run). Not explained yet (the reduce-scatter is synchronous; not PYTHONHASHSEED); the
# negative control must still exceed the wider bound.
ENGINE_TOLERANCE = {"fsdp1": 5e-4, "fsdp2": 5e-4}
LAUNCH_TIMEOUT_S = 240
N_TRAIN = 15  # 8 steps of 2 questions: the last step has 1 (uneven split, an idle rank)



def config(tiny_pair, out, **overrides) -> dict:
    teacher, student = tiny_pair
    data = {
        "output_dir": str(out), "teacher": str(teacher), "student": str(student),
        "task": {"name": "shapes", "n_train": N_TRAIN, "n_validation": 0, "n_test": 2},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 4, "batch_size": 8,
                       "bank_levels": "all"},
        "training": {"n_teacher": 2, "n_student": 2, "learning_rate": 1e-3, "questions_per_step": 1,
                     "checkpoint_every": 2},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


@pytest.fixture(scope="module")
def scored_bank(tiny_pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist-bank")
    spec = validate_run_spec(config(tiny_pair, out))
    generate_bank(spec, progress=False)
    samples = {s.id: s for s in load_splits(spec.task)["train"]}
    score_bank(ResponseBank(bank_dir(spec)), samples, spec.rewards, progress=False)
    return out / "bank"


def prepared(tiny_pair, scored_bank, out, *, bank: bool = True, **overrides) -> Path:
    """A run directory with the shared bank and its config file; returns the config path."""
    out.mkdir(parents=True, exist_ok=True)
    if bank:
        shutil.copytree(scored_bank, out / "bank")
    path = out.parent / f"{out.name}.yaml"  # beside, not in, the output directory (masters claims it)
    path.write_text(yaml.safe_dump(config(tiny_pair, out, **overrides)))
    return path


def single_process(tiny_pair, scored_bank, out, **overrides) -> dict[str, torch.Tensor]:
    """The reference: one process, the same global batch (2 ranks x GA -> GA x 2 here)."""
    path = prepared(tiny_pair, scored_bank, out, **overrides)
    train(validate_run_spec(yaml.safe_load(path.read_text())), progress=False)
    return load_file(str(out / "student" / "model.safetensors"))


def launch(config_file: Path, runs: list[dict], tmp_path: Path) -> dict:
    job = tmp_path / f"job-{config_file.stem}.json"
    report = tmp_path / f"report-{config_file.stem}.json"
    job.write_text(json.dumps({"runs": runs, "report": str(report)}))
    proc = accelerate_launch(config_file, [str(JOB), str(job)], timeout_s=LAUNCH_TIMEOUT_S, what=config_file.name)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(report.read_text())


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, (k, a[k].shape, b[k].shape)  # full shapes, never shards
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def metrics_steps(out: Path) -> list[int]:
    (path,) = (out / "train").glob("*/metrics.jsonl")
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


class References:
    """One-process results the engines are compared with, computed once per setting."""

    def __init__(self, tiny_pair, scored_bank, root: Path):
        self.args, self.root, self.done = (tiny_pair, scored_bank), root, {}

    def get(self, name: str, **overrides) -> dict[str, torch.Tensor]:
        if name not in self.done:
            self.done[name] = single_process(*self.args, self.root / name, **overrides)
        return self.done[name]


@pytest.fixture(scope="module")
def references(tiny_pair, scored_bank, tmp_path_factory):
    return References(tiny_pair, scored_bank, tmp_path_factory.mktemp("single"))


LORA_GC_BF16 = {"training": {"lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
                             "gradient_checkpointing": True, "mixed_precision": "bf16"}}
# engine -> (2-process overrides, 1-process overrides of its reference, steps, kill after, resumed from)
MAIN = {
    "ddp": ({}, {"training": {"gradient_accumulation_steps": 2}}, 8, 5, 4),
    "fsdp2": ({}, {"training": {"gradient_accumulation_steps": 2}}, 8, 5, 4),
    "fsdp1": ({}, {"training": {"gradient_accumulation_steps": 2}}, 8, 5, 4),
    "zero2": ({}, {"training": {"gradient_accumulation_steps": 2}}, 8, 5, 4),
    "zero3": ({}, {"training": {"gradient_accumulation_steps": 2}}, 8, 5, 4),
}
EXTRA = {  # further runs in the same launch: name -> overrides
    "ddp": {"pipeline": {"task": {"n_train": 4}}},  # `masters run`, every stage, under the launch
    "fsdp2": {"lora_gc_bf16": LORA_GC_BF16},
    # gradient accumulation through DeepSpeed: 2 ranks x 2 micro-batches = 1 process x 4
    "zero2": {"accumulate": {"training": {"gradient_accumulation_steps": 2}}},
    "zero3": {"cached": {"training": {"teacher_signal": "cached", "cache_top_k": 8}}, "lora_gc_bf16": LORA_GC_BF16},
}
CONFIG_OF = {"ddp": "ddp.yaml", "fsdp2": "fsdp2.yaml", "fsdp1": "fsdp1.yaml", "zero2": "deepspeed-zero2.yaml",
             "zero3": "deepspeed-zero3.yaml"}


def merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


@pytest.mark.slow
@pytest.mark.parametrize("engine", [
    "ddp", "fsdp2", "fsdp1",
    pytest.param("zero2", marks=needs_deepspeed), pytest.param("zero3", marks=needs_deepspeed),
])
def test_two_processes_killed_and_resumed_equal_one_process(tiny_pair, scored_bank, references, tmp_path, engine):
    two, one, steps, kill_after, resumed_from = MAIN[engine]
    runs = [{"name": "main", "config": str(prepared(tiny_pair, scored_bank, tmp_path / "main", **two)),
             "kill_after": kill_after}]
    for name, overrides in EXTRA.get(engine, {}).items():
        path = prepared(tiny_pair, scored_bank, tmp_path / name, bank=name != "pipeline", **overrides)
        runs.append({"name": name, "config": str(path), "pipeline": name == "pipeline"})
    report = launch(CONFIGS / CONFIG_OF[engine], runs, tmp_path)

    assert report["main"]["resumed_from"] == resumed_from and report["main"]["steps"] == steps, report
    # an engine that is not DeepSpeed never imports it (accelerate's unwrapping would: ~120 MiB a rank)
    assert report["main"]["deepspeed_imported"] == engine.startswith("zero"), report["main"]
    assert metrics_steps(tmp_path / "main") == list(range(steps))  # nothing lost, nothing duplicated
    got = load_file(str(tmp_path / "main" / "student" / "model.safetensors"))
    expected = references.get(f"main-{engine}" if two else "main", **one)
    diff = max_diff(got, expected)
    tolerance = ENGINE_TOLERANCE.get(engine, TOLERANCE)
    assert diff < tolerance, f"{engine}: 2 processes differ from 1 by {diff:.2e}"
    control = references.get(f"seed1-{engine}" if two else "seed1", seed=1, **one)
    assert max_diff(control, expected) > tolerance  # the negative control: a different seed fails the check

    if "pipeline" in report:  # generation and training by both ranks, scoring and evaluation by rank 0
        stages = json.loads((tmp_path / "pipeline" / "stages.json").read_text())
        assert all(stages[s].get("state", "done") == "done" for s in ("generate", "score", "train", "evaluate"))
        assert (tmp_path / "pipeline" / "eval" / "student-test.json").exists()
        assert len(metrics_steps(tmp_path / "pipeline")) == 2
    if "accumulate" in report:
        got = load_file(str(tmp_path / "accumulate" / "student" / "model.safetensors"))
        expected = references.get("accumulate", training={"gradient_accumulation_steps": 4})
        assert max_diff(got, expected) < TOLERANCE
        # what stepping at every micro-batch (accumulation silently ignored) would give instead
        assert max_diff(references.get("main", **MAIN["zero2"][1]), expected) > TOLERANCE
    if "cached" in report:  # the cached teacher signal, filled by both ranks in lock step
        got = load_file(str(tmp_path / "cached" / "student" / "model.safetensors"))
        assert max_diff(got, references.get("cached", **merge(EXTRA["zero3"]["cached"], one))) < TOLERANCE
        assert list((tmp_path / "cached" / "train").glob("*/teacher_cache/*.parquet"))
    if "lora_gc_bf16" in report:  # LoRA, gradient checkpointing and bf16 train and save a merged, whole student
        rows = [json.loads(x) for x in next((tmp_path / "lora_gc_bf16" / "train").glob("*/metrics.jsonl")).read_text().splitlines()]
        assert len(rows) == 8 and all(r["loss/total"] == r["loss/total"] for r in rows)
        saved = load_file(str(tmp_path / "lora_gc_bf16" / "student" / "model.safetensors"))
        base = load_file(str(tiny_pair[1] / "model.safetensors"))
        assert saved.keys() == base.keys() and all(saved[k].shape == base[k].shape for k in base)
        assert any(not torch.equal(saved[k].float(), base[k].float()) for k in base)
    if engine == "fsdp2":  # sharded checkpoints: each rank wrote its own safetensors shard, no tensor whole
        from safetensors import safe_open

        last = sorted((tmp_path / "main" / "train").glob("*/checkpoints/step-*"))[-1]
        assert json.loads((last / "state.json").read_text())["format"] == "sharded"
        shards = sorted((last / "engine").glob("shard-*.safetensors"))  # shard-<rank>-model-<file>-of-<files>
        assert {p.name.split("-")[1] for p in shards} == {"00001", "00002"} and not list(last.glob("**/*.pt"))
        held = {"00001": 0, "00002": 0}  # elements of the weights and of Adam's moments in each rank's files
        for shard in shards:
            with safe_open(str(shard), framework="pt") as f:
                held[shard.name.split("-")[1]] += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()
                                                      if not k.endswith(".step"))
        assert all(0.35 < h / sum(held.values()) < 0.65 for h in held.values()), held
    if engine.startswith("zero"):  # every pickled checkpoint file loads with weights_only=True
        from masters.engine.checkpoint import load_torch

        files = [p for p in (tmp_path / "main" / "train").glob("*/checkpoints/*/**/*")
                 if p.suffix in (".pt", ".pkl", ".bin")]
        assert any(p.name.endswith("optim_states.pt") for p in files) and any(p.suffix == ".pkl" for p in files)
        for path in files:
            load_torch(path)


def test_launched_processes_that_each_see_one_process_are_refused(tiny_pair, scored_bank, tmp_path, monkeypatch):
    """N launched processes that each believe they are alone would train N copies into one directory."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from masters.engine.trainer import Trainer
    from masters.errors import MastersError

    path = prepared(tiny_pair, scored_bank, tmp_path / "run")
    spec = validate_run_spec(yaml.safe_load(path.read_text()))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(MastersError, match="launched as 2 processes .* sees 1") as info:
        Trainer(spec, accelerator=Accelerator())
    assert info.value.exit_code == 2
    AcceleratorState._reset_state(reset_partial_state=True)
    env = {**os.environ, "WORLD_SIZE": "2", "HF_HUB_OFFLINE": "1"}
    env.pop("RANK", None), env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, "-m", "masters.cli", "train", str(path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2 and "WORLD_SIZE=2" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "run" / "train").exists() or not list((tmp_path / "run" / "train").glob("*/metrics.jsonl"))


def test_trackers_log_the_metrics_once_per_step_across_a_resume(tiny_pair, scored_bank, tmp_path, monkeypatch):
    """TensorBoard and MLflow (local files) get the numbers of metrics.jsonl; a run killed after the
    checkpoint at step 2 logged step 2 once more before dying, and the resumed run logs from step 2
    again: TensorBoard keeps one scalar per step."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from masters.engine import trainer

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    path = prepared(tiny_pair, scored_bank, tmp_path / "run", task={"n_train": 8},
                    training={"report_to": ["tensorboard", "mlflow"], "checkpoint_every": 2, "questions_per_step": 2})
    spec = validate_run_spec(yaml.safe_load(path.read_text()))

    class Killed(Exception):
        pass

    def kill_at_3(stage, done):
        if stage == "train" and done >= 3:
            raise Killed

    monkeypatch.setattr(trainer, "kill_point", kill_at_3)
    with pytest.raises(Killed):
        train(spec, progress=False)
    monkeypatch.setattr(trainer, "kill_point", lambda stage, done: None)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    result = train(spec, progress=False)
    assert result.resumed_from == 2 and result.steps == 4
    rows = [json.loads(x) for x in result.metrics_path.read_text().splitlines()]
    # the run's own directory (accelerate's add_hparams writes the config into a subdirectory)
    events_dir = min({p.parent for p in (result.metrics_path.parent / "trackers").rglob("events.out.tfevents.*")},
                     key=lambda p: len(p.parts))
    events = EventAccumulator(str(events_dir))
    events.Reload()
    scalars = events.Scalars("loss/total")
    assert [s.step for s in scalars] == [0, 1, 2, 3]  # one scalar per step, the killed run's step 2 purged
    assert all(abs(s.value - r["loss/total"]) < 1e-6 for s, r in zip(scalars, rows))
    import mlflow

    run_id = (result.metrics_path.parent / "trackers" / "mlflow_run_id").read_text().strip()
    history = mlflow.tracking.MlflowClient().get_metric_history(run_id, "loss/total")
    assert {m.step for m in history} == {0, 1, 2, 3}  # the same run, continued after the resume
    last = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}
    assert all(abs(last[r["step"]] - r["loss/total"]) < 1e-6 for r in rows)


def test_a_killed_lora_run_with_dropout_resumes_equal_to_an_uninterrupted_one(tiny_pair, scored_bank, tmp_path,
                                                                              monkeypatch):
    """LoRA's initialisation and dropout are seeded from the spec and their RNG state is checkpointed:
    two identical runs agree, and one killed after its checkpoint at step 2 resumes to the same weights.
    Every pickled checkpoint file loads with weights_only=True."""
    from masters.engine import trainer
    from masters.engine.checkpoint import load_torch

    lora = {"training": {"lora": {"r": 4, "alpha": 8, "dropout": 0.2, "target_modules": ["q_proj", "v_proj"]},
                         "questions_per_step": 2}, "task": {"n_train": 8}}
    whole = single_process(tiny_pair, scored_bank, tmp_path / "whole", **lora)
    again = single_process(tiny_pair, scored_bank, tmp_path / "again", **lora)
    assert all(torch.equal(whole[k], again[k]) for k in whole)

    class Killed(Exception):
        pass

    def kill_at_3(stage, done):
        if stage == "train" and done >= 3:
            raise Killed

    path = prepared(tiny_pair, scored_bank, tmp_path / "resumed", **lora)
    spec = validate_run_spec(yaml.safe_load(path.read_text()))
    monkeypatch.setattr(trainer, "kill_point", kill_at_3)
    with pytest.raises(Killed):
        train(spec, progress=False)
    monkeypatch.setattr(trainer, "kill_point", lambda stage, done: None)
    torch.manual_seed(12345)  # what the killed process's RNG was is lost; only the checkpoint's counts
    assert train(spec, progress=False).resumed_from == 2
    resumed = load_file(str(tmp_path / "resumed" / "student" / "model.safetensors"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    pickled = [p for p in (tmp_path / "resumed" / "train").rglob("*") if p.suffix in (".pt", ".pkl", ".bin")]
    assert pickled
    for p in pickled:
        load_torch(p)


def test_a_sharded_teacher_is_refused_with_a_pointer_to_the_cached_signal():
    """Masking edits and restores the teacher's tensors in place: a partitioned one would be edited
    stale or empty without a word."""
    from masters.engine.trainer import _refuse_sharded_teacher
    from masters.errors import MastersError

    model = torch.nn.Linear(4, 4)
    _refuse_sharded_teacher(model, "teachers.0")  # whole: fine
    model.weight.ds_id = 7  # what ZeRO-3 marks a partitioned parameter with
    with pytest.raises(MastersError, match="sharded") as info:
        _refuse_sharded_teacher(model, "teachers.0")
    assert "teacher_signal: cached" in info.value.render()


# Each rank as its own process, started here rather than by a launcher: torchrun's agent ends the
# other ranks itself when one dies, which would hide whether masters' own process-group timeout
# does. Rank 1 is SIGKILLed (its sockets close) or SIGSTOPped (a hung rank: its sockets stay open,
# the case gloo's default timeout of 30 minutes would leave hanging) right after its 2nd
# optimizer step; rank 0 must fail by itself, non-zero, within the timeout and some slack.
RANK_FAULT = """
import os, signal, sys
from masters.engine import trainer
real = trainer.kill_point
def kill_point(stage, done):
    if stage == "train" and done >= 2 and os.environ.get("FAULT"):
        os.kill(os.getpid(), getattr(signal, os.environ["FAULT"]))
    real(stage, done)
trainer.kill_point = kill_point
from masters.cli import main
sys.exit(main(["train", sys.argv[1]]))
"""
FAULT_TIMEOUT_S = 10


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_a_rank_killed_or_hung_mid_training_ends_the_other_within_the_process_group_timeout(
        tiny_pair, scored_bank, tmp_path, fault):
    import signal
    import time

    import psutil

    path = prepared(tiny_pair, scored_bank, tmp_path / "run", training={"checkpoint_every": 100})
    port = free_port()
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
            "MASTERS_PROCESS_GROUP_TIMEOUT": str(FAULT_TIMEOUT_S)}
    ranks = [subprocess.Popen([sys.executable, "-c", RANK_FAULT, str(path)], cwd=ROOT, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**base, "RANK": str(r), "LOCAL_RANK": str(r), **({"FAULT": fault} if r else {})})
             for r in (0, 1)]
    survivor, faulty = ranks
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        while time.monotonic() < deadline:  # until rank 1 is dead or stopped
            if faulty.poll() is not None or psutil.Process(faulty.pid).status() == psutil.STATUS_STOPPED:
                break
            assert survivor.poll() is None, survivor.stderr.read()[-3000:]
            time.sleep(0.05)
        else:
            pytest.fail(f"rank 1 never reached its {fault}")
        faulted = time.monotonic()
        try:
            _, err = survivor.communicate(timeout=FAULT_TIMEOUT_S + 50)
        except subprocess.TimeoutExpired:
            pytest.fail(f"rank 0 still running {FAULT_TIMEOUT_S + 50} s after rank 1's {fault} (a hang)")
        took = time.monotonic() - faulted
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.communicate()
    assert survivor.returncode != 0, err[-3000:]
    assert (tmp_path / "run" / "train").exists() and len(metrics_steps(tmp_path / "run")) == 2  # it did train
    if fault == "SIGSTOP":  # the hung peer is detected by the timeout alone
        assert "timed out" in err.lower() or "timeout" in err.lower(), err[-3000:]
        assert took >= FAULT_TIMEOUT_S - 1, took
    print(f"{fault}: rank 0 exited {survivor.returncode} {took:.1f} s after rank 1's fault")
