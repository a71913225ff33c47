"""Unit layouts (rows, columns, blocks, N:M groups) and the masker conformance kit.

The kit runs over every registered masker; plugin-style maskers defined here check that a layout a
third party declares is masked exactly, and that a layout the runtime cannot honour is refused.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pytest
import torch
from pydantic import Field

from masters.errors import MastersError
from masters.masking.layout import LayoutError, UnitLayout, layout_of
from masters.masking.maskers import BaseMasker
from masters.masking.runtime import MaskedTeacher
from masters.plugins import get_components
from masters.ratios import Ratio
from masters.specs import MaskerSpec
from masters.testing.maskers import (MASKER_CHECKS, MaskerConformanceError, check_masker, registered_maskers,
                                     run_masker_check)

MODES = ("stored", "indexed", "on_the_fly")


@pytest.mark.parametrize("check", MASKER_CHECKS)
@pytest.mark.parametrize("masker", registered_maskers())
def test_every_registered_masker_passes_the_conformance_kit(masker, check):
    run_masker_check(masker, check)


# -- third-party-style maskers: spec classes defined here, never registered ---------------------


class TransposedColumns(BaseMasker):
    """Columns written by hand as a raw layout (no constructor): view [out, in], dims swapped."""

    def units(self, name, shape):
        return UnitLayout(view=(shape[0], shape[1]), perm=(1, 0), unit_dims=1)


class TupleRows(BaseMasker):
    """The old protocol: a plain (U, S) for contiguous rows."""

    def units(self, name, shape):
        return shape.numel() // shape[-1], shape[-1]


class Blocks(BaseMasker):
    def units(self, name, shape):
        return UnitLayout.blocks(shape, (self.spec.bh, self.spec.bw))


class OutputGroups(BaseMasker):
    """N:M along the output dimension: m consecutive rows of one column form a group."""

    def units(self, name, shape):
        return UnitLayout.groups(shape, 4, dim=-2)

    def check_levels(self, levels):
        if any(r.bp % 2500 for r in levels):
            raise MastersError("levels must be multiples of 1/4", fix="use 0.5 / 0.25")


class Bogus(BaseMasker):
    def units(self, name, shape):
        return self.spec.bogus(shape)


def spec_class(impl: type, name: str, **fields):
    annotations = {"name": Literal[name], **{k: type(v) for k, v in fields.items()}}
    namespace = {"__annotations__": annotations, "name": name, "__module__": __name__,
                 "implementation": f"{__name__}:{impl.__name__}", **{k: Field(v) for k, v in fields.items()}}
    namespace["__annotations__"]["implementation"] = ClassVar[str]
    return type(f"{impl.__name__}Spec", (MaskerSpec,), namespace)


class BogusSpec(MaskerSpec):
    implementation: ClassVar[str] = f"{__name__}:Bogus"
    name: Literal["bogus"] = "bogus"
    bogus: ClassVar = staticmethod(lambda shape: None)


def masks_at(spec, weight, level, memory, levels=("0.5", "0.25")):
    module = torch.nn.Module()
    module.w = torch.nn.Parameter(weight.clone(), requires_grad=False)
    teacher = MaskedTeacher({"w": module.w}, spec.build(), levels, memory=memory, model=module)
    teacher.set_level(level)
    return teacher.effective_weight("w") == 0, teacher


def smallest_per_column(weight, count):
    """Reference: each column's ``count`` smallest |w|, ties by row index (a stable sort)."""
    order = torch.sort(weight.abs().float(), dim=-2, stable=True).indices[..., :count, :]
    expected = torch.zeros(weight.shape, dtype=torch.bool)
    expected.scatter_(-2, order, True)
    return expected


