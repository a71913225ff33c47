"""Atomic training checkpoints, for one process and for every distributed engine.

A checkpoint is written into a temporary sibling of the program's own name
(``.step-NNNNNN.masters-tmp.<pid>.<hex>/``, :func:`masters.files.temp_sibling`; the main process
draws it and broadcasts it to the other ranks) and renamed into place by the main process once
every rank has written its part, so a run killed while writing leaves the previous checkpoint
intact; :func:`masters.files.clean_temporaries` removes what a killed writer left (and nothing
else). Pruned checkpoints are first renamed to such a name, then removed.

Layout (``state.json`` names the ``format``):

- ``full`` (one process, DDP, FSDP1): ``model.safetensors`` holds the trainable tensors,
  whole; ``optimizer.pt`` the optimizer state. Under FSDP1 both are gathered through
  ``torch.distributed.checkpoint.state_dict`` (keys are parameter names) and set back the same
  way, so a resumed run re-shards them.
- ``sharded`` (FSDP2): ``engine/`` is a ``torch.distributed.checkpoint`` save in its Hugging Face
  safetensors layout (``HuggingFaceStorageWriter(save_distributed=True)``): every rank writes its
  own shards of the trainable tensors (``model.<name>``) and of the optimizer state
  (``optim.<name>.<key>``), about 32 MiB of a rank's data a file, with their offsets in each
  file's safetensors metadata (JSON, no pickle); ``engine/param_groups.json`` holds the
  optimizer's hyperparameters. No rank ever holds the whole weights or Adam moments (the
  ``full`` gather put all of them on rank 0: the peak of an FSDP2 run,
  ``benchmarks/results/distributed.md``); DCP re-shards on load.
- ``deepspeed`` (ZeRO-1/2/3): ``engine/`` is ``accelerator.save_state`` (DeepSpeed's partitioned
  model and optimizer states, accelerate's RNG state).
- Every rank's own RNG state as ``rng-rank<R>.safetensors`` (torch) and ``rng-rank<R>.json``
  (Python's ``random``): dropout and LoRA draw from them, so a resumed run equals an
  uninterrupted one.

Files written with pickle (``optimizer.pt``; DeepSpeed's ``*.pt``; accelerate's RNG ``*.pkl``) are
only ever read with ``torch.load(weights_only=True)`` under one allow-list of safe globals
(:func:`safe_globals`); DeepSpeed reads through :class:`SafeCheckpointEngine` instead of its own
``weights_only=False`` loader.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from masters.files import atomic_write, atomic_write_json, swap_in_directory, temp_sibling

KEEP = 2
FULL, DEEPSPEED, SHARDED = "full", "deepspeed", "sharded"


# -- loading pickles safely ------------------------------------------------------------------------
def safe_globals(deepspeed: bool = False) -> list[Any]:
    """The one allow-list for ``torch.load(weights_only=True)``: numpy's RNG state (accelerate),
    DeepSpeed's loss scaler, ZeRO stage and fragment records, and the builtins they use.

    DeepSpeed's classes only with ``deepspeed`` or where it is imported already: importing it costs a
    rank about 120 MiB, and a DDP or FSDP checkpoint holds none of them."""
    allowed: list[Any] = []
    try:  # what accelerate itself allows for its RNG files (numpy arrays and dtypes, codecs.encode)
        from accelerate.utils.other import TORCH_SAFE_GLOBALS

        allowed += list(TORCH_SAFE_GLOBALS)
    except ImportError:  # pragma: no cover - other accelerate versions
        pass
    import numpy as np

    allowed += [np.dtype, np.ndarray] + [getattr(np.dtypes, n) for n in ("UInt32DType", "Float64DType", "Int64DType")
                                         if hasattr(np, "dtypes") and hasattr(np.dtypes, n)]
    try:  # deepspeed is a test/scale-out extra
        if not (deepspeed or "deepspeed" in sys.modules):
            raise ImportError
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed += [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
    except ImportError:
        pass
    import argparse
    import collections

    allowed += [collections.OrderedDict, collections.defaultdict, argparse.Namespace, set, frozenset, slice]
    return allowed


def load_torch(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` under :func:`safe_globals`, nothing else (DeepSpeed's
    classes are imported only for a file that names them)."""
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "deepspeed." not in str(error) or "deepspeed" in sys.modules:
            raise
    with torch.serialization.safe_globals(safe_globals(deepspeed=True)):
        return torch.load(path, map_location=map_location, weights_only=True)


