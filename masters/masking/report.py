"""The sparsity report: realised masked fraction per tensor and overall, as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masters.ratios import Ratio


@dataclass(frozen=True)
class TensorSparsity:
    name: str
    part: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    masked: int
    units: int
    unit_size: int
    aliases: tuple[str, ...] = ()

    @property
    def ratio(self) -> float:
        return self.masked / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class SparsityReport:
    level: Ratio
    masker: str
    memory: str
    tensors: list[TensorSparsity]
    extra_bytes: int

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def masked(self) -> int:
        return sum(t.masked for t in self.tensors)

    @property
    def ratio(self) -> float:
        return self.masked / self.numel if self.numel else 0.0

    def by_part(self) -> dict[str, dict[str, Any]]:
        parts: dict[str, dict[str, Any]] = {}
        for t in self.tensors:
            row = parts.setdefault(t.part, {"numel": 0, "masked": 0})
            row["numel"] += t.numel
            row["masked"] += t.masked
        for row in parts.values():
            row["ratio"] = row["masked"] / row["numel"] if row["numel"] else 0.0
        return parts

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": float(self.level),
            "level_bp": self.level.bp,
            "masker": self.masker,
            "memory": self.memory,
            "numel": self.numel,
            "masked": self.masked,
            "ratio": self.ratio,
            "extra_bytes": self.extra_bytes,
            "parts": self.by_part(),
            "tensors": [
                {"name": t.name, "part": t.part, "shape": list(t.shape), "dtype": t.dtype, "numel": t.numel,
                 "masked": t.masked, "ratio": t.ratio, "units": t.units, "unit_size": t.unit_size,
                 "aliases": list(t.aliases)}
                for t in self.tensors
            ],
        }

    def write(self, path: str | Path) -> Path:
        from masters.files import atomic_write_json

        return atomic_write_json(Path(path), self.to_dict())
