"""Unit layouts: which elements of a tensor form one masking unit, and in what order.

A masker's ``units(name, shape)`` returns either ``(U, S)`` (U units of S elements, contiguous
in flat order: per tensor, per row, per expert, N:M groups along the input dimension) or a
:class:`UnitLayout`, which describes any unit that a reshape and a permutation of the tensor's
dimensions can express: rows, columns, 2-D blocks, N:M groups along any dimension, per expert of
a 3-D mixture-of-experts weight ``[E, out, in]``...

A layout is read like this: view the tensor (row-major, i.e. flat order) as ``view``, permute its
dimensions by ``perm`` (as ``torch.permute``), then the first ``unit_dims`` permuted dimensions
number the units and the remaining ones number the positions inside a unit, both row-major. At
ratio ``r`` each unit masks its ``floor(r * S)`` lowest-scoring elements; **ties are broken by
position inside the unit**, in that row-major order of the remaining dimensions (for a column of
``[out, in]``: the smaller row index first; for a block: row by row inside the block).

This module is torch-free at import (layouts are plain data; the torch helpers import it lazily).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from masters.errors import MastersError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch


class LayoutError(MastersError):
    """A layout that cannot cover a tensor (the runtime adds the masker and the tensor to it)."""


@dataclass(frozen=True)
class UnitLayout:
    """How a tensor splits into masking units: ``tensor.reshape(view).permute(perm)``, whose first
    ``unit_dims`` dimensions index the unit and whose other dimensions index the position inside it.

    Build one with the constructors (:meth:`contiguous`, :meth:`tensor`, :meth:`rows`,
    :meth:`columns`, :meth:`blocks`, :meth:`groups`, :meth:`experts`); they raise
    :class:`LayoutError` for a shape they cannot split.
    """

    view: tuple[int, ...]
    perm: tuple[int, ...]
    unit_dims: int

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def contiguous(cls, units: int, size: int) -> UnitLayout:
        """``units`` units of ``size`` consecutive elements in flat order (what ``(U, S)`` means)."""
        return cls((int(units), int(size)), (0, 1), 1)

    @classmethod
    def tensor(cls, shape: Sequence[int]) -> UnitLayout:
        """The whole tensor is one unit (ties by flat index)."""
        return cls.contiguous(1, _numel(shape))

    @classmethod
    def experts(cls, shape: Sequence[int]) -> UnitLayout:
        """One unit per slice along the first dimension (per expert of ``[E, out, in]``)."""
        shape = _dims(shape, 1, "an experts layout")
        return cls.contiguous(shape[0], _numel(shape[1:]))

    @classmethod
    def rows(cls, shape: Sequence[int]) -> UnitLayout:
        """One unit per row along the last (input) dimension; ties by column index."""
        shape = _dims(shape, 1, "a row layout")
        return cls.contiguous(_numel(shape[:-1]), shape[-1])

    @classmethod
    def columns(cls, shape: Sequence[int]) -> UnitLayout:
        """One unit per input column of ``[..., out, in]`` (per leading index, e.g. per expert):
        ``S = out``, ties by row index."""
        shape = _dims(shape, 2, "a column layout")
        lead, out, inp = _numel(shape[:-2]), shape[-2], shape[-1]
        return cls((lead, out, inp), (0, 2, 1), 2)

    @classmethod
    def blocks(cls, shape: Sequence[int], block: Sequence[int]) -> UnitLayout:
        """One unit per ``(bh, bw)`` tile of the last two dimensions (per leading index);
        ``S = bh * bw``, ties row by row inside the tile. Both dimensions must divide."""
        shape = _dims(shape, 2, "a block layout")
        if len(block) != 2 or any(int(b) < 1 for b in block):
            raise LayoutError(f"block {tuple(block)} is not a (rows, columns) pair of positive sizes",
                              fix="give blocks a shape such as (4, 4)")
        bh, bw = int(block[0]), int(block[1])
        lead, out, inp = _numel(shape[:-2]), shape[-2], shape[-1]
        if out % bh or inp % bw:
            raise LayoutError(f"shape {tuple(shape)} does not divide into ({bh}, {bw}) blocks",
                              fix=f"choose a block whose sides divide ({out}, {inp}), or exclude the tensor")
        return cls((lead, out // bh, bh, inp // bw, bw), (0, 1, 3, 2, 4), 3)

    @classmethod
    def groups(cls, shape: Sequence[int], m: int, dim: int = -1) -> UnitLayout:
        """N:M groups: ``m`` consecutive elements along dimension ``dim`` form a unit (``dim=-1``:
        along the input dimension, contiguous; ``dim=-2``: along the output dimension, strided)."""
        shape = _dims(shape, 1, "an N:M group layout")
        d = dim % len(shape)
        if shape[d] % m:
            raise LayoutError(f"dimension {d} ({shape[d]}) of shape {tuple(shape)} is not a multiple of m={m}",
                              fix=f"choose an m that divides {shape[d]}, or exclude the tensor")
        before, size, after = _numel(shape[:d]), shape[d], _numel(shape[d + 1:])
        # [before, size/m, m, after] -> [before, size/m, after, m]: units (before, group, after), m inside
        return cls((before, size // m, m, after), (0, 1, 3, 2), 3)

    # -- properties -----------------------------------------------------------------------------

    @property
    def numel(self) -> int:
        return _numel(self.view)

    @property
    def permuted(self) -> tuple[int, ...]:
        """The shape after the permutation."""
        return tuple(self.view[p] for p in self.perm)

    @property
    def units(self) -> int:
        return _numel(self.permuted[: self.unit_dims])

    @property
    def size(self) -> int:
        return _numel(self.permuted[self.unit_dims:])

    @property
    def is_contiguous(self) -> bool:
        """True when unit ``u`` is the flat range ``[u * S, (u + 1) * S)`` in order."""
        return self.canonical().perm == tuple(range(len(self.canonical().perm)))

    def problems(self) -> list[str]:
        """What is wrong with this layout as a description (empty when it is well formed)."""
        out = []
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in self.view):
            out.append(f"view {self.view} must hold positive integers")
        if sorted(self.perm) != list(range(len(self.view))):
            out.append(f"perm {self.perm} is not a permutation of the {len(self.view)} view dimensions")
        if not (isinstance(self.unit_dims, int) and 0 <= self.unit_dims <= len(self.view)):
            out.append(f"unit_dims {self.unit_dims} must be between 0 and {len(self.view)}")
        return out

    def canonical(self) -> UnitLayout:
        """The same layout with size-1 dimensions dropped and neighbouring dimensions merged (those
        adjacent both in the view and after the permutation, on the same side of the unit split),
        always with at least one unit dimension and one inside-unit dimension. A contiguous layout
        becomes ``view (U, S), perm (0, 1)``."""
        side = {p: i < self.unit_dims for i, p in enumerate(self.perm)}
        kept = [d for d in range(len(self.view)) if self.view[d] != 1]
        renum = {d: i for i, d in enumerate(kept)}
        groups: list[list[int]] = []  # renumbered view dims, in permuted order
        sides: list[bool] = []
        for p in self.perm:
            if p not in renum:
                continue
            q = renum[p]
            if groups and groups[-1][-1] + 1 == q and sides[-1] == side[p]:
                groups[-1].append(q)
            else:
                groups.append([q])
                sides.append(side[p])
        by_view = sorted(range(len(groups)), key=lambda g: groups[g][0])
        view = [_numel([self.view[kept[q]] for q in groups[g]]) for g in by_view]
        perm = [by_view.index(g) for g in range(len(groups))]
        unit_dims = sum(sides)
        if unit_dims == 0:  # one unit
            view, perm, unit_dims = [1, *view], [0, *(p + 1 for p in perm)], 1
        if unit_dims == len(view):  # units of one element
            view, perm = [*view, 1], [*perm, len(view)]
        return UnitLayout(tuple(view), tuple(perm), unit_dims)

    def describe(self) -> str:
        return f"{self.units} units of {self.size} (view {self.view}, perm {self.perm}, unit_dims {self.unit_dims})"

    # -- torch helpers (the runtime's; imported lazily) -------------------------------------------

    def to_units(self, x: torch.Tensor) -> torch.Tensor:
        """``[U, S]`` in layout order from a tensor in flat order: always a contiguous tensor (a copy
        unless the layout is contiguous), so row-major code and in-place numpy views see layout order."""
        return x.reshape(self.view).permute(self.perm).reshape(self.units, self.size).contiguous()

    def from_units(self, y: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_units`: a flat (1-D) tensor in flat order."""
        inverse = tuple(self.perm.index(i) for i in range(len(self.perm)))
        return y.reshape(self.permuted).permute(inverse).reshape(-1)

    def flat_index(self, j: torch.Tensor) -> torch.Tensor:
        """Flat indices (int64) of layout indices ``j`` (``u * S + position`` in layout order)."""
        import numpy as np
        import torch

        strides = [0] * len(self.view)
        step = 1
        for d in reversed(range(len(self.view))):
            strides[d] = step
            step *= self.view[d]
        if j.device.type == "cpu":
            rest = j.numpy().astype(np.int64, copy=False)
            flat = np.zeros(rest.shape, dtype=np.int64)
            for d in reversed(range(len(self.perm))):
                size, stride = self.view[self.perm[d]], strides[self.perm[d]]
                if d == 0:
                    flat += rest * stride
                else:
                    rest, idx = np.divmod(rest, size)
                    flat += idx * stride
            return torch.from_numpy(flat)
        rest = j.to(torch.int64)
        flat = torch.zeros_like(rest)
        for d in reversed(range(len(self.perm))):
            size, stride = self.view[self.perm[d]], strides[self.perm[d]]
            if d == 0:
                flat += rest * stride
            else:
                flat += (rest % size) * stride
                rest = rest // size
        return flat

    def index_map(self) -> torch.Tensor:
        """``[U, S]`` int64: the flat index of every element, in layout order (for tests and checks)."""
        import torch

        return self.to_units(torch.arange(self.numel))


