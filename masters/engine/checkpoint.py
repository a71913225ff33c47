"""Atomic training checkpoints: safetensors weights, optimizer state, position and RNG in JSON.

A checkpoint is written into ``step-NNNNNN.tmp/`` and renamed into place, so a run killed while
writing leaves the previous checkpoint intact. The optimizer state is the one file written with
``torch.save`` (it holds step counters and tensors); it is read back with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

KEEP = 2


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Only what the optimizer changes: frozen weights (a LoRA base) come from the checkpoint dir.
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.detach().contiguous().cpu() for n, t in model.state_dict().items() if n in names}


def save_checkpoint(directory: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:06d}"
    tmp = directory / f"step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_trainable_state(model), str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"torch": torch.get_rng_state()}
    save_file(rng, str(tmp / "rng.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "step": step, "python_random": _py_random_state()},
                                               indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(p for p in directory.glob("step-*") if not p.name.endswith(".tmp"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    done = sorted(p for p in directory.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                  and (p / "state.json").exists())
    return done[-1] if done else None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    weights = load_file(str(path / "model.safetensors"))
    missing = set(_trainable_state(model)) - set(weights)
    if missing:
        from masters.errors import MastersError

        raise MastersError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[0]}",
                           where=str(path), fix="delete this checkpoint to resume from the one before, or start over")
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])
    state = json.loads((path / "state.json").read_text())
    random.setstate(_from_json(state.pop("python_random")))
    return state


def _py_random_state() -> Any:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _from_json(value: Any) -> Any:
    version, internal, gauss = value
    return (version, tuple(internal), gauss)
