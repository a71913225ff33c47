"""The plugin contract of masters: every hook a plugin may implement, documented here.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, named after the
hooks below, published under the entry-point group ``masters``::

    [project.entry-points.masters]
    my_plugin = "my_package.hooks"

Registration hooks receive a ``register`` callback and call it once per component *spec class*;
plugins never register by import side effect, and the host records which distribution each
component came from. A spec class is a :class:`masters.specs.ComponentSpec` subclass whose ``name``
field is a ``Literal`` and whose ``implementation`` points (lazily, as ``"module:Attr"``) at the
class the engine builds; the interface that class must satisfy is in :mod:`masters.interfaces`.
Built-in components register through these same hooks. The seven kinds: maskers, restore
schedules, rewards, VLM adapters, objectives, tasks and generation backends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "masters"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type], None]


@hookspec
def masters_register_maskers(register: Register) -> None:
    """Register maskers: components that decide which teacher weights are zeroed at a ratio.

    Call ``register(SpecClass)`` once per masker. ``SpecClass.kind`` is ``"masker"`` and its
    implementation satisfies :class:`masters.interfaces.Masker`: it splits each in-scope tensor
    into units and scores every element (lower is masked first); the runtime ranks once at
    ``r_max`` and takes every lower level as a prefix of that ranking, so masks nest and restoring
    to ratio 0 is exact.
    """


@hookspec
def masters_register_schedules(register: Register) -> None:
    """Register restore schedules: maps from training progress in ``[0, 1]`` to a mask ratio.

    ``SpecClass.kind`` is ``"schedule"``; the implementation satisfies
    :class:`masters.interfaces.RestoreSchedule` and exposes its finite, ordered set of levels
    (the last one is 0), which is where response banks are generated.
    """


@hookspec
def masters_register_rewards(register: Register) -> None:
    """Register reward functions.

    ``SpecClass.kind`` is ``"reward"``. An accuracy reward (``SpecClass.signal == "accuracy"``)
    satisfies :class:`masters.interfaces.AccuracyReward` and is computed offline, once per banked
    response. A distillation reward (``signal == "distillation"``) satisfies
    :class:`masters.interfaces.DistillationReward` and is computed in the training step from the
    teacher and student forward passes.
    """


@hookspec
def masters_register_adapters(register: Register) -> None:
    """Register VLM adapters: everything the engine does with a model goes through one.

    ``SpecClass.kind`` is ``"adapter"``; the implementation satisfies
    :class:`masters.interfaces.VLMAdapter` (load, encode a chat, generate, teacher-force, list
    maskable tensors by VLM part, save). Setting ``model_types`` on the spec class is enough for
    checkpoints of those ``config.json`` model types to be claimed by it; implement
    :func:`masters_claim_checkpoint` only for claims that need more than the model type.
    """


@hookspec(firstresult=True)
def masters_claim_checkpoint(config: dict[str, Any]) -> str | None:
    """Return the name of the adapter that handles a checkpoint, or ``None`` to pass.

    ``config`` is the raw ``config.json`` of the checkpoint directory as a dict; decide from it
    alone (usually ``config["model_type"]``) without importing transformers. The first non-None
    answer wins; an explicit ``adapter:`` in the run spec overrides every claim, and when two
    plugins claim the same checkpoint masters warns and names both.
    """


@hookspec
def masters_register_objectives(register: Register) -> None:
    """Register training objectives: what the training step optimises.

    ``SpecClass.kind`` is ``"objective"``; the spec's :meth:`~masters.specs.ObjectiveSpec.requirements`
    declares, without importing torch, what the objective needs: banked groups or the data's
    reference answers, which teacher level (the restore schedule's or the unmasked teacher, or no
    teacher), and which signals of the step (student log-probs, teacher divergence, accuracy
    rewards, distillation reward, reference log-probs, group index). The trainer computes only
    what is declared and hands it to the implementation, which satisfies
    :class:`masters.interfaces.Objective` and returns the loss. Built-ins: ``masters``,
    ``progressive_kd``, ``naive_kd``, ``sft``.
    """


@hookspec
def masters_register_tasks(register: Register) -> None:
    """Register tasks: data sources that build the train, validation and test splits.

    ``SpecClass.kind`` is ``"task"``; the implementation satisfies :class:`masters.interfaces.Task`
    (``splits() -> {"train": [...], "validation": [...], "test": [...]}`` of
    :class:`masters.data.VQASample`, deterministic for a given spec). ``SpecClass.default_rewards``
    may name the accuracy rewards a run uses when its config gives none. Built-ins: ``shapes``,
    ``llava_json``, ``hf_datasets``.
    """


@hookspec
def masters_register_backends(register: Register) -> None:
    """Register generation backends: the engines that sample the response bank.

    ``SpecClass.kind`` is ``"backend"``; the implementation satisfies
    :class:`masters.interfaces.GenerationBackend` and declares its
    :class:`masters.interfaces.BackendCapabilities` (per-row seeds, rows equal to the ``hf``
    backend's, behaviour log-probs). What every backend must keep: each row sampled from its own
    seed (so a resumed bank equals an uninterrupted one, whatever the batch), banned ids never
    sampled, responses cut after the first EOS (kept) or at ``max_new_tokens``. Built-in: ``hf``
    (transformers ``generate`` with the per-row Gumbel sampler).
    """
