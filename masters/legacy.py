"""Older config forms, mapped to the current ones (and the note that prints the new form).

Before objectives and tasks were components, a run chose its training method with
``training.method`` (with ``beta``, ``distill_loss_weight`` and ``negative_advantages`` beside it)
and its data with ``data: {source: NAME, ...}``. Both are still accepted:

* ``training.method: M`` becomes ``objective: M``; ``fixed_mask`` becomes ``masters`` with a
  ``constant`` schedule at the configured ``r_max``, and ``masters_no_distill_reward`` becomes
  ``masters`` with the distillation rewards dropped from ``rewards``;
* the objective's fields move from ``training`` into ``objective`` (a field the objective does not
  have, e.g. ``beta`` under ``sft``, is dropped: it never had an effect there);
* ``data: {source: NAME, ...}`` becomes ``task: {name: NAME, ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from masters.errors import SpecError

# Objective fields that used to live in ``training``.
MOVED_TRAINING_FIELDS: tuple[str, ...] = ("negative_advantages", "beta", "distill_loss_weight")
LEGACY_METHODS: tuple[str, ...] = ("masters", "sft", "naive_kd", "progressive_kd", "fixed_mask",
                                   "masters_no_distill_reward")


def upgrade_config(data: dict[str, Any], *, where: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """``(config in the current form, notes)``; the input is not modified."""
    notes: list[str] = []
    data = dict(data)
    training = data.get("training")
    if isinstance(training, Mapping) and ("method" in training or set(training) & set(MOVED_TRAINING_FIELDS)):
        notes.append(_upgrade_method(data, dict(training), where))
    if "data" in data:
        notes.append(_upgrade_data(data, where))
    return data, notes


def written_location(location: str, config: Mapping[str, Any]) -> str:
    """Where the user wrote a field that the upgrade moved: errors name the place in *their* config.

    ``objective.masters.beta`` is ``training.beta`` in a config that used ``training.*``;
    ``task.shapes.n_train`` is ``data.n_train`` in one that used ``data:``.
    """
    parts = location.split(".")
    training = config.get("training")
    if (len(parts) >= 3 and parts[0] == "objective" and parts[2] in MOVED_TRAINING_FIELDS
            and isinstance(training, Mapping) and parts[2] in training):
        return ".".join(["training", *parts[2:]])
    if len(parts) >= 2 and parts[0] == "task" and "data" in config and "task" not in config:
        rest = parts[2:] if len(parts) >= 3 else []
        return ".".join(["data", *rest]) if rest else "data"
    return location


def _upgrade_method(data: dict[str, Any], training: dict[str, Any], where: str | None) -> str:
    from masters.config import DEFAULT_COMPONENTS, _name_shorthand, default_rewards
    from masters.plugins import get_components

    objectives = get_components().registry("objective")
    method = training.pop("method", None)
    if method is not None and "objective" in data:
        raise SpecError([("training.method", "give either training.method (the older form) or objective, not both")],
                        source=where)
    if method is None:
        objective = dict(_name_shorthand(data.get("objective", DEFAULT_COMPONENTS["objective"])))
    elif method in ("fixed_mask", "masters_no_distill_reward"):
        objective = {"name": "masters"}
    elif str(method) in objectives:
        objective = {"name": str(method)}
    else:
        from masters.errors import unknown_name_message

        raise SpecError([("training.method", unknown_name_message("training method", str(method),
                                                                  sorted(set(LEGACY_METHODS) | set(objectives.names()))))],
                        source=where)
    fields = (objectives.get(objective["name"]).spec_cls.model_fields
              if objective["name"] in objectives else {})
    dropped = []
    for key in MOVED_TRAINING_FIELDS:
        if key in training:
            value = training.pop(key)
            if key in fields:
                objective.setdefault(key, value)
            else:
                dropped.append(key)
    data["training"] = training
    data["objective"] = objective
    changed = {"objective": objective}
    if method == "fixed_mask":
        schedule = _name_shorthand(data.get("schedule", DEFAULT_COMPONENTS["schedule"]))
        r_max = schedule.get("r_max", 0.2) if isinstance(schedule, Mapping) else 0.2
        data["schedule"] = changed["schedule"] = {"name": "constant", "r_max": r_max}
    if method == "masters_no_distill_reward":
        rewards = _name_shorthand(data.get("rewards") or default_rewards(_name_shorthand(data.get("task", {}))))
        data["rewards"] = changed["rewards"] = [r for r in rewards if not _is_distillation_reward(r)]
    new_form = _yaml(changed)
    head = f"training.method: {method}" if method is not None else "training." + "/".join(
        k for k in MOVED_TRAINING_FIELDS if k in objective)
    note = f"{where + ': ' if where else ''}{head} is the older form; the new form is:\n{new_form}"
    if dropped:
        note += f"\n(training.{', training.'.join(dropped)} dropped: objective {objective['name']!r} has no such field)"
    return note


def _upgrade_data(data: dict[str, Any], where: str | None) -> str:
    if "task" in data:
        raise SpecError([("data", "give either data (the older form) or task, not both")], source=where)
    old = data.pop("data")
    if isinstance(old, Mapping):
        task = dict(old)
        task = {"name": task.pop("source", "shapes"), **task}
    else:
        task = old  # let validation report the wrong type at `task`
    data["task"] = task
    return f"{where + ': ' if where else ''}data: is the older form; the new form is:\n{_yaml({'task': task})}"


def _is_distillation_reward(item: Any) -> bool:
    from masters.plugins import get_components

    rewards = get_components().registry("reward")
    name = item.get("name") if isinstance(item, Mapping) else None
    return name in rewards and getattr(rewards.get(name).spec_cls, "signal", "accuracy") == "distillation"


def _yaml(value: Any) -> str:
    import yaml

    return "\n".join("  " + line for line in yaml.safe_dump(value, sort_keys=False).splitlines())
