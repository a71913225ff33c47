"""Entropy-matched temperatures: the temperature control's ``T_r`` for each mask level ``r``.

At each level the masked teacher's mean per-token entropy is measured exactly as the probe's G2
table measures it (teacher-forced on the reference answers of validation questions); ``T_r`` is
the temperature at which the *unmasked* teacher's logits divided by ``T_r`` have that mean
entropy. Mean entropy rises monotonically with the temperature, so bisection on ``log T`` finds
it to any tolerance on the stored logits, with no further forward pass.

    from masters.engine.temperature_match import match_temperatures
    table = match_temperatures(run_spec, levels=[0.05, 0.1, ...], n=512)
    masker = {"name": "temperature", "temperatures": table.temperatures}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from masters.ratios import Ratio

T_LOW, T_HIGH = 1e-2, 1e2
TOLERANCE = 1e-6  # nats of mean entropy


@dataclass
class TemperatureTable:
    """Per level: the masked teacher's entropy, the matched temperature and what it reaches."""

    masker: str
    n: int
    entropy_t0: float
    rows: list[dict[str, float]] = field(default_factory=list)

    @property
    def temperatures(self) -> dict[str, float]:
        """``{level: T}`` as the temperature masker's ``temperatures`` field takes it."""
        return {str(Ratio.parse(r["level"])): r["temperature"] for r in self.rows}

    def to_dict(self) -> dict[str, Any]:
        return {"masker": self.masker, "n": self.n, "entropy_t0": self.entropy_t0, "rows": self.rows,
                "temperatures": self.temperatures}


def tempered_entropy(logits: Any, mask: Any, temperature: float) -> float:
    from masters.engine.probe import _mean_entropy

    return _mean_entropy(logits / temperature, mask)


def solve_temperature(logits: Any, mask: Any, target: float, *, tolerance: float = TOLERANCE) -> float:
    """The ``T`` with mean entropy of ``softmax(logits / T)`` equal to ``target`` (bisection on log T)."""
    from masters.errors import MastersError

    lo, hi = math.log(T_LOW), math.log(T_HIGH)
    e_lo, e_hi = tempered_entropy(logits, mask, T_LOW), tempered_entropy(logits, mask, T_HIGH)
    if not e_lo - tolerance <= target <= e_hi + tolerance:
        raise MastersError(f"no temperature in [{T_LOW}, {T_HIGH}] gives mean entropy {target:.4f} "
                           f"(the range is [{e_lo:.4f}, {e_hi:.4f}])", where="match_temperatures",
                           fix="check the levels: a masked teacher this far from the unmasked one is not a "
                               "temperature control's match")
    for _ in range(200):
        mid = (lo + hi) / 2
        e = tempered_entropy(logits, mask, math.exp(mid))
        if abs(e - target) <= tolerance:
            break
        lo, hi = (mid, hi) if e < target else (lo, mid)
    return math.exp(mid)


def match_temperatures(spec: Any, levels: Sequence[float], *, n: int = 512, batch_size: int = 64,
                       splits: Any = None) -> TemperatureTable:
    """Entropy-matched temperatures for ``levels`` of ``spec``'s (last) teacher under ``spec.masker``,
    on the first ``n`` validation questions (never the test split)."""
    import torch

    from masters.adapters.resolve import resolve_adapter
    from masters.data import load_splits
    from masters.engine.generation import check_tokenizers
    from masters.engine.probe import _forced, _mean_entropy, forced_levels
    from masters.errors import MastersError

    splits = splits or load_splits(spec.task)
    samples = list(splits.get("validation") or [])[:n]
    if not samples:
        raise MastersError("the task has no validation split to match temperatures on", where="task.n_validation",
                           fix="give the task a validation split")
    vocab = check_tokenizers(spec)
    teacher = resolve_adapter(spec.teachers[-1])
    teacher.model.eval()
    responses = teacher.response_ids([s.answer or "" for s in samples])
    with torch.no_grad():
        t0_logits, mask = _forced(teacher, samples, responses, vocab, batch_size)
    table = TemperatureTable(masker=spec.masker.name, n=len(samples), entropy_t0=_mean_entropy(t0_logits, mask))
    for ratio, tr_logits in forced_levels(teacher, spec.masker, levels, samples, responses, vocab, batch_size):
        target = _mean_entropy(tr_logits, mask)
        temperature = solve_temperature(t0_logits, mask, target)
        table.rows.append({"level": float(ratio), "entropy": target, "temperature": temperature,
                           "entropy_matched": tempered_entropy(t0_logits, mask, temperature)})
    return table
