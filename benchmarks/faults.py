"""Fault benchmark (issue 14): real ``kill -9`` at random times, then a rerun, against an uninterrupted run.

Not a test (decision 16: the suite's fault tests are deterministic): here a timer sends SIGKILL to
``masters run`` at a random moment, mid-write included. Score and evaluate are short (well under a second
each here), so a kill uniform over the wall time would almost never land in them: the warm
uninterrupted run is timed stage by stage (``stages.json`` polled every 20 ms: from a stage's
``running`` to its ``done``), and trial ``i`` aims at stage ``STAGES[i % 4]`` (generate, score,
train, evaluate): its kill comes a delay drawn uniformly from that stage's timed length after
``stages.json`` shows the stage running (polled every 5 ms). The lengths are updated from every
run that goes through a stage whole (a killed run before its aimed stage, a rerun after the
killed one), so they follow the machine's load. The stage actually running at the
kill (read from ``stages.json`` afterwards) is what the report counts. After each kill the same command is run again to the
end and compared with one uninterrupted run of the same config:

* rows lost / rows duplicated in the bank (read shard by shard, so duplicates cannot hide);
* scores equal (every row's value);
* final student weights equal (every tensor, exactly);
* metrics.jsonl complete (each optimizer step exactly once, every line whole);
* the evaluation JSON's accuracy equal, and stages.json counting every attempt.

Usage::

    python benchmarks/faults.py --kills 40 --out benchmarks/results/faults.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "MASTERS_DISABLE_PLUGIN_AUTOLOAD": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def build_models(work: Path) -> tuple[Path, Path]:
    from masters.models import build_tiny_model, build_tokenizer

    build_tokenizer(work / "tokenizer")
    build_tiny_model("llava", "small", work / "teacher", tokenizer_dir=work / "tokenizer", seed=1)
    build_tiny_model("llava", "tiny", work / "student", tokenizer_dir=work / "tokenizer", seed=2)
    return work / "teacher", work / "student"


def config(work: Path, name: str, teacher: Path, student: Path) -> Path:
    data = {
        "output_dir": str(work / "runs" / name), "teacher": str(teacher), "student": str(student),
        "task": {"name": "shapes", "n_train": 8, "n_validation": 0, "n_test": 6},
        "schedule": {"name": "staircase", "r_max": 0.1, "step": 0.05},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 4, "batch_size": 2},
        "training": {"n_teacher": 1, "n_student": 1, "questions_per_step": 1, "learning_rate": 1e-3,
                     "checkpoint_every": 1},
        "rewards": ["exact_match", "jsd_distill"],
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


STAGES = ("generate", "score", "train", "evaluate")


def read_stages(out: Path) -> dict:
    try:
        return json.loads((out / "stages.json").read_text())  # written by rename: never half a file
    except (OSError, ValueError):
        return {}


def run(cfg: Path, kill_in: tuple[str, float] | None = None, timed: dict[str, tuple[float, float]] | None = None
        ) -> tuple[int, float, str, float | None]:
    """Run ``masters run cfg``; return (exit code, seconds, stderr, kill time or None).

    ``kill_in=(stage, delay)``: SIGKILL ``delay`` s after ``stages.json`` first shows ``stage``
    running (at once if it is first seen done). ``timed`` (a dict to fill): ``stage -> (began_s,
    done_s)`` from the start, for every stage this run went through whole (from ``running`` to
    ``done``; not one already in ``stages.json`` at launch, such as the one a kill interrupted).
    ``stages.json`` is polled every 5 ms for both."""
    out = Path(yaml.safe_load(cfg.read_text())["output_dir"])
    before = set(read_stages(out))
    began = time.perf_counter()
    # cwd is the work directory: ``-m`` puts it first on sys.path, so the snapshot in src/ is what runs
    proc = subprocess.Popen([sys.executable, "-m", "masters.cli", "run", str(cfg)], env=ENV, cwd=cfg.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    killed_at = None
    fire = None
    spans: dict[str, list[float | None]] = {}
    while (kill_in is not None or timed is not None) and proc.poll() is None:
        now = time.perf_counter()
        stages = read_stages(out)
        for stage, entry in stages.items():
            span = spans.setdefault(stage, [None, None])
            if entry.get("state") == "running" and span[0] is None:
                span[0] = now
            elif entry.get("state") == "done" and span[1] is None:
                span[1] = now
        if kill_in is not None and fire is None and kill_in[0] in stages:
            running = stages[kill_in[0]].get("state") == "running"
            fire = now + kill_in[1] if running else now  # missed (done between two polls): kill what comes next
        if fire is not None and now >= fire:
            os.killpg(proc.pid, signal.SIGKILL)  # kill -9: no handler, no cleanup
            killed_at = now - began
            break
        time.sleep(0.005)
    _, err = proc.communicate()
    if timed is not None:
        timed.update({st: (a - began, b - began) for st, (a, b) in spans.items()
                      if st not in before and a is not None and b is not None})
    return proc.returncode, time.perf_counter() - began, err, killed_at


def running_stage(out: Path) -> str:
    try:
        stages = json.loads((out / "stages.json").read_text())
    except (OSError, ValueError):
        return "start-up" if not (out / "bank").exists() else "generate"
    for stage in ("generate", "score", "train", "evaluate"):
        if stages.get(stage, {}).get("state", "done") != "done" or stage not in stages:
            return stage
    return "after evaluate"


def outcome(out: Path) -> dict:
    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    ids: list[str] = []
    for p in sorted((out / "bank" / "shards").glob("*.parquet")):
        ids += pq.read_table(p, columns=["row_id"]).column("row_id").to_pylist()
    scores: dict[str, dict[str, float]] = {}
    for folder in sorted((out / "bank" / "scores").glob("*")):
        values: dict[str, float] = {}
        count = 0
        for p in sorted(folder.glob("*.parquet")):
            t = pq.read_table(p)
            count += t.num_rows
            values.update(zip(t.column("row_id").to_pylist(), t.column("value").to_pylist()))
        scores[folder.name] = values
        scores[folder.name + "#rows"] = count  # type: ignore[assignment]
    found = sorted((out / "train").glob("*/metrics.jsonl"))
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} training identities in {out / 'train'}: the config or code changed "
                           "between the killed run and its rerun")
    (metrics,) = found
    lines = metrics.read_text().splitlines()
    steps = []
    whole = True
    for ln in lines:
        try:
            steps.append(json.loads(ln)["step"])
        except (ValueError, KeyError):
            whole = False
    weights = load_file(str(out / "student" / "model.safetensors"))
    evaluation = json.loads((out / "eval" / "student-test.json").read_text())
    stages = json.loads((out / "stages.json").read_text())
    return {"ids": ids, "scores": scores, "steps": steps, "whole": whole, "weights": weights,
            "accuracy": evaluation["accuracy"], "stages": stages}


def compare(ref: dict, got: dict) -> dict:
    import torch

    ref_ids, ids = set(ref["ids"]), got["ids"]
    same_weights = set(ref["weights"]) == set(got["weights"]) and all(
        torch.equal(ref["weights"][k], got["weights"][k]) for k in ref["weights"])
    ref_scores = {k: v for k, v in ref["scores"].items() if not k.endswith("#rows")}
    got_scores = {k: v for k, v in got["scores"].items() if not k.endswith("#rows")}
    score_dups = sum(got["scores"][k + "#rows"] - len(v) for k, v in got_scores.items())
    return {
        "rows_lost": len(ref_ids - set(ids)),
        "rows_extra": len(set(ids) - ref_ids),
        "rows_duplicated": len(ids) - len(set(ids)),
        "score_rows_duplicated": score_dups,
        "scores_equal": got_scores == ref_scores,
        "weights_equal": same_weights,
        "metrics_complete": got["whole"] and got["steps"] == ref["steps"],
        "accuracy_equal": got["accuracy"] == ref["accuracy"],
        "attempts": {s: e.get("attempts") for s, e in got["stages"].items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faults.md"))
    parser.add_argument("--work", help="work directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="masters-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    # Run a snapshot of the package: a checkout edited while the benchmark runs would change stage
    # identities between a killed run and its rerun (a "lost" resume that is no fault of resuming).
    shutil.copytree(ROOT / "masters", work / "src" / "masters", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    ENV["PYTHONPATH"] = str(work / "src") + os.pathsep + ENV.get("PYTHONPATH", "")
    teacher, student = build_models(work)
    ref_cfg = config(work, "reference", teacher, student)
    code, ref_seconds, err, _ = run(ref_cfg)
    if code != 0:
        print(err[-3000:], file=sys.stderr)
        return 1
    ref = outcome(work / "runs" / "reference")
    # A second uninterrupted run times the kill window (the first pays one-off costs) and checks that
    # two uninterrupted runs agree at all: the comparisons below are meaningful only if they do.
    timed: dict[str, tuple[float, float]] = {}
    code, warm_seconds, err, _ = run(config(work, "reference-warm", teacher, student), timed=timed)
    warm = compare(ref, outcome(work / "runs" / "reference-warm")) if code == 0 else {"error": err[-500:]}
    print(f"reference run: {ref_seconds:.1f} s (warm {warm_seconds:.1f} s), {len(ref['ids'])} rows, "
          f"{len(ref['steps'])} steps; warm run vs reference: {warm}", flush=True)
    ref_seconds = warm_seconds
    windows = {s: [round(a, 2), round(b, 2)] for s, (a, b) in timed.items() if s in STAGES}
    # Each stage's length, updated from every run that goes through it whole (the trials' killed runs
    # before their aimed stage, the reruns after the killed one): the machine's load changes.
    lengths = {s: b - a for s, (a, b) in windows.items()}
    missing = [s for s in STAGES if s not in windows]
    if missing:
        print(f"stages not seen in the timed run: {missing}; their kills fall back to the whole run", flush=True)
    print(f"stage windows (s from start): {windows}", flush=True)
    trials = []
    i = 0
    # Until --kills SIGKILLs have landed (a run that finishes before its timer is no kill; at most
    # twice as many trials), each kill at a uniform moment of the window of the stage it aims at.
    while sum(t["killed"] for t in trials) < args.kills and i < 2 * args.kills:
        name = f"trial-{i:02d}"
        aim = STAGES[i % len(STAGES)]
        i += 1
        cfg = config(work, name, teacher, student)
        out = work / "runs" / name
        length = lengths.get(aim, ref_seconds)
        delay = rng.uniform(0.0, 0.95 * length)  # into the stage, as far as its last timed length reaches
        seen: dict[str, tuple[float, float]] = {}
        code, took, err, killed_at = run(cfg, kill_in=(aim, delay), timed=seen)
        at = killed_at if killed_at is not None else took
        killed = code == -signal.SIGKILL
        stage = running_stage(out) if killed else "finished first"
        code2, rerun_seconds, err2, _ = run(cfg, timed=seen)
        lengths.update({s: b - a for s, (a, b) in seen.items() if s in STAGES})
        row = {"trial": i - 1, "aimed_at": aim, "stage_length_s": round(length, 3), "delay_s": round(delay, 3), "kill_at_s": round(at, 2), "killed": killed, "stage": stage,
               "rerun_exit": code2,
               "rerun_s": round(rerun_seconds, 1)}
        if code2 == 0:
            row.update(compare(ref, outcome(out)))
        else:
            row["error"] = err2.strip().splitlines()[-1:] if err2 else ["(no stderr)"]
        trials.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(out, ignore_errors=True)
        write_report(Path(args.out), trials, ref, ref_seconds, args, windows)  # after every trial: partial too
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    bad = [t for t in trials if t["rerun_exit"] != 0 or t.get("rows_lost") or t.get("rows_duplicated")
           or not t.get("scores_equal") or not t.get("weights_equal") or not t.get("metrics_complete")]
    return 1 if bad else 0


def write_report(path: Path, trials: list[dict], ref: dict, ref_seconds: float, args: argparse.Namespace,
                 windows: dict[str, list[float]]) -> None:
    killed = [t for t in trials if t["killed"]]
    by_stage: dict[str, int] = {}
    for t in killed:
        by_stage[t["stage"]] = by_stage.get(t["stage"], 0) + 1
    aimed: dict[str, int] = {}
    for t in trials:
        aimed[t["aimed_at"]] = aimed.get(t["aimed_at"], 0) + 1
    status = ("complete" if len(killed) >= args.kills else
              f"partial: {len(killed)} of the {args.kills} kills asked for had landed when this file was last written "
              "(it is rewritten after every trial)")
    ok = [t for t in trials if t["rerun_exit"] == 0]

    def total(key: str) -> int:
        return sum(int(t.get(key) or 0) for t in ok)

    def count(key: str) -> int:
        return sum(1 for t in ok if t.get(key))

    lines = [
        "# Fault benchmark: kill -9 at random times, then a rerun", "",
        f"Command: `python benchmarks/faults.py --kills {args.kills} --seed {args.seed}`", "",
        f"Reference (uninterrupted) `masters run`: {ref_seconds:.1f} s, {len(ref['ids'])} bank rows, "
        f"{len(ref['steps'])} optimizer steps (checkpoint every step), tiny LLaVA teacher and student on CPU.", "",
        f"Status: {status}.", "",
        "Kill times: each trial aims at one stage in turn (generate, score, train, evaluate); the kill comes a "
        "delay drawn uniformly from that stage's last timed length (updated from every run that went through the "
        "stage whole) after `stages.json` shows the stage running (windows of the timed uninterrupted run, "
        "seconds from the start: "
        + ", ".join(f"{s} {a}-{b}" for s, (a, b) in windows.items()) + "). The stage column is the one "
        "`stages.json` shows running at the kill; kill at (s) is from the start of the killed run.", "",
        "| figure | value |", "|---|---:|",
        f"| trials | {len(trials)} |",
        f"| real SIGKILLs delivered | {len(killed)} |",
        f"| ... aimed at (trials) | {', '.join(f'{k}: {aimed[k]}' for k in STAGES if k in aimed)} |",
        f"| ... by stage running at the kill | {', '.join(f'{k}: {v}' for k, v in sorted(by_stage.items()))} |",
        f"| reruns that completed (exit 0) | {len(ok)} / {len(trials)} |",
        f"| bank rows lost | {total('rows_lost')} |",
        f"| bank rows duplicated | {total('rows_duplicated')} |",
        f"| score rows duplicated | {total('score_rows_duplicated')} |",
        f"| scores equal to the reference | {count('scores_equal')} / {len(ok)} |",
        f"| final weights equal (every tensor, exactly) | {count('weights_equal')} / {len(ok)} |",
        f"| metrics.jsonl complete (each step once, whole lines) | {count('metrics_complete')} / {len(ok)} |",
        f"| evaluation accuracy equal | {count('accuracy_equal')} / {len(ok)} |",
        "", "## Trials", "",
        "| # | aimed at | kill at (s) | stage | rerun | lost | dup | scores | weights | metrics | accuracy |",
        "|---:|---|---:|---|---|---:|---:|---|---|---|---|",
    ]
    for t in trials:
        lines.append(f"| {t['trial']} | {t['aimed_at']} | {t['kill_at_s']} | {t['stage']} | "
                     f"{'ok' if t['rerun_exit'] == 0 else 'exit ' + str(t['rerun_exit'])} | {t.get('rows_lost', '-')} | "
                     f"{t.get('rows_duplicated', '-')} | {t.get('scores_equal', '-')} | {t.get('weights_equal', '-')} | "
                     f"{t.get('metrics_complete', '-')} | {t.get('accuracy_equal', '-')} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