# -- columns ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("memory", MODES)
@pytest.mark.parametrize("shape", [(24, 40), (3, 20, 12)], ids=["2d", "moe"])
def test_column_masker_masks_floor_r_out_smallest_of_each_column(shape, memory, dtype):
    torch.manual_seed(0)
    weight = torch.round(torch.randn(shape) * 4).add(0.125).to(dtype)  # ties, no zeros
    spec = get_components().registry("masker").get("column").spec_cls(memory=memory)
    out = shape[-2]
    for level in ("0.5", "0.25"):
        mask, teacher = masks_at(spec, weight, level, memory)
        count = Ratio.parse(level).count(out)
        assert (mask.sum(dim=-2) == count).all()  # every column of every expert
        assert torch.equal(mask, smallest_per_column(weight, count))
        teacher.restore()
        assert torch.equal(teacher.effective_weight("w").view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                           weight.view(torch.int16 if dtype == torch.bfloat16 else torch.int32))


def test_column_ties_are_broken_by_row_index():
    spec = get_components().registry("masker").get("column").spec_cls()
    mask, _ = masks_at(spec, torch.ones(8, 5), "0.25", "stored")
    assert mask[:2].all() and not mask[2:].any()


@pytest.mark.parametrize("memory", MODES)
def test_a_third_party_column_masker_masks_the_columns_it_declares(memory):
    spec = spec_class(TransposedColumns, "my_columns")(memory=memory)
    check_masker(spec)
    torch.manual_seed(1)
    weight = torch.randn(16, 24)
    mask, _ = masks_at(spec, weight, "0.25", memory)
    assert (mask.sum(dim=0) == 4).all() and torch.equal(mask, smallest_per_column(weight, 4))
    builtin, _ = masks_at(get_components().registry("masker").get("column").spec_cls(), weight, "0.25", memory)
    assert torch.equal(mask, builtin)


def test_plain_tuple_units_still_mean_contiguous_rows():
    spec = spec_class(TupleRows, "tuple_rows")()
    check_masker(spec)
    torch.manual_seed(2)
    weight = torch.randn(12, 16)
    mask, _ = masks_at(spec, weight, "0.25", "indexed")
    assert (mask.sum(dim=1) == 4).all()


# -- blocks and N:M groups along the output dimension ----------------------------------------------


@pytest.mark.parametrize("memory", MODES)
def test_block_layout_masks_each_tile(memory):
    spec = spec_class(Blocks, "blocks", bh=4, bw=8)(memory=memory)
    check_masker(spec, shapes={"a.weight": ((12, 16), False), "b.weight": ((8, 32), True), "c.w": ((2, 8, 16), False)},
                 checks=("per_unit_exact", "layout_exact", "restore_exact"))
    torch.manual_seed(3)
    weight = torch.randn(12, 16)
    mask, _ = masks_at(spec, weight, "0.25", memory)
    tiles = mask.view(3, 4, 2, 8).permute(0, 2, 1, 3).reshape(6, 32)
    assert (tiles.sum(dim=1) == 8).all()
    scores = weight.abs().view(3, 4, 2, 8).permute(0, 2, 1, 3).reshape(6, 32)
    expected = torch.zeros(6, 32, dtype=torch.bool).scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :8], True)
    assert torch.equal(tiles, expected)


def test_nm_groups_along_the_output_dimension():
    spec = spec_class(OutputGroups, "nm_out")()
    check_masker(spec, checks=("per_unit_exact", "layout_exact", "nesting"))
    torch.manual_seed(4)
    weight = torch.randn(16, 6)
    mask, _ = masks_at(spec, weight, "0.5", "stored")
    assert (mask.view(4, 4, 6).sum(dim=1) == 2).all()  # 2 of every 4 consecutive rows, per column


# -- layouts the runtime cannot honour are refused -----------------------------------------------


