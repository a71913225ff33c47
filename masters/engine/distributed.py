"""Multi-process training: the Accelerator masters builds, and the helpers that keep ranks in lock step.

One place for what accelerate does not do by itself on every host (checked with accelerate 1.15,
torch 2.13, deepspeed 0.19 on CPU, 2 gloo processes):

- **The world-size guard.** Launched as N > 1 processes (``WORLD_SIZE``), an Accelerator that
  reports one process would train N independent copies into one output directory. That is
  refused (exit 2) instead of running.
- **gloo on CPU.** On a host without accelerators, accelerate picks no backend for DeepSpeed or
  FSDP and silently runs every process as "rank 0 of 1". masters passes ``backend="gloo"``, and
  for FSDP, whose plugin accelerate only selects on a multi-device host, it initialises the
  process state as multi-CPU on gloo and presents it to accelerate as multi-device before the
  Accelerator is built (:func:`_fsdp_on_cpu`, the one workaround, kept here). The device is
  ``cpu`` (FSDP1 refuses ``cpu:0``).
- **A 60 s process-group timeout** (``MASTERS_PROCESS_GROUP_TIMEOUT``): a rank that dies makes
  the others fail within a minute instead of gloo's default 30.
- **masters owns the step shape under DeepSpeed**: gradient accumulation, clipping and the
  micro-batch size come from the run's ``training`` section, written into DeepSpeed's config
  before ``prepare`` (DeepSpeed clips inside its own ``step``; accelerate's ``clip_grad_norm_``
  only reports the norm there).
- **The same hooks on every rank** (:func:`install_output_hooks`): transformers' lazily installed
  output-capturing hooks are installed before ``prepare``, or ZeRO-3's cross-rank trace check fails
  when only some ranks ran a forward first.
- **Frozen models load whole** (:func:`whole_models`): under ZeRO-3 with ``zero3_init_flag`` any
  ``from_pretrained`` after the Accelerator exists comes out partitioned.

Multi-node training is out of scope: every helper assumes one host and a shared output directory.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch

from masters.errors import MastersError

TIMEOUT_ENV = "MASTERS_PROCESS_GROUP_TIMEOUT"
DEFAULT_TIMEOUT_S = 60
T = TypeVar("T")


def launched_world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 when not launched)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def requested_engine() -> str:
    """``deepspeed``, ``fsdp`` or ``ddp``: what ``accelerate launch`` was configured with."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    return "ddp"


def process_group_timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise MastersError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds", where=TIMEOUT_ENV,
                           fix=f"set it to seconds, e.g. {DEFAULT_TIMEOUT_S}") from None
    return timedelta(seconds=seconds)


def _has_accelerator_device() -> bool:
    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def _use_prebuilt_ops() -> None:
    """DeepSpeed compiles its ops on first use into TORCH_EXTENSIONS_DIR; ``bash .ci/setup test``
    builds them into the venv, so point there when nothing else is set."""
    import sys
    from pathlib import Path

    built = Path(sys.prefix) / "torch_extensions"
    if built.is_dir():
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(built))


