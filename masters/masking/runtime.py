"""The masked teacher: rank once at ``r_max``, then move between levels exactly, in either direction.

Every level is a prefix of one ranking (per unit: the ``floor(r * S)`` smallest scores, ties by
position), so masks nest and each unit realises its ratio exactly. Units follow the masker's
layout (:mod:`masters.masking.layout`): scores are computed in flat order, permuted into ``[U, S]``
in layout order for ranking, and masked positions are mapped back to flat indices; contiguous
layouts (per tensor, row, expert, N:M along the input) skip the permutation. Three memory modes:

* ``stored`` (default): weights are zeroed in place. Restoring needs only a bit mask of the
  ``r_max`` set (1/8 byte per parameter) and the masked values in layout order (``r_max`` x bytes
  per weight); which of them are masked at a lower level is recomputed from the stored values with the
  per-unit thresholds, so no int64 order is ever kept. The forward pass costs nothing extra.
* ``indexed``: weights are zeroed in place as in ``stored``, but the masked values are kept
  ordered by the level that masks them, with their int32 positions (``r_max`` x (bytes per weight
  + 4)). Each level's masked set is then a prefix, and a switch rewrites only the weights whose
  state changes: a staircase step touches ``step / r_max`` of the stored set, with no decoding and
  no re-scoring. For schedules that switch often, or level sweeps at evaluation.
* ``on_the_fly``: weights are never modified; forward pre-hooks hand each module a masked
  temporary of its weight and put the original back afterwards. No copy is kept, but every forward
  (every generated token) re-scores the weights.

The default is ``stored`` because teachers run thousands of forwards (bank generation, one per
training step) and switch level a handful of times, so the smallest memory wins; ``indexed`` buys
the fastest switches with more memory. See ``benchmarks/results/masking.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from masters.errors import MastersError
from masters.masking import bits
from masters.masking.layout import UnitLayout, layout_of
from masters.masking.report import SparsityReport, TensorSparsity
from masters.masking.selection import NOTHING, global_thresholds, group_rank, split_ties, threshold_mask, unit_thresholds
from masters.ratios import ZERO, Ratio

MemoryMode = Literal["stored", "indexed", "on_the_fly"]
MEMORY_MODES: tuple[str, ...] = ("stored", "indexed", "on_the_fly")
GROUP_MAX = 16  # units this small are ranked directly at each switch instead of keeping thresholds


@dataclass
class _Entry:
    """One in-scope tensor (one storage: tied names are aliases) and everything needed to mask it."""

    name: str
    part: str
    param: torch.Tensor
    aliases: list[str] = field(default_factory=list)
    units: int = 1
    size: int = 0
    layout: UnitLayout | None = None  # canonical; None for the global scope (one unit, flat order)
    strided: bool = False  # the layout's units are not flat ranges: rank in layout order, map back
    per_unit: int = 0  # masked per unit at r_max (global scope: the tensor's own count)
    thresholds: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    group_counts: dict[int, int] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)  # masked elements at each level
    packed: torch.Tensor | None = None
    values: torch.Tensor | None = None
    order: torch.Tensor | None = None  # indexed mode: flat positions of ``values``, grouped by level
    calibration: torch.Tensor | None = None
    owners: list[tuple[torch.nn.Module, str]] = field(default_factory=list)

    @property
    def shape(self) -> torch.Size:
        return self.param.shape

    @property
    def numel(self) -> int:
        return self.param.numel()

    @property
    def grouped(self) -> bool:
        return self.size <= GROUP_MAX

    def extra_bytes(self) -> int:
        total = sum(k.nbytes + t.nbytes for k, t in self.thresholds.values())
        for tensor in (self.packed, self.values, self.order):
            total += tensor.nbytes if tensor is not None else 0
        return total


class MaskedTeacher:
    """A teacher whose in-scope weights can be masked at any planned level and restored exactly.

    Build it with :meth:`from_model` (or :func:`masters.masking.mask_teacher`), then call
    :meth:`set_level` whenever the schedule moves: ``teacher.set_level(Ratio(1500))``. Level 0
    gives back the original weights bit for bit.
    """

    def __init__(
        self,
        tensors: Mapping[str, tuple[str, torch.Tensor] | torch.Tensor],
        masker: Any,
        levels: Iterable[Ratio | float | str],
        *,
        memory: MemoryMode = "stored",
        calibration: Mapping[str, torch.Tensor] | None = None,
        model: torch.nn.Module | None = None,
    ):
        if memory not in MEMORY_MODES:
            raise MastersError(f"unknown memory mode {memory!r}", where="masker.memory",
                               fix=f"use one of {', '.join(MEMORY_MODES)}")
        if memory == "on_the_fly" and model is None:
            raise MastersError("the on_the_fly memory mode needs the model to hook its forward",
                               where="MaskedTeacher(model=...)", fix="pass model=, or use memory='stored'")
        self.masker = masker
        self.memory: MemoryMode = memory
        self.levels: tuple[Ratio, ...] = _plan_levels(levels)
        self.r_max = self.levels[0]
        masker.check_levels(self.levels)
        self._level = ZERO
        self._entries = _dedupe(tensors)
        self._attach_calibration(calibration or {})
        self._hooks: list[Any] = []
        with torch.no_grad():
            if getattr(masker, "scope", "unit") == "global":
                self._rank_global()
            else:
                for entry in self._entries:
                    self._rank_units(entry)
        if memory == "on_the_fly":
            assert model is not None
            self._install_hooks(model)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        masker: Any,
        levels: Iterable[Ratio | float | str],
        *,
        maskable: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        calibration: Mapping[str, torch.Tensor] | None = None,
        memory: MemoryMode | None = None,
    ) -> MaskedTeacher:
        """Mask a model (DDP/accelerate wrappers are unwrapped) with a masker spec or masker.

        ``maskable`` is ``{part: {name: Parameter}}`` as ``VLMAdapter.maskable_parameters()``
        returns it; when omitted, :func:`masters.masking.scope.find_maskable` classifies the
        model's weights by module name. ``memory`` defaults to the spec's ``memory`` field.
        """
        from masters.masking.scope import find_maskable, select_scope, unwrap_model

        model = unwrap_model(model)
        impl = masker.build() if hasattr(masker, "build") else masker
        spec = impl.spec
        if getattr(spec, "perturbs", "weights") == "logits":
            return impl.teacher(model, levels)  # e.g. the temperature control: its own runtime, no weight touched
        selected = select_scope(maskable if maskable is not None else find_maskable(model), spec)
        mode = memory or getattr(spec, "memory", "stored")
        return cls(selected, impl, levels, memory=mode, calibration=calibration, model=model)

    def _attach_calibration(self, calibration: Mapping[str, torch.Tensor]) -> None:
        if not getattr(self.masker, "needs_calibration", False):
            return
        for entry in self._entries:
            norms = next((calibration[n] for n in [entry.name, *entry.aliases] if n in calibration), None)
            if norms is None:
                raise MastersError(
                    f"masker {self.masker.spec.name!r} needs input norms for {entry.name}",
                    where="calibration",
                    fix="collect them with masters.masking.collect_input_norms(model, tensors, run) on a calibration batch",
                )
            entry.calibration = norms

    def _scores(self, entry: _Entry, values: torch.Tensor, positions: Any) -> torch.Tensor:
        scores = self.masker.scores(entry.name, values, shape=entry.shape, positions=positions,
                                    calibration=entry.calibration)
        if scores.shape != values.shape:
            raise MastersError(
                f"masker {self.masker.spec.name!r} scored {entry.name} values of shape {tuple(values.shape)} "
                f"with shape {tuple(scores.shape)}", where=f"masker {self.masker.spec.name!r} scores()",
                fix="scores() must return one float32 score per value, in the shape of `values`")
        return scores

    def _unit_scores(self, entry: _Entry, weight: torch.Tensor) -> torch.Tensor:
        """Scores of the whole tensor as ``[U, S]`` in layout order (scored in flat order, then permuted)."""
        if not entry.strided:
            return self._scores(entry, weight.reshape(entry.units, entry.size), lambda: None)
        assert entry.layout is not None
        return entry.layout.to_units(self._scores(entry, weight, lambda: None))

    def _nonzero_levels(self) -> list[Ratio]:
        return [r for r in self.levels if r.bp > 0]

    def _rank_units(self, entry: _Entry) -> None:
        layout = layout_of(self.masker, entry.name, entry.shape)
        units, size = layout.units, layout.size
        entry.layout, entry.units, entry.size, entry.strided = layout, units, size, not layout.is_contiguous
        scores = self._unit_scores(entry, entry.param.detach())
        levels = self._nonzero_levels()
        counts = [r.count(size) for r in levels]
        entry.per_unit = counts[0] if counts else 0
        entry.counts = {r.bp: c * units for r, c in zip(levels, counts)}
        if entry.grouped:
            entry.group_counts = {r.bp: c for r, c in zip(levels, counts)}
            mask = group_rank(scores) < entry.per_unit if counts else None
        elif units == 1:  # one big unit: a histogram select beats a single-threaded topk
            thresholds = [(torch.tensor([k], dtype=torch.float32, device=scores.device),
                           torch.tensor([t], dtype=torch.int32, device=scores.device))
                          for k, t in global_thresholds([lambda: scores], counts)]
            entry.thresholds = {r.bp: kt for r, kt in zip(levels, thresholds)}
            mask = threshold_mask(scores, *thresholds[0]) if counts else None
        else:
            thresholds = unit_thresholds(scores, counts)
            entry.thresholds = {r.bp: (k, t) for r, (k, t) in zip(levels, thresholds)}
            mask = threshold_mask(scores, *thresholds[0]) if counts else None
        del scores
        self._keep(entry, mask)

    def _rank_global(self) -> None:
        levels = self._nonzero_levels()
        for entry in self._entries:
            entry.units, entry.size = 1, entry.numel
        fns = [lambda e=e: self._scores(e, e.param.detach().reshape(1, -1), lambda: None) for e in self._entries]
        total = sum(e.numel for e in self._entries)
        found = global_thresholds(fns, [r.count(total) for r in levels])
        below: list[list[int]] = []
        equal: list[list[int]] = []
        for fn in fns:  # per tensor: how many are below / at each threshold
            s = fn()
            below.append([int((s < k).sum()) for k, _ in found])
            equal.append([int((s == k).sum()) for k, _ in found])
        for li, (r, (k, t)) in enumerate(zip(levels, found)):
            ties = split_ties([eq[li] for eq in equal], t)
            for entry, lt, tie in zip(self._entries, below, ties):
                kt = torch.tensor([k], dtype=torch.float32, device=entry.param.device)
                entry.thresholds[r.bp] = (kt, torch.tensor([tie], dtype=torch.int32, device=entry.param.device))
                entry.counts[r.bp] = lt[li] + tie
        for entry, fn in zip(self._entries, fns):
            entry.per_unit = entry.counts[levels[0].bp] if levels else 0
            mask = threshold_mask(fn(), *entry.thresholds[levels[0].bp]) if levels else None
            self._keep(entry, mask)

    def _keep(self, entry: _Entry, mask: torch.Tensor | None) -> None:
        """Keep what restoring needs: stored mode the bit mask and the values it covers (layout order,
        which is flat order for contiguous units); indexed mode the values and their flat positions,
        ordered by level; on-the-fly nothing. ``mask`` is ``[U, S]`` in layout order."""
        if self.memory == "on_the_fly":
            return
        if not entry.param.is_contiguous():
            raise MastersError(f"{entry.name} is not contiguous", where="MaskedTeacher",
                               fix="call model.contiguous() / load the checkpoint normally before masking")
        flat_mask = mask.reshape(-1) if mask is not None else torch.zeros(entry.numel, dtype=torch.bool, device=entry.param.device)
        where = self._flat_positions(entry, bits.mask_positions(flat_mask)).to(entry.param.device)
        entry.values = entry.param.detach().reshape(-1)[where]  # a copy, in layout order
        if self.memory == "stored":
            entry.packed = bits.pack(flat_mask)
            return
        # indexed: per unit, sort the stored values by how many levels mask them (stable: layout order
        # inside a level), so every level's masked set is a prefix of its unit's row.
        view = entry.values.view(entry.units, -1)
        scores = self._scores(entry, view, lambda: where.view(view.shape))
        depth = torch.zeros(view.shape, dtype=torch.int8, device=view.device)
        for level in self._nonzero_levels()[1:]:
            depth += self._level_mask(entry, scores, level)
        del scores
        if depth.device.type == "cpu":  # numpy's stable argsort of int8 is a radix sort: 5x torch's here
            order = torch.from_numpy(np.argsort(np.negative(depth.numpy()), axis=1, kind="stable"))
        else:
            order = torch.argsort(depth, dim=1, descending=True, stable=True)
        index_dtype = torch.int32 if entry.numel < 2**31 else torch.int64  # half the bytes of int64
        entry.order = where.view(view.shape).gather(1, order).reshape(-1).to(index_dtype)
        entry.values = view.gather(1, order).reshape(-1)

    def _install_hooks(self, model: torch.nn.Module) -> None:
        from masters.masking.scope import unwrap_model

        by_id = {id(e.param): e for e in self._entries}
        owned: dict[int, tuple[torch.nn.Module, list[tuple[str, _Entry]]]] = {}
        for module in unwrap_model(model).modules():
            for attr, param in module._parameters.items():
                entry = by_id.get(id(param)) if param is not None else None
                if entry is not None:
                    entry.owners.append((module, attr))
                    owned.setdefault(id(module), (module, []))[1].append((attr, entry))
        missing = [e.name for e in self._entries if not e.owners]
        if missing:
            raise MastersError(f"{len(missing)} masked tensors are not parameters of the model (first: {missing[0]})",
                               where="MaskedTeacher(model=...)", fix="pass the model the tensors came from")
        for module, attrs in owned.values():
            self._hooks.append(module.register_forward_pre_hook(self._pre_hook(attrs)))
            self._hooks.append(module.register_forward_hook(self._post_hook(attrs), always_call=True))

    def _pre_hook(self, attrs: list[tuple[str, _Entry]]) -> Any:
        def hook(module: torch.nn.Module, args: Any) -> None:
            if self._level.bp == 0:
                return
            with torch.no_grad():
                for attr, entry in attrs:
                    module._parameters[attr] = self._masked_copy(entry, self._level)  # type: ignore[assignment]
        return hook

    def _post_hook(self, attrs: list[tuple[str, _Entry]]) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            for attr, entry in attrs:
                module._parameters[attr] = entry.param  # type: ignore[assignment]
        return hook

    # -- moving between levels ------------------------------------------------------------------

    @property
    def level(self) -> Ratio:
        """The ratio in force now (``Ratio(0)``: the original teacher)."""
        return self._level

    def set_level(self, ratio: Ratio | float | str) -> None:
        """Move to a planned level, up or down; a no-op when already there."""
        target = planned_level(ratio, self.levels, where="MaskedTeacher.set_level")
        if target == self._level:
            return
        if self.memory == "stored":
            with torch.no_grad():
                for entry in self._entries:
                    self._apply_stored(entry, target)
        elif self.memory == "indexed":
            with torch.no_grad():
                for entry in self._entries:
                    self._apply_indexed(entry, self._level, target)
        self._level = target

    def restore(self) -> None:
        """Back to the original weights, bit for bit."""
        self.set_level(ZERO)

    def close(self) -> None:
        """Restore the weights and remove any forward hooks; the teacher is a plain model again."""
        self.restore()
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def _level_mask(self, entry: _Entry, scores: torch.Tensor, level: Ratio) -> torch.Tensor:
        if entry.grouped:
            return group_rank(scores) < entry.group_counts[level.bp]
        k, t = entry.thresholds[level.bp]
        return threshold_mask(scores, k, t)

    def _apply_stored(self, entry: _Entry, level: Ratio) -> None:
        """Stored mode: decode the ``r_max`` positions, recompute which stored values the level masks."""
        assert entry.packed is not None and entry.values is not None
        if entry.values.numel() == 0:
            return
        flat = entry.param.detach().view(-1)
        where = self._flat_positions(entry, bits.positions(entry.packed, entry.numel))
        if level.bp == 0:
            _scatter(flat, where, entry.values)
        elif level == self.r_max:
            _scatter(flat, where, None)
        else:
            values = entry.values.view(entry.units, -1)
            scores = self._scores(entry, values, lambda: where.to(values.device).view(values.shape))
            _scatter(flat, where, bits.zero_where(values, self._level_mask(entry, scores, level)).view(-1))

    def _apply_indexed(self, entry: _Entry, source: Ratio, target: Ratio) -> None:
        """Indexed mode: values are ordered by the level that masks them, so a switch is one slice.

        Per unit, the first ``count(r)`` stored values are exactly those masked at ``r``; moving
        between two levels rewrites the slice between their counts and nothing else.
        """
        assert entry.order is not None and entry.values is not None
        if entry.values.numel() == 0:
            return
        lo, hi = sorted((self._unit_count(entry, source), self._unit_count(entry, target)))
        if lo == hi:
            return
        where = entry.order.view(entry.units, -1)[:, lo:hi].reshape(-1)
        values = entry.values.view(entry.units, -1)[:, lo:hi].reshape(-1) if target < source else None
        _scatter(entry.param.detach().view(-1), where, values)

    def _unit_count(self, entry: _Entry, level: Ratio) -> int:
        """Elements masked per unit at ``level`` (0 at level 0)."""
        return entry.counts.get(level.bp, 0) // entry.units

    def _masked_copy(self, entry: _Entry, level: Ratio) -> torch.Tensor:
        weight = entry.param.detach()
        mask = self._level_mask(entry, self._unit_scores(entry, weight), level)
        if entry.strided:
            assert entry.layout is not None
            mask = entry.layout.from_units(mask)
        return weight.masked_fill(mask.view(entry.shape), 0)

    @staticmethod
    def _flat_positions(entry: _Entry, where: torch.Tensor) -> torch.Tensor:
        """Flat indices of positions given in layout order (the identity for contiguous units)."""
        if not entry.strided:
            return where
        assert entry.layout is not None
        return entry.layout.flat_index(where)

    # -- inspection -----------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    def effective_weight(self, name: str) -> torch.Tensor:
        """The weight the forward pass sees at the current level (on-the-fly: a masked temporary)."""
        entry = next((e for e in self._entries if name in (e.name, *e.aliases)), None)
        if entry is None:
            raise MastersError(f"{name!r} is not masked by this teacher", where="effective_weight",
                               fix=f"use one of {', '.join(self.names()[:5])}...")
        if self.memory != "on_the_fly" or self._level.bp == 0:
            return entry.param.detach()
        with torch.no_grad():
            return self._masked_copy(entry, self._level)

    def extra_bytes(self) -> int:
        """Bytes held to restore (stored: bit masks, masked values, thresholds; indexed: values and positions)."""
        return sum(e.extra_bytes() for e in self._entries)

    def report(self, level: Ratio | float | str | None = None) -> SparsityReport:
        """Realised sparsity per tensor and overall at ``level`` (default: the current one)."""
        target = self._level if level is None else _as_ratio(level, where="report")
        rows = [
            TensorSparsity(
                name=e.name, part=e.part, shape=tuple(e.shape), dtype=str(e.param.dtype).removeprefix("torch."),
                numel=e.numel, masked=e.counts.get(target.bp, 0), units=e.units, unit_size=e.size,
                aliases=tuple(e.aliases),
            )
            for e in self._entries
        ]
        return SparsityReport(level=target, masker=self.masker.spec.name, memory=self.memory,
                              tensors=rows, extra_bytes=self.extra_bytes())


PARALLEL_SCATTER_MIN = 1 << 18  # below this a scatter is faster on one thread than split


def _scatter(flat: torch.Tensor, where: torch.Tensor, values: torch.Tensor | None) -> None:
    """``flat[where] = values`` (or 0 when ``values`` is None), in place.

    On CPU numpy's fancy assignment is about twice as fast as ``index_copy_`` (measured on 3M
    indices); bf16 and other dtypes numpy lacks are written through a same-width integer view.
    Large scatters are split across torch's intra-op threads: numpy releases the GIL while it
    assigns, and the positions are distinct, so the pieces never write the same element.
    """
    if flat.device.type != "cpu":
        where = where.to(flat.device, torch.int64)
        if values is None:
            flat.index_fill_(0, where, 0)
        else:
            flat.index_copy_(0, where, values)
        return
    target = bits.as_numpy(flat)
    index = where.numpy()
    source = None if values is None else bits.as_numpy(values)
    pieces = min(torch.get_num_threads(), index.size // PARALLEL_SCATTER_MIN)
    if pieces <= 1:
        _assign(target, index, source)
        return
    bounds = np.linspace(0, index.size, pieces + 1).astype(np.int64)
    pool = _scatter_pool(pieces)
    futures = [pool.submit(_assign, target, index[a:b], None if source is None else source[a:b])
               for a, b in zip(bounds[:-1], bounds[1:])]
    for future in futures:
        future.result()


@functools.lru_cache(maxsize=None)
def _scatter_pool(workers: int) -> ThreadPoolExecutor:
    """One long-lived pool per width: a switch issues many scatters, and threads are not free."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="masters-scatter")