def _safe_checkpoint_engine() -> Any:
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class SafeCheckpointEngine(TorchCheckpointEngine):
        """DeepSpeed's torch checkpoint engine, reading with ``weights_only=True`` (its own passes False)."""

        def load(self, path: str, map_location: Any = None) -> Any:
            return load_torch(path, map_location=map_location)

    return SafeCheckpointEngine


# -- the state of one process (one-process format, kept readable) ---------------------------------
def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Only what the optimizer changes: frozen weights (a LoRA base) come from the checkpoint dir.
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.detach().contiguous().cpu() for n, t in model.state_dict().items() if n in names}


def save_checkpoint(directory: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any]) -> Path:
    """One process: write, rename into place, prune (see :func:`save_distributed` for N ranks)."""
    tmp = _fresh_tmp(directory, step)
    save_file(_trainable_state(model), str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    _save_rng(tmp, 0)
    return _publish(directory, tmp, step, {**state, "format": FULL})


def latest_checkpoint(directory: Path) -> Path | None:
    done = sorted(p for p in directory.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                  and (p / "state.json").exists())
    return done[-1] if done else None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    weights = load_file(str(path / "model.safetensors"))
    _check_complete(path, set(_trainable_state(model)), weights)
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(load_torch(path / "optimizer.pt"))
    state = _read_state(path)
    _load_rng(path, 0, state)
    return state


# -- N ranks ---------------------------------------------------------------------------------------
def save_distributed(accelerator: Any, directory: Path, step: int, model: Any, optimizer: Any,
                     state: dict[str, Any]) -> Path:
    """Every rank calls this together; the main process publishes the checkpoint."""
    from masters.engine.distributed import barrier, engine_name, is_deepspeed, is_fsdp

    main = accelerator.is_main_process
    tmp = _fresh_tmp(directory, step) if main else None
    tmp = _shared_path(accelerator, tmp)
    barrier(accelerator)
    if is_deepspeed(accelerator):
        fmt = DEEPSPEED
        accelerator.save_state(str(tmp / "engine"))
    elif engine_name(accelerator) == "fsdp2":
        fmt = SHARDED
        _save_sharded(accelerator, tmp / "engine", model, optimizer)
    else:
        fmt = FULL
        if is_fsdp(accelerator):
            weights, optim = _gathered(accelerator, model, optimizer)
        else:
            plain = accelerator.unwrap_model(model)
            weights, optim = _trainable_state(plain), optimizer.state_dict() if main else None
        if main:
            save_file(weights, str(tmp / "model.safetensors"))
            torch.save(optim, tmp / "optimizer.pt")
    _save_rng(tmp, accelerator.process_index)
    barrier(accelerator)
    final = tmp
    if main:
        final = _publish(directory, tmp, step, {**state, "format": fmt, "world_size": accelerator.num_processes})
    barrier(accelerator)
    return directory / f"step-{step:06d}" if not main else final


def load_distributed(accelerator: Any, path: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    """Every rank calls this together: restore model, optimizer and this rank's RNG from ``path``."""
    from masters.engine.distributed import engine_name, is_deepspeed, is_fsdp
    from masters.errors import MastersError

    state = _read_state(path)
    fmt = state.get("format", FULL)
    want = DEEPSPEED if is_deepspeed(accelerator) else SHARDED if engine_name(accelerator) == "fsdp2" else FULL
    if fmt != want:
        names = {DEEPSPEED: "DeepSpeed", SHARDED: "FSDP2 (sharded)", FULL: "one process, DDP or FSDP1"}
        raise MastersError(f"checkpoint written by {names.get(fmt, fmt)} cannot resume under {names[want]}",
                           where=str(path), fix="resume with the accelerate config the run started with "
                           f"(state.json: engine {state.get('engine', '?')})")
    if fmt == DEEPSPEED:
        if state.get("world_size") != accelerator.num_processes:
            raise MastersError(f"DeepSpeed checkpoint of {state.get('world_size')} ranks, resumed on "
                               f"{accelerator.num_processes}", where=str(path),
                               fix="resume with the number of processes the run started with")
        model.checkpoint_engine = _safe_checkpoint_engine()()
        with torch.serialization.safe_globals(safe_globals(deepspeed=True)):
            accelerator.load_state(str(path / "engine"))
    elif fmt == SHARDED:
        _load_sharded(accelerator, path / "engine", model, optimizer)
    elif is_fsdp(accelerator):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        weights = load_file(str(path / "model.safetensors"))
        optim = load_torch(path / "optimizer.pt")
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=optim, options=options)
    else:
        plain = accelerator.unwrap_model(model)
        weights = load_file(str(path / "model.safetensors"))
        _check_complete(path, set(_trainable_state(plain)), weights)
        plain.load_state_dict(weights, strict=False)
        optimizer.load_state_dict(load_torch(path / "optimizer.pt"))
    _load_rng(path, accelerator.process_index, state)
    return state


def _gathered(accelerator: Any, model: Any, optimizer: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Whole trainable tensors and optimizer state from a sharded (FSDP) model, on every rank.

    ``cpu_offload`` only off the CPU: a full state dict offloaded to CPU from CPU tensors
    segfaults (torch 2.13)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=_offload(accelerator))
    weights, optim = get_state_dict(model, optimizer, options=options)
    # FSDP1 names parameters with its wrapper prefixes; the state dict's names are the model's own.
    trainable = {_clean(n) for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
    keep = {k: v.detach().contiguous().cpu() for k, v in weights.items() if _clean(k) in trainable}
    if len(keep) != len(trainable) and (accelerator.is_main_process or not _offload(accelerator)):
        from masters.errors import MastersError

        raise MastersError(f"the gathered state dict has {len(keep)} of the {len(trainable)} trainable tensors",
                           where="checkpoint (FSDP)", fix="report this as a bug with the run's accelerate config")
    return keep, optim


def _sharded_state(accelerator: Any, model: Any, optimizer: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """This rank's shards, flat for DCP (``model.<name>``, ``optim.<name>.<key>``), and the two
    nested state dicts they came from (the tensors of the flat dict *are* theirs: DCP loads in place)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, optim = get_state_dict(model, optimizer)  # sharded (DTensor) views; a fresh optimizer's state created
    trainable = {_clean(n) for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
    weights = {k: v for k, v in weights.items() if _clean(k) in trainable}  # a LoRA base stays in the student dir
    flat: dict[str, Any] = {f"model.{k}": v for k, v in weights.items()}
    for name, entry in optim["state"].items():
        for key, value in entry.items():
            if not isinstance(value, torch.Tensor):
                from masters.errors import MastersError

                raise MastersError(f"optimizer state {name}.{key} is not a tensor ({type(value).__name__})",
                                   where="checkpoint (FSDP2)", fix="use an optimizer whose state is tensors (AdamW)")
            flat[f"optim.{name}.{key}"] = value
    return flat, weights, optim


def _save_sharded(accelerator: Any, directory: Path, model: Any, optimizer: Any) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    flat, _, optim = _sharded_state(accelerator, model, optimizer)
    files = _file_index(flat, accelerator.num_processes)
    dcp.save(flat, storage_writer=HuggingFaceStorageWriter(str(directory), fqn_to_index_mapping=files,
                                                           save_distributed=True))
    if accelerator.is_main_process:  # the names too: a parameter that never had a gradient has no Adam state
        atomic_write_json(directory / "param_groups.json", {"param_groups": optim["param_groups"], "keys": sorted(flat)})


SHARD_FILE_BYTES = 32 << 20


def _file_index(flat: dict[str, Any], world_size: int) -> dict[str, int]:
    """Tensor name -> file number, about :data:`SHARD_FILE_BYTES` of this rank's data a file. DCP
    serialises a whole file in memory before writing it: one file per rank cost each rank its whole
    share of the weights and Adam state again (+800 MiB at 93M parameters, benchmarks/distributed.py).
    The same on every rank: names and global shapes are."""
    index, used, files = {}, 0, 1
    for name in sorted(flat):
        value = flat[name]
        share = value.numel() * value.element_size() / (world_size if hasattr(value, "to_local") else 1)
        if used and used + share > SHARD_FILE_BYTES:
            files, used = files + 1, 0
        index[name], used = files, used + share
    return index


def _load_sharded(accelerator: Any, directory: Path, model: Any, optimizer: Any) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    flat, weights, optim = _sharded_state(accelerator, model, optimizer)
    saved = json.loads((directory / "param_groups.json").read_text())
    keys, groups = set(saved["keys"]), saved["param_groups"]
    # the fresh optimizer's state was created for every parameter; keep only what the run had
    optim["state"] = {name: entry for name, entry in optim["state"].items()
                      if all(f"optim.{name}.{key}" in keys for key in entry)}
    dcp.load({k: v for k, v in flat.items() if k in keys}, storage_reader=HuggingFaceStorageReader(str(directory)))
    optim["param_groups"] = [{**g, **{k: tuple(v) if isinstance(g.get(k), tuple) else v for k, v in saved.items()}}
                             for g, saved in zip(optim["param_groups"], groups)]
    set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=optim,
                   options=StateDictOptions(strict=False))


def _clean(name: str) -> str:
    for prefix in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module."):
        name = name.replace(prefix, "")
    return name


def gathered_state_dict(accelerator: Any, model: Any) -> dict[str, torch.Tensor]:
    """The whole student's state dict (every tensor full shape), collected by every rank; the
    main process gets the tensors (the others may get an empty dict under DeepSpeed)."""
    from masters.engine.distributed import is_deepspeed, is_fsdp

    if is_fsdp(accelerator):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=_offload(accelerator))
        return {k: v.detach().cpu() for k, v in get_model_state_dict(model, options=options).items()}
    if is_deepspeed(accelerator):
        state = accelerator.get_state_dict(model)  # ZeRO-3: gathered on every rank, returned on the main one
        return {k: v.detach().cpu() for k, v in (state or {}).items()}
    return {k: v.detach().cpu() for k, v in accelerator.unwrap_model(model).state_dict().items()}


# -- shared pieces ---------------------------------------------------------------------------------
def _fresh_tmp(directory: Path, step: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(directory / f"step-{step:06d}")
    tmp.mkdir()
    return tmp


def _shared_path(accelerator: Any, path: Path | None) -> Path:
    """The main process's ``path`` on every rank (the temporary name carries the main's pid)."""
    if accelerator.num_processes <= 1:
        assert path is not None
        return path
    from accelerate.utils import broadcast_object_list

    box = [str(path) if path is not None else None]
    broadcast_object_list(box, from_process=0)
    return Path(box[0])


def _publish(directory: Path, tmp: Path, step: int, state: dict[str, Any]) -> Path:
    """Rename the complete ``tmp`` to ``step-NNNNNN`` (a failure removes ``tmp`` and keeps what was
    there), then prune all but the last :data:`KEEP` checkpoints."""
    final = directory / f"step-{step:06d}"
    try:
        atomic_write_json(tmp / "state.json", {**state, "step": step})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # a step written again (a resumed run): the previous one stays until the swap
    swap_in_directory(tmp, final)
    for stale in sorted(p for p in directory.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))[:-KEEP]:
        _remove_dir(stale)
    return final


def _remove_dir(path: Path) -> None:
    """Remove a directory so that a kill never leaves it half there under its own name: rename it
    to a temporary of masters' own (which :func:`clean_temporaries` finishes), then remove it."""
    doomed = temp_sibling(path)
    try:
        os.replace(path, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / "state.json").read_text())


def _check_complete(path: Path, expected: set[str], weights: dict[str, torch.Tensor]) -> None:
    missing = expected - set(weights)
    if missing:
        from masters.errors import MastersError

        raise MastersError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[0]}",
                           where=str(path), fix="delete this checkpoint to resume from the one before, or start over")


