"""Run under ``accelerate launch`` by tests/engine/test_distributed.py: each run of a job file is
trained until a deterministic in-process kill at ``kill_after`` optimizer steps, then trained
again from its checkpoints by a fresh Trainer and Accelerator (RNG scrambled in between, so only
what the checkpoint restores can make the resumed run equal an uninterrupted one).

One launch covers an engine's kill-and-resume and its equality with one process, and pays the
process start-up (torch, transformers, deepspeed imports) once.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path


class Killed(Exception):
    pass


def main(job_path: str) -> int:
    import torch
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from masters.config import load_run_spec
    from masters.engine import trainer

    job = json.loads(Path(job_path).read_text())
    report: dict[str, dict] = {}
    for run in job["runs"]:
        spec = load_run_spec(run["config"])
        if run.get("pipeline"):  # `masters run` under the same launch: every stage, from nothing
            from masters.engine.pipeline import run_pipeline

            results = run_pipeline(spec, progress=False)
            if PartialState().is_main_process:
                report[run["name"]] = {"stages": {k: str(v)[:200] for k, v in results.items()}}
            continue
        kill_after = run.get("kill_after")
        began = time.perf_counter()
        attempts = 0
        while True:
            attempts += 1
            real_kill_point = trainer.kill_point

            def kill_point(stage: str, done: int, _limit=kill_after if attempts == 1 else None) -> None:
                if stage == "train" and _limit is not None and done >= _limit:
                    raise Killed
                real_kill_point(stage, done)

            trainer.kill_point = kill_point
            try:
                result = trainer.train(spec, progress=False)
                break
            except Killed:
                pass
            finally:
                trainer.kill_point = real_kill_point
                # What a killed process loses: the Accelerator and its engine, every RNG state.
                AcceleratorState._reset_state(reset_partial_state=False)
                GradientState._reset_state()
                torch.manual_seed(987654321)
                random.seed(987654321)
        if PartialState().is_main_process:
            report[run["name"]] = {"resumed_from": result.resumed_from, "steps": result.steps,
                                   "attempts": attempts, "seconds": round(time.perf_counter() - began, 2),
                                   "engine": run.get("engine"),
                                   # (the runs before this one in the launch count too: the main run is first)
                                   "deepspeed_imported": "deepspeed" in sys.modules}
    if PartialState().is_main_process:
        Path(job["report"]).write_text(json.dumps(report, indent=2) + "\n")
    PartialState().wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