def _assign(target: np.ndarray, index: np.ndarray, source: np.ndarray | None) -> None:
    if source is None:
        target[index] = 0  # +0.0 is all-zero bits in every float format
    else:
        target[index] = source


def planned_level(value: Any, levels: Sequence[Ratio], *, where: str) -> Ratio:
    """``value`` as a Ratio, refused unless it is one of the teacher's planned ``levels``."""
    target = _as_ratio(value, where="set_level")
    if target not in levels:
        raise MastersError(
            f"level {target} was not planned for this teacher", where=where,
            fix=f"use one of {', '.join(str(r) for r in levels)} (levels are fixed when the teacher is built)",
        )
    return target


def _as_ratio(value: Any, *, where: str) -> Ratio:
    try:
        ratio = Ratio.parse(value)
    except ValueError as exc:
        raise MastersError(str(exc), where=where, fix="give a ratio such as 0.2, '20%' or '2000bp'") from None
    if ratio.bp >= 10_000:
        raise MastersError(f"ratio {ratio} masks every weight", where=where, fix="use a ratio in [0, 1)")
    return ratio


def _plan_levels(levels: Iterable[Any]) -> tuple[Ratio, ...]:
    parsed = {_as_ratio(r, where="levels") for r in levels}
    parsed.add(ZERO)
    return tuple(sorted(parsed, reverse=True))


def _dedupe(tensors: Mapping[str, Any]) -> list[_Entry]:
    """One entry per storage: tied weights are masked once, their other names kept as aliases."""
    entries: list[_Entry] = []
    by_key: dict[tuple[int, int, tuple[int, ...]], _Entry] = {}
    for name, item in tensors.items():
        part, tensor = item if isinstance(item, tuple) else ("language", item)
        key = (tensor.data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in by_key and tensor.numel():
            by_key[key].aliases.append(name)
            continue
        entry = _Entry(name=name, part=part, param=tensor)
        by_key[key] = entry
        entries.append(entry)
    return entries


def mask_teacher(model: torch.nn.Module, masker: Any, levels: Sequence[Any], **options: Any) -> MaskedTeacher:
    """Shorthand for :meth:`MaskedTeacher.from_model`."""
    return MaskedTeacher.from_model(model, masker, levels, **options)