def _fsdp_on_cpu(init_kwargs: dict[str, Any]) -> None:
    """accelerate selects FSDP only from a multi-device state (MULTI_GPU, MULTI_XPU, ...), never from
    MULTI_CPU, so on a CPU-only host FSDP would silently not run. Initialise the process state as
    multi-CPU on gloo (what ``use_cpu`` gives), then present it as multi-device so that the
    Accelerator built next takes its FSDP branch; the device stays ``cpu``."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    state = PartialState(cpu=True, **init_kwargs)
    # (FSDP: a process state left by an earlier Accelerator in this process, e.g. in tests)
    if state.distributed_type in (DistributedType.MULTI_CPU, DistributedType.FSDP):
        state.distributed_type = DistributedType.MULTI_GPU


def _import_deepspeed_only_when_used() -> None:
    """accelerate's ``extract_model_from_parallel`` (``prepare`` under FSDP2, ``unwrap_model``,
    ``save_state``) imports deepspeed whenever it is installed, only to test whether the model is a
    ``DeepSpeedEngine``: about 120 MiB of resident memory per rank (measured by
    benchmarks/distributed.py's memory log) in runs that never use it. No such engine can exist
    before deepspeed is imported, so the test asks whether it is imported instead; a DeepSpeed run
    imports it before it builds an engine, and unwraps as before."""
    import sys

    import accelerate.utils.other as other

    if getattr(other.is_deepspeed_available, "masters", False):
        return
    installed = other.is_deepspeed_available

    def imported_deepspeed() -> bool:
        return "deepspeed" in sys.modules and installed()

    imported_deepspeed.masters = True  # type: ignore[attr-defined]
    other.is_deepspeed_available = imported_deepspeed


def _launch_settings() -> tuple[Any, bool]:
    """The process-group kwargs and accelerate's ``cpu`` flag for what ``accelerate launch`` asked
    for (the launcher guard, gloo on CPU, the timeout, FSDP's CPU workaround): the same for an
    Accelerator (training) and a bare process state (generation), so either may come first."""
    from accelerate.utils import InitProcessGroupKwargs

    world = launched_world_size()
    if world > 1 and not any(os.environ.get(k) for k in ("RANK", "LOCAL_RANK")):
        raise MastersError(f"WORLD_SIZE={world} is set but no launcher started this process (no RANK or LOCAL_RANK)",
                           where="environment", fix="launch with `accelerate launch --config_file "
                           "configs/accelerate/<engine>.yaml ...`, or unset WORLD_SIZE for one process")
    engine = requested_engine()
    _import_deepspeed_only_when_used()
    if engine == "deepspeed":
        _use_prebuilt_ops()
    cpu_only = not _has_accelerator_device()
    gloo = cpu_only and world > 1  # (one process has no process group: no backend to name)
    init = InitProcessGroupKwargs(timeout=process_group_timeout(), **({"backend": "gloo"} if gloo else {}))
    cpu = False
    if cpu_only and world > 1:
        os.environ.setdefault("ACCELERATE_TORCH_DEVICE", "cpu")  # "cpu", not "cpu:0" (FSDP1 refuses it)
        if engine == "fsdp":
            _fsdp_on_cpu({"backend": "gloo", "timeout": init.timeout})
        elif engine == "ddp":
            cpu = True  # MULTI_CPU: DistributedDataParallel on gloo
    return init, cpu


def make_accelerator(training: Any, **kwargs: Any) -> Any:
    """The Accelerator for a run's ``training`` section, on whatever ``accelerate launch`` asked for."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    init, cpu = _launch_settings()
    # VLMs leave parameters out of the loss (e.g. the vision tower's last layer when features come
    # from the one before it): DDP must not wait for their gradients. Gradients are views into
    # DDP's all-reduce buckets (PyTorch's documented memory option): without it every rank holds
    # the student's gradients twice, once in .grad and once in the buckets.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True, gradient_as_bucket_view=True)
    accelerator = Accelerator(mixed_precision=training.mixed_precision, cpu=cpu,
                              gradient_accumulation_steps=training.gradient_accumulation_steps,
                              kwargs_handlers=[ddp, init], **kwargs)
    check_world_size(accelerator)
    configure_engine(accelerator, training)
    return accelerator


class OneProcess:
    """The process state of a run that was not launched: no process group, nothing to wait for."""

    num_processes = 1
    process_index = 0
    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass


def process_state() -> Any:
    """The launched processes without an Accelerator, for stages that train nothing (generation):
    accelerate's ``PartialState`` on the same process group an Accelerator built later in the
    process joins (one process: :class:`OneProcess`). The lock-step helpers below take it."""
    if launched_world_size() == 1:
        return OneProcess()
    from accelerate.state import PartialState

    init, cpu = _launch_settings()
    state = PartialState(cpu=cpu, **init.to_kwargs())
    check_world_size(state)
    return state


def check_world_size(accelerator: Any) -> None:
    """Refuse N launched processes that each believe they are alone (exit 2, nothing written)."""
    world = launched_world_size()
    if world > 1 and accelerator.num_processes != world:
        raise MastersError(
            f"launched as {world} processes (WORLD_SIZE={world}) but the Accelerator sees "
            f"{accelerator.num_processes}: each process would train alone into the same output directory",
            where=f"accelerate ({engine_name(accelerator) if hasattr(accelerator, 'state') else requested_engine()})",
            fix="launch with `accelerate launch --config_file configs/accelerate/<engine>.yaml`; "
                "an Accelerator passed to train() must be built with masters.engine.distributed.make_accelerator")


def engine_name(accelerator: Any) -> str:
    """``ddp``, ``fsdp1``, ``fsdp2``, ``zero1``..``zero3`` or ``single``."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return f"zero{zero_stage(accelerator)}"
    if kind == DistributedType.FSDP:
        return f"fsdp{accelerator.state.fsdp_plugin.fsdp_version}"
    return "ddp" if accelerator.num_processes > 1 else "single"


def zero_stage(accelerator: Any) -> int:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return 0
    return int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", plugin.zero_stage or 0))


def shards_parameters(accelerator: Any) -> bool:
    """True when no rank holds the whole student (FSDP, ZeRO-3): no replica check, gathered saves."""
    from accelerate.utils import DistributedType

    if accelerator.num_processes == 1:
        return False
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    return accelerator.distributed_type == DistributedType.DEEPSPEED and zero_stage(accelerator) == 3


def is_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def is_fsdp(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def configure_engine(accelerator: Any, training: Any) -> None:
    """Write the run's step shape into DeepSpeed's config (before ``prepare``); other engines read it
    from the Accelerator."""
    if not is_deepspeed(accelerator):
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["gradient_accumulation_steps"] = training.gradient_accumulation_steps
    config["gradient_clipping"] = float(training.max_grad_norm) if training.max_grad_norm is not None else 0.0
    config["train_micro_batch_size_per_gpu"] = training.questions_per_step  # masters prepares no dataloader
    config.pop("train_batch_size", None)
    accelerator.gradient_accumulation_steps = training.gradient_accumulation_steps


def fit_to_model(accelerator: Any, model: Any) -> None:
    """Before ``prepare``: the same hooks on every rank (:func:`install_output_hooks`). ZeRO-3 keeps
    parameters below ``stage3_param_persistence_threshold`` whole on every rank (DeepSpeed's
    default, 1e5, would keep a small student entirely unsharded). Unless the config sets it, apply
    accelerate's own ``auto`` rule, 10 x the hidden size, with the text model's hidden size (VLM
    configs have none at the top)."""
    if accelerator.num_processes > 1:
        install_output_hooks(model)
    if is_fsdp(accelerator):
        _wrap_present_layers(accelerator.state.fsdp_plugin, model)
    if not is_deepspeed(accelerator) or zero_stage(accelerator) != 3:
        return
    zero = accelerator.state.deepspeed_plugin.deepspeed_config.setdefault("zero_optimization", {})
    if zero.get("stage3_param_persistence_threshold", "auto") != "auto":
        return
    config = getattr(model, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    hidden = getattr(text, "hidden_size", None)
    if hidden:
        zero["stage3_param_persistence_threshold"] = 10 * int(hidden)


def install_output_hooks(model: Any) -> None:
    """Install transformers' output-capturing hooks (``output_hidden_states`` and the like) now, on
    every rank, before ``prepare`` wraps the model.

    transformers installs them lazily, at a submodel's first forward that asks for hidden states
    (a LLaVA vision tower always does). A rank that ran a forward before ``prepare`` (its share of
    the reference pass) then holds them *before* ZeRO-3's module hooks, the others after: the
    vision features reach the loss bypassing ZeRO-3's backward hook on that rank only, its first
    step traces one module fewer (a CLIP encoder layer), and DeepSpeed's cross-rank check fails
    at the second step ("Detected a disagreement on list length between rank0 and rank1").
    Installed here, the order is the same on every rank."""
    try:
        from transformers import PreTrainedModel
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # (older transformers: hooks were not lazy)
        return
    # The innermost submodels (a VLM's vision tower and text model), each with its own capture
    # specs, as their own forwards would; an outer model's specs would hook the towers' layers too.
    models = [m for m in model.modules() if isinstance(m, PreTrainedModel)]
    for module in models:
        if not any(other is not module and isinstance(other, PreTrainedModel) for other in module.modules()):
            maybe_install_capturing_hooks(module)


def _wrap_present_layers(plugin: Any, model: Any) -> None:
    """FSDP's transformer-based wrapping takes the model's ``_no_split_modules``, and accelerate
    fails when one of them is absent from this model (LLaVA lists CLIP text classes a VLM does not
    have). Unless the config names the classes, wrap those that are present."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    if plugin.auto_wrap_policy is not transformer_auto_wrap_policy or plugin.transformer_cls_names_to_wrap:
        return
    present = {type(m).__name__ for m in model.modules()}
    names = [n for n in (getattr(model, "_no_split_modules", None) or []) if n in present]
    if names:
        plugin.transformer_cls_names_to_wrap = names


@contextlib.contextmanager
def whole_models(accelerator: Any) -> Iterator[None]:
    """Load models whole even under ZeRO-3 (transformers reads accelerate's DeepSpeed config and
    would otherwise build them inside ``deepspeed.zero.Init``, partitioned)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None) if is_deepspeed(accelerator) else None
    if plugin is None:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.dschf = None
        plugin.set_deepspeed_weakref()


# -- lock step -------------------------------------------------------------------------------------
def barrier(accelerator: Any) -> None:
    if accelerator.num_processes > 1:
        accelerator.wait_for_everyone()


def share(items: Sequence[T], accelerator: Any, chunk: int) -> list[list[T]]:
    """This rank's chunks of ``items``: chunk ``i`` of the list goes to rank ``i % world``, and every
    rank gets the same number of chunks (empty ones at the end), so a loop over them with a
    barrier per chunk keeps the ranks in lock step."""
    world, rank = accelerator.num_processes, accelerator.process_index
    chunks = [list(items[i:i + chunk]) for i in range(0, len(items), chunk)]
    rounds = -(-len(chunks) // world) if chunks else 0
    return [chunks[r * world + rank] if r * world + rank < len(chunks) else [] for r in range(rounds)]


def in_lock_step(accelerator: Any, items: Sequence[T], chunk: int, work: Callable[[list[T]], Any]) -> None:
    """Run ``work`` over this rank's share of ``items``, one chunk per round, all ranks together
    (the slowest rank delays the others by at most one chunk, far below the timeout)."""
    for mine in share(items, accelerator, chunk):
        if mine:
            work(mine)
        barrier(accelerator)


def all_agree(accelerator: Any, value: float) -> bool:
    """True when every rank passed the same ``value`` (e.g. a count of pending items)."""
    if accelerator.num_processes == 1:
        return True
    every = accelerator.gather(torch.tensor([float(value)], device=accelerator.device))
    return bool((every == every[0]).all())


_MEETINGS: dict[str, int] = {}  # key -> times this process waited there (the same on every rank)


def wait_for_main(accelerator: Any, key: str, fn: Callable[[], T] | None = None, *, poll_s: float = 0.5) -> T | None:
    """Run ``fn`` on the main process only while the others wait for it, however long it takes (a
    barrier would time out): they poll the process group's key-value store. An exception on the
    main process is re-raised on every rank."""
    if accelerator.num_processes == 1:
        return fn() if fn else None
    import torch.distributed as dist

    store = dist.distributed_c10d._get_default_store()
    _MEETINGS[key] = _MEETINGS.get(key, 0) + 1  # a second wait at the same key is a new one
    name = f"masters/{key}/{_MEETINGS[key]}"
    if accelerator.is_main_process:
        try:
            result = fn() if fn else None
        except BaseException as exc:
            store.set(name, f"error: {exc}")
            raise
        store.set(name, "ok")
        return result
    while not store.check([name]):
        time.sleep(poll_s)
    status = store.get(name).decode()
    if status != "ok":
        raise MastersError(f"the main process failed at {key}: {status[7:]}", where=f"rank {accelerator.process_index}",
                           fix="see the main process's message above")
    return None


def meet(state: Any, key: str, value: str = "", *, error: BaseException | None = None,
         poll_s: float = 0.2) -> list[str]:
    """Post this rank's ``value`` under ``key`` and wait, however long it takes, for every rank's;
    return them in rank order. For work whose length varies by rank (a rank's share of a bank),
    where a barrier would time out. A rank that arrives with ``error`` makes every rank raise; a
    rank that dies leaves the others to the launcher, which ends them (torchrun does at once).
    Keys count their uses, so a process may meet at the same place more than once."""
    if state.num_processes == 1:
        if error is not None:
            raise error
        return [value]
    import torch.distributed as dist

    count = _MEETINGS[f"meet/{key}"] = _MEETINGS.get(f"meet/{key}", 0) + 1
    store = dist.distributed_c10d._get_default_store()
    names = [f"masters/meet/{key}/{count}/{rank}" for rank in range(state.num_processes)]
    mine = f"error: {error}" if error is not None else f"ok: {value}"
    store.set(names[state.process_index], mine)
    if error is not None:
        raise error
    values: dict[int, str] = {}
    while len(values) < len(names):
        for rank, name in enumerate(names):
            if rank not in values and store.check([name]):
                values[rank] = store.get(name).decode()
                if values[rank].startswith("error: "):  # at once, not after the slowest rank
                    raise MastersError(f"rank {rank} failed at {key}: {values[rank][7:]}",
                                       where=f"rank {state.process_index}",
                                       fix=f"see rank {rank}'s message above; rerun the same command to resume")
        if len(values) < len(names):
            time.sleep(poll_s)
    return [values[rank][4:] for rank in range(len(names))]


# -- memory by phase -------------------------------------------------------------------------------
def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``), e.g. after the
    whole student is sharded by ``prepare`` and after a gathered checkpoint: what a rank no longer
    holds stops counting against its peak."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


MEMORY_LOG_ENV = "MASTERS_MEMORY_LOG"


def log_memory(accelerator: Any, phase: str, *, model: Any = None, optimizer: Any = None) -> None:
    """With ``MASTERS_MEMORY_LOG=<file>`` set, append this rank's current and peak RSS after
    ``phase`` (one JSON line per rank and phase; benchmarks/distributed.py reads them), split into
    anonymous and file-backed pages, with the bytes of the tensors Python can reach: all of them
    (each storage once) and, given the model and optimizer, its parameters, gradients and state."""
    path = os.environ.get(MEMORY_LOG_ENV)
    if not path:
        return
    import json
    import resource
    import sys

    import psutil

    rss = psutil.Process().memory_info().rss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    entry = {"rank": getattr(accelerator, "process_index", 0), "phase": phase,
             "rss_mib": round(rss / 2**20, 1), "peak_mib": round(peak / 2**20, 1),
             "deepspeed_imported": "deepspeed" in sys.modules,
             **_rss_kinds(), **_tensor_bytes(model, optimizer)}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _rss_kinds() -> dict[str, float]:
    """Anonymous (heap, tensors) and file-backed (libraries, mapped weights) resident MiB."""
    kinds = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile"):
                kinds[f"{name[3:].lower()}_mib"] = round(int(value.split()[0]) / 1024, 1)
    except OSError:  # not Linux
        pass
    return kinds


def _storage_key(tensor: torch.Tensor) -> tuple[int, int] | None:
    # FSDP2 parameters are DTensors (their shard is the local tensor); ZeRO-3's are empty, with
    # their partition beside them
    local = getattr(tensor, "ds_tensor", None)
    local = local if local is not None else getattr(tensor, "_local_tensor", tensor)
    try:
        storage = local.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # meta, sparse, or wrapper subclasses
        return None


def _tensor_bytes(model: Any, optimizer: Any) -> dict[str, float]:
    """MiB of the storages behind every tensor the garbage collector tracks (each counted once),
    and of the model's parameters, gradients and the optimizer's state."""
    import gc
    import warnings

    def mib(keys: set) -> float:
        return round(sum(n for _, n in keys) / 2**20, 1)

    every = set()
    with warnings.catch_warnings():  # (isinstance on some deprecated torch objects warns)
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor) and (key := _storage_key(obj)) is not None:
                    every.add(key)
            except ReferenceError:  # a dead weak proxy
                continue
    out = {"tensors_mib": mib(every)}
    if model is not None:
        params = list(model.parameters())
        out["params_mib"] = mib({k for p in params if (k := _storage_key(p)) is not None})
        out["grads_mib"] = mib({k for p in params if p.grad is not None and (k := _storage_key(p.grad)) is not None})
    if optimizer is not None:
        state = [v for s in getattr(optimizer, "state", {}).values() for v in s.values() if isinstance(v, torch.Tensor)]
        out["optimizer_mib"] = mib({k for v in state if (k := _storage_key(v)) is not None})
    return out
