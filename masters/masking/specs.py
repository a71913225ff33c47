"""Specs of the built-in maskers (torch-free).

Every masker shares the scope fields of :class:`masters.specs.MaskerSpec` (parts, include,
exclude) and the runtime's memory mode. Each spec names its implementation lazily, so listing and
validating maskers never imports torch.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from masters.ratios import Ratio
from masters.specs import MaskerSpec


class MagnitudeMaskerSpec(MaskerSpec):
    """Zero the smallest-magnitude weights of each tensor (the paper's masker; per expert for MoE)."""

    implementation: ClassVar[str] = "masters.masking.maskers:MagnitudeMasker"
    name: Literal["magnitude"] = "magnitude"


class GlobalMaskerSpec(MaskerSpec):
    """One magnitude threshold over every in-scope weight (the paper rejects it: layers vanish)."""

    implementation: ClassVar[str] = "masters.masking.maskers:GlobalMagnitudeMasker"
    name: Literal["global"] = "global"


class RowMaskerSpec(MaskerSpec):
    """Zero the smallest-magnitude weights of each output row (each row realises the ratio)."""

    implementation: ClassVar[str] = "masters.masking.maskers:RowMagnitudeMasker"
    name: Literal["row"] = "row"


class ColumnMaskerSpec(MaskerSpec):
    """Zero the smallest-magnitude weights of each input column (each column realises the ratio).

    A column of ``[out, in]`` is one input feature's weights; each masks ``floor(r * out)`` of its
    ``out`` entries (per expert for 3-D mixture-of-experts weights), ties by row index.
    """

    implementation: ClassVar[str] = "masters.masking.maskers:ColumnMagnitudeMasker"
    name: Literal["column"] = "column"


class NMMaskerSpec(MaskerSpec):
    """N:M masking: in each group of ``m`` consecutive input weights, zero the ``ratio * m`` smallest.

    Levels must be multiples of ``1/m`` and nest by masking fewer per group: with ``m = 4``,
    ratio 0.5 masks 2 of 4 (the hardware 2:4 pattern), 0.25 masks 1 of 4 and 0 restores all
    (a schedule with ``r_max: 0.5, step: 0.25``).
    """

    implementation: ClassVar[str] = "masters.masking.maskers:NMMasker"
    name: Literal["nm"] = "nm"
    m: int = Field(4, ge=2, le=16, description="Group size M (consecutive weights along the input dimension).")


class RandomMaskerSpec(MaskerSpec):
    """Zero a seeded random subset of each tensor: the ablation control for magnitude masking."""

    implementation: ClassVar[str] = "masters.masking.maskers:RandomMasker"
    name: Literal["random"] = "random"
    seed: int = Field(0, ge=0, lt=2**63, description="Seed of the random order; the same seed gives the same masks.")


class WandaMaskerSpec(MaskerSpec):
    """Activation-aware (Wanda): zero the smallest ``|W| * ||X||`` per output row.

    Needs the L2 norm of each input feature over a calibration batch
    (``masters.masking.collect_input_norms``).
    """

    implementation: ClassVar[str] = "masters.masking.maskers:WandaMasker"
    name: Literal["wanda"] = "wanda"


class TemperatureMaskerSpec(MaskerSpec):
    """Not a mask: at level r the *unmasked* teacher's logits are divided by ``temperatures[r]``.

    The temperature-matched control of the evidence study (issue 13): a teacher made softer by
    temperature instead of by masking, each level's temperature chosen so that its mean entropy
    equals the masked teacher's at that level (``masters.engine.temperature_match.match_temperatures``). The
    weights are never touched (a forward hook on the output head), so level 0 is the teacher
    itself; a level with no temperature is refused. The scope fields do not apply.
    """

    implementation: ClassVar[str] = "masters.masking.tempered:TemperatureMasker"
    perturbs: ClassVar[Literal["weights", "logits"]] = "logits"
    name: Literal["temperature"] = "temperature"
    temperatures: dict[Ratio, Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=dict,
        description="Level -> temperature the teacher's logits are divided by at that level (level 0 is always 1; "
        "every other level the schedule reaches needs an entry).",
    )

    @model_validator(mode="after")
    def _level_zero_is_the_teacher(self) -> TemperatureMaskerSpec:
        t0 = self.temperatures.get(Ratio(0))
        if t0 is not None and t0 != 1.0:
            raise ValueError(f"level 0 is the teacher itself (temperature 1), got temperature {t0}")
        return self


BUILTIN_MASKER_SPECS: tuple[type[MaskerSpec], ...] = (
    MagnitudeMaskerSpec,
    GlobalMaskerSpec,
    RowMaskerSpec,
    ColumnMaskerSpec,
    NMMaskerSpec,
    RandomMaskerSpec,
    WandaMaskerSpec,
    TemperatureMaskerSpec,
)
