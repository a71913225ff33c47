"""Composition of rewards: ``R = sum_i w_i * R_i`` (method.md section 5; weights are spec fields).

Torch-free at import: values may be lists of floats or 1-D tensors (torch is imported only when a
tensor is given). Every reward is kept raw and weighted so that both can be logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CombinedRewards", "combine_rewards", "reward_keys"]


@dataclass(frozen=True)
class CombinedRewards:
    """``total[j] = sum_i weighted[i][j]``, ``weighted[i][j] = weights[i] * raw[i][j]``."""

    total: Any
    raw: Mapping[str, Any]
    weighted: Mapping[str, Any]
    weights: Mapping[str, float]

    def metrics(self, prefix: str = "reward") -> dict[str, float]:
        """Batch means for the metrics log: ``reward/<key>/raw``, ``.../weighted`` and ``reward/total``."""
        out = {}
        for key in self.raw:
            out[f"{prefix}/{key}/raw"] = _mean(self.raw[key])
            out[f"{prefix}/{key}/weighted"] = _mean(self.weighted[key])
        out[f"{prefix}/total"] = _mean(self.total)
        return out


def reward_keys(specs: Sequence[Any]) -> list[str]:
    """One key per reward spec: its name, suffixed ``#2``, ``#3``... when a name repeats (two regexes)."""
    seen: dict[str, int] = {}
    keys = []
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
        keys.append(spec.name if seen[spec.name] == 1 else f"{spec.name}#{seen[spec.name]}")
    return keys


def combine_rewards(values: Mapping[str, Any], weights: Mapping[str, float] | Sequence[Any]) -> CombinedRewards:
    """Weight and sum per-response rewards.

    Args:
        values: reward key -> one value per response (list of floats or 1-D tensor), same length
            for every key. ``None`` (an unscored row) is refused: score the bank first.
        weights: reward key -> weight, or the run's reward specs (keys from :func:`reward_keys`,
            weights from ``spec.weight``). Every key of ``values`` needs a weight.
    """
    if not isinstance(weights, Mapping):
        weights = {key: float(spec.weight) for key, spec in zip(reward_keys(weights), weights)}
    if not values:
        raise ValueError("no rewards to combine")
    missing = [key for key in values if key not in weights]
    if missing:
        raise ValueError(f"no weight for reward(s) {missing}; weights are given for {sorted(weights)}")
    lengths = {key: len(v) for key, v in values.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"rewards disagree on the number of responses: {lengths}")
    if any(_is_tensor(v) for v in values.values()):
        return _combine_tensors(values, weights)
    raw, weighted = {}, {}
    for key, vals in values.items():
        if any(v is None for v in vals):
            raise ValueError(f"reward {key!r} has unscored responses (None): run the scoring stage first")
        raw[key] = [float(v) for v in vals]
        weighted[key] = [float(weights[key]) * v for v in raw[key]]
    total = [sum(column) for column in zip(*weighted.values())]
    return CombinedRewards(total=total, raw=raw, weighted=weighted, weights={k: float(weights[k]) for k in values})


def _combine_tensors(values: Mapping[str, Any], weights: Mapping[str, float]) -> CombinedRewards:
    import torch

    raw, weighted = {}, {}
    device = next(v.device for v in values.values() if _is_tensor(v))
    for key, vals in values.items():
        if not _is_tensor(vals):
            if any(v is None for v in vals):
                raise ValueError(f"reward {key!r} has unscored responses (None): run the scoring stage first")
            vals = torch.tensor([float(v) for v in vals], dtype=torch.float32, device=device)
        raw[key] = vals.detach().float()
        weighted[key] = raw[key] * float(weights[key])
    total = torch.stack(list(weighted.values())).sum(0)
    return CombinedRewards(total=total, raw=raw, weighted=weighted, weights={k: float(weights[k]) for k in values})


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _mean(values: Any) -> float:
    if _is_tensor(values):
        return float(values.float().mean()) if values.numel() else float("nan")
    return sum(values) / len(values) if len(values) else float("nan")