@pytest.mark.parametrize("bogus, words", [
    (lambda shape: (5, 7), ["5 x 7", "U * S == numel"]),
    (lambda shape: "columns", ["not a unit layout", "UnitLayout"]),
    (lambda shape: UnitLayout(view=(shape[0], shape[1] + 1), perm=(1, 0), unit_dims=1), ["holds", "numel"]),
    (lambda shape: UnitLayout(view=(shape[0], shape[1]), perm=(0, 0), unit_dims=1), ["not a permutation"]),
    (lambda shape: UnitLayout(view=(shape[0], shape[1]), perm=(1, 0), unit_dims=3), ["unit_dims"]),
    (lambda shape: UnitLayout.blocks(shape, (5, 5)), ["does not divide into (5, 5) blocks", "exclude"]),
    (lambda shape: UnitLayout.columns((shape.numel(),)), ["at least 2 dimensions"]),
], ids=["U*S!=numel", "unknown-type", "view-numel", "bad-perm", "unit-dims", "blocks-not-divisible", "too-few-dims"])
def test_a_layout_the_runtime_cannot_honour_is_refused_with_masker_tensor_and_fix(bogus, words):
    spec_cls = type("BogusCase", (BogusSpec,), {"bogus": staticmethod(bogus), "__module__": __name__})
    weight = torch.nn.Parameter(torch.randn(8, 6))
    with pytest.raises(MastersError) as info:
        MaskedTeacher({"layer.weight": weight}, spec_cls().build(), ["0.2"])
    text = str(info.value)
    assert "'bogus'" in text and "layer.weight" in text and info.value.fix, text
    for word in words:
        assert word in text, (word, text)
    assert torch.isfinite(weight).all() and not (weight == 0).any()  # nothing was masked


def test_layout_error_from_units_names_masker_and_tensor():
    class Picky(BaseMasker):
        def units(self, name, shape):
            raise LayoutError("no", fix="do something")

    spec = get_components().registry("masker").get("magnitude").spec_cls()
    with pytest.raises(MastersError, match=r"masker 'magnitude' cannot split t \(4, 4\): no") as info:
        layout_of(Picky(spec), "t", torch.Size([4, 4]))
    assert "do something" in info.value.fix and "exclude" in info.value.fix


# -- the kit catches what it is meant to catch ---------------------------------------------------


def test_the_kit_catches_a_runtime_that_ignores_the_layout(monkeypatch):
    monkeypatch.setattr(MaskedTeacher, "_flat_positions", staticmethod(lambda entry, where: where))
    with pytest.raises(MaskerConformanceError, match=r"\[layout_exact\].*column"):
        run_masker_check("column", "layout_exact")


class Normalised(BaseMasker):
    """Scores relative to whatever it is given: not elementwise, so the stored mode would drift."""

    def scores(self, name, values, *, shape, positions, calibration=None):
        return (values.abs() / values.abs().max()).float()


def test_the_kit_catches_scores_that_depend_on_the_subset():
    spec = spec_class(Normalised, "normalised")()
    with pytest.raises(MaskerConformanceError, match=r"\[scores_consistent\]"):
        check_masker(spec, checks=("scores_consistent",))


# -- the layout arithmetic -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", [
    UnitLayout.columns((6, 10)), UnitLayout.columns((2, 6, 10)), UnitLayout.blocks((6, 10), (3, 5)),
    UnitLayout.groups((8, 6), 4, dim=-2), UnitLayout.groups((3, 8), 4), UnitLayout.experts((3, 4, 5)),
    UnitLayout.tensor((7, 3)), UnitLayout((2, 3, 4), (2, 0, 1), 2),
], ids=repr)
def test_layout_maps_to_and_from_flat_order(layout):
    canonical = layout.canonical()
    index = layout.index_map()
    assert torch.equal(canonical.index_map(), index)  # canonical form: the same units, the same order
    assert sorted(index.reshape(-1).tolist()) == list(range(layout.numel))
    j = torch.arange(layout.numel)
    assert torch.equal(layout.flat_index(j), index.reshape(-1)) and torch.equal(canonical.flat_index(j), index.reshape(-1))
    x = torch.randn(layout.numel)
    assert torch.equal(canonical.from_units(canonical.to_units(x)), x)
    assert canonical.is_contiguous == torch.equal(index.reshape(-1), j)
