"""The temperature control: the unmasked teacher whose logits are divided by ``T_r`` at level ``r``.

It stands where a masked teacher stands (``MaskedTeacher.from_model`` returns it for the
``temperature`` masker), so the bank, the training step and the probe use it unchanged. The
weights are never modified: a forward hook on the output head divides its output, so level 0 (no
hook effect) is the teacher bit for bit and ``close`` removes the hook.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from masters.errors import MastersError
from masters.masking.maskers import BaseMasker
from masters.masking.report import SparsityReport
from masters.ratios import Ratio

ZERO = Ratio(0)


class TemperatureMasker(BaseMasker):
    """Declares its levels' temperatures; :meth:`teacher` builds the runtime."""

    def temperature(self, level: Ratio) -> float:
        return 1.0 if level.bp == 0 else float(self.spec.temperatures[level])

    def check_levels(self, levels: Sequence[Ratio]) -> None:
        missing = [str(r) for r in levels if r.bp and r not in self.spec.temperatures]
        if missing:
            raise MastersError(
                f"the temperature masker has no temperature for level(s) {', '.join(missing)}",
                where="masker.temperatures",
                fix="give every level the schedule reaches a temperature (masters.engine.probe.match_temperatures "
                    "computes entropy-matched ones)",
            )

    def teacher(self, model: torch.nn.Module, levels: Iterable[Any]) -> TemperedTeacher:
        return TemperedTeacher(model, self, levels)


class TemperedTeacher:
    """The runtime of the temperature masker: ``set_level`` / ``restore`` / ``close`` like a masked teacher."""

    memory = "on_the_fly"

    def __init__(self, model: torch.nn.Module, masker: TemperatureMasker, levels: Iterable[Any]):
        from masters.masking.runtime import _plan_levels

        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None:
            raise MastersError(f"{type(model).__name__} has no output head to apply a temperature to",
                               where="masker: temperature",
                               fix="use a model whose get_output_embeddings() returns its LM head")
        self.masker = masker
        self.levels: tuple[Ratio, ...] = _plan_levels(levels)
        self.r_max = self.levels[0]
        masker.check_levels(self.levels)
        self._level = ZERO
        self._scale = 1.0
        self._hook = head.register_forward_hook(self._divide)

    def _divide(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        if self._scale == 1.0:
            return None  # level 0: the teacher's own logits, untouched
        return output / self._scale

    @property
    def level(self) -> Ratio:
        return self._level

    @property
    def temperature(self) -> float:
        """The temperature in force now (1 at level 0)."""
        return self._scale

    def set_level(self, ratio: Ratio | float | str) -> None:
        from masters.masking.runtime import planned_level

        target = planned_level(ratio, self.levels, where="TemperedTeacher.set_level")
        self._level = target
        self._scale = self.masker.temperature(target)

    def restore(self) -> None:
        self.set_level(ZERO)

    def close(self) -> None:
        self.restore()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def names(self) -> list[str]:
        return []

    def extra_bytes(self) -> int:
        return 0

    def report(self, level: Ratio | float | str | None = None) -> SparsityReport:
        """No weight is masked at any level."""
        from masters.masking.runtime import _as_ratio

        target = self._level if level is None else _as_ratio(level, where="report")
        return SparsityReport(level=target, masker=self.masker.spec.name, memory=self.memory, tensors=[],
                              extra_bytes=0)