def _save_rng(directory: Path, rank: int) -> None:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    save_file(tensors, str(directory / f"rng-rank{rank}.safetensors"))
    atomic_write(directory / f"rng-rank{rank}.json", json.dumps({"python_random": _py_random_state()}) + "\n")


def _load_rng(path: Path, rank: int, state: dict[str, Any]) -> None:
    tensors_path = path / f"rng-rank{rank}.safetensors"
    if not tensors_path.exists():  # checkpoints written before per-rank RNG files
        tensors_path = path / "rng.safetensors"
    tensors = load_file(str(tensors_path))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda{i}"] for i in range(len(tensors)) if f"cuda{i}" in tensors]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    py_path = path / f"rng-rank{rank}.json"
    py = json.loads(py_path.read_text())["python_random"] if py_path.exists() else state.get("python_random")
    if py is not None:
        random.setstate(_from_json(py))


def _py_random_state() -> Any:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _from_json(value: Any) -> Any:
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


def _offload(accelerator: Any) -> bool:
    """Gather full state dicts onto rank 0 only (``cpu_offload``: the other ranks get nothing, so no
    rank but the writer holds a whole copy). FSDP1 on CPU segfaults with it (torch 2.13), so FSDP1
    gathers on every rank there."""
    from masters.engine.distributed import engine_name

    return accelerator.device.type != "cpu" or engine_name(accelerator) == "fsdp2"