def resolve_layout(result: Any, *, shape: Sequence[int], masker: str, tensor: str) -> UnitLayout:
    """The canonical :class:`UnitLayout` of what ``units()`` returned, or a MastersError naming the
    masker, the tensor and the fix when the runtime cannot honour it."""
    where = f"masker {masker!r} units({tensor!r}, {tuple(shape)})"
    numel = _numel(shape)
    if isinstance(result, UnitLayout):
        layout = result
    elif isinstance(result, tuple | list) and len(result) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in result):
        units, size = result
        if units < 1 or size < 1 or units * size != numel:
            raise MastersError(
                f"masker {masker!r} split {tensor} {tuple(shape)} ({numel} elements) into {units} x {size} units",
                where=where,
                fix="units() must cover the tensor exactly: return (U, S) with U * S == numel for contiguous "
                    "units, or a masters.api.UnitLayout (rows, columns, blocks, groups) for any other",
            )
        layout = UnitLayout.contiguous(units, size)
    else:
        raise MastersError(
            f"masker {masker!r} returned {type(result).__name__} {result!r:.80} for {tensor} {tuple(shape)}, "
            "which is not a unit layout",
            where=where,
            fix="return (U, S) for contiguous units, or a masters.api.UnitLayout "
                "(UnitLayout.rows / columns / blocks / groups / experts, or UnitLayout(view, perm, unit_dims))",
        )
    problems = layout.problems()
    if not problems and layout.numel != numel:
        problems.append(f"its view {layout.view} holds {layout.numel} elements, the tensor {numel}")
    if problems:
        raise MastersError(
            f"masker {masker!r} gave {tensor} {tuple(shape)} a layout the runtime cannot honour: {'; '.join(problems)}",
            where=where,
            fix="build the layout with a UnitLayout constructor (rows, columns, blocks, groups, experts) from "
                "the shape units() receives, or give view dimensions whose product is the tensor's numel",
        )
    return layout.canonical()


def layout_of(masker: Any, name: str, shape: Sequence[int]) -> UnitLayout:
    """Call ``masker.units(name, shape)`` and resolve it; a :class:`LayoutError` raised inside
    ``units()`` comes back naming the masker and the tensor."""
    masker_name = getattr(getattr(masker, "spec", None), "name", type(masker).__name__)
    try:
        result = masker.units(name, shape)
    except LayoutError as exc:
        raise MastersError(
            f"masker {masker_name!r} cannot split {name} {tuple(shape)}: {exc.message}",
            where=f"masker {masker_name!r} units({name!r}, {tuple(shape)})",
            fix=f"{exc.fix + ', ' if exc.fix else ''}e.g. masker.exclude: [{name!r}]",
        ) from None
    return resolve_layout(result, shape=shape, masker=masker_name, tensor=name)


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


def _dims(shape: Sequence[int], least: int, what: str) -> tuple[int, ...]:
    shape = tuple(int(d) for d in shape)
    if len(shape) < least:
        raise LayoutError(f"{what} needs a tensor of at least {least} dimensions, got shape {shape}",
                          fix="exclude the tensor from this masker's scope")
    return shape
