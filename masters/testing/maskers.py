"""Conformance checks every masker must pass, on small random tensors.

One call runs them all (``check_masker("my_masker")``, or a spec instance for a masker that is not
registered); ``run_masker_check(name, check)`` runs one, for a pytest parametrisation over
``registered_maskers()`` x ``MASKER_CHECKS``. Each check builds a
:class:`masters.masking.MaskedTeacher` over a handful of tensors: non-square 2-D weights, one
full of ties, and a 3-D mixture-of-experts weight ``[E, out, in]`` where the masker accepts it.
Nothing here is specific to a built-in: what a masker masks is derived from its own
``units()`` layout and ``scores()``, so a plugin masker is checked against its own declaration.

Checks (``MASKER_CHECKS``):

* ``protocol``: the attributes and methods of :class:`masters.interfaces.Masker`; ``units()`` gives
  a layout the runtime accepts; ``scores()`` is float32, shaped like its input, NaN-free and
  deterministic.
* ``scores_consistent``: scores of a subset of elements (with their positions) equal the whole
  tensor's scores at those positions: the stored memory mode re-scores subsets.
* ``per_unit_exact``: at every level each unit masks exactly ``floor(r * S)`` elements (global
  scope: the whole scope ``floor(r * numel)``), and the sparsity report says so.
* ``layout_exact``: in every memory mode, fp32 and bf16, going down the levels and back up, the
  masked elements are exactly the ``floor(r * S)`` lowest scores of each unit of the layout, ties
  by position inside the unit.
* ``nesting``: every element masked at a level is masked at every larger level.
* ``restore_exact``: after moving up and down, ratio 0 gives back every weight bit for bit, in
  every memory mode, fp32 and bf16.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from masters.testing.adapters import ConformanceError

MASKER_CHECKS: tuple[str, ...] = (
    "protocol", "scores_consistent", "per_unit_exact", "layout_exact", "nesting", "restore_exact",
)
MEMORY_MODES: tuple[str, ...] = ("stored", "indexed", "on_the_fly")
DTYPES: tuple[str, ...] = ("float32", "bfloat16")
# Level sets tried in order; the first the masker's check_levels accepts is used (N:M needs 1/M steps).
LEVEL_SETS: tuple[tuple[int, ...], ...] = (
    (3000, 2000, 1500, 500, 0), (5000, 2500, 0), (7500, 5000, 2500, 0), (5000, 0),
)
# name -> (shape, ties): non-square 2-D weights (input dims multiples of 16, so N:M up to m=16 fits),
# one whose values repeat (ties at every threshold), and a 3-D MoE weight [E, out, in].
SHAPES: dict[str, tuple[tuple[int, ...], bool]] = {
    "wide.weight": ((24, 48), False),
    "tall.weight": ((40, 16), False),
    "ties.weight": ((20, 32), True),
    "experts.gate_up_proj": ((3, 12, 32), False),
}


class MaskerConformanceError(ConformanceError):
    """A masker broke one of the conformance rules."""


def _require(condition: bool, check: str, message: str) -> None:
    if not condition:
        raise MaskerConformanceError(f"[{check}] {message}")


def registered_maskers() -> list[str]:
    """Names of every registered weight masker (built-ins and installed plugins); a masker that
    perturbs the logits instead (``perturbs = "logits"``) masks no weight and has its own tests."""
    from masters.plugins import get_components

    registry = get_components().registry("masker")
    return [n for n in registry.names() if getattr(registry.get(n).spec_cls, "perturbs", "weights") == "weights"]


def masker_spec(masker: Any) -> Any:
    """A masker spec from a registered name, a ``{"name": ..., field: ...}`` mapping, a spec class or
    a spec instance (an unregistered, third-party spec works too)."""
    from masters.specs import MaskerSpec

    if isinstance(masker, MaskerSpec):
        return masker
    if isinstance(masker, type) and issubclass(masker, MaskerSpec):
        return masker()
    if isinstance(masker, str):
        masker = {"name": masker}
    if isinstance(masker, Mapping):
        from masters.plugins import get_components

        fields = dict(masker)
        spec_cls = get_components().registry("masker").get(fields.pop("name")).spec_cls
        return spec_cls(**fields)
    raise TypeError(f"expected a masker name, mapping, spec class or spec, got {masker!r}")


# ---------------------------------------------------------------------------------------------
# The fixture: small tensors in a module (on_the_fly hooks need owners), levels, calibration
# ---------------------------------------------------------------------------------------------


class _Case:
    """One masker under test: its spec, a built implementation, its levels and accepted tensors."""

    def __init__(self, masker: Any, *, levels: Sequence[Any] | None = None,
                 shapes: Mapping[str, tuple[tuple[int, ...], bool]] | None = None, seed: int = 0):
        import torch

        from masters.errors import MastersError
        from masters.masking.layout import layout_of
        from masters.ratios import Ratio

        self.spec = masker_spec(masker)
        self.label = f"masker {self.spec.name!r}"
        self.impl = self.spec.build()
        self.seed = seed
        self.shapes = dict(shapes or SHAPES)
        if levels is not None:
            self.levels = sorted({Ratio.parse(r) for r in levels} | {Ratio(0)}, reverse=True)
            self.impl.check_levels(self.levels)
        else:
            self.levels = self._pick_levels()
        self.global_scope = getattr(self.impl, "scope", "unit") == "global"
        self.layouts: dict[str, Any] = {}
        if not self.global_scope:
            for name, (shape, _) in self.shapes.items():
                try:  # a masker may refuse a tensor it cannot split (a 3-D one, a dimension m does not divide)
                    self.layouts[name] = layout_of(self.impl, name, torch.Size(shape))  # as the runtime passes it
                except MastersError:
                    continue
            self.shapes = {n: v for n, v in self.shapes.items() if n in self.layouts}
            _require(any(len(s) == 2 for s, _ in self.shapes.values()), "protocol",
                     f"{self.label} refuses every 2-D test tensor ({', '.join(f'{n} {s}' for n, (s, _) in SHAPES.items())})")

    def _pick_levels(self) -> list[Any]:
        from masters.errors import MastersError
        from masters.ratios import Ratio

        for bps in LEVEL_SETS:
            levels = [Ratio(bp) for bp in bps]
            try:
                self.impl.check_levels(levels)
            except MastersError:
                continue
            return levels
        raise MaskerConformanceError(f"[protocol] {self.label} accepts none of the level sets "
                                     f"{[[str(Ratio(b)) for b in s] for s in LEVEL_SETS]}: pass levels=...")

    def tensors(self, dtype: str = "float32") -> Any:
        """A module holding fresh copies of the test tensors (no exact zeros: a zero means masked)."""
        import torch

        g = torch.Generator().manual_seed(self.seed)
        module = torch.nn.Module()
        for name, (shape, ties) in self.shapes.items():
            w = torch.randn(shape, generator=g)
            if ties:  # few distinct magnitudes: every threshold falls among ties
                w = torch.round(w * 2) / 2
            w = torch.where(w == 0, torch.full_like(w, 0.25), w).to(getattr(torch, dtype))
            module.register_parameter(name.replace(".", "_"), torch.nn.Parameter(w, requires_grad=False))
        return module

    def params(self, module: Any) -> dict[str, Any]:
        return {name: getattr(module, name.replace(".", "_")) for name in self.shapes}

    def calibration(self) -> dict[str, Any] | None:
        import torch

        if not getattr(self.impl, "needs_calibration", False):
            return None
        g = torch.Generator().manual_seed(self.seed + 1)
        out = {}
        for name, (shape, _) in self.shapes.items():
            norms = torch.rand(shape[-1], generator=g) + 0.5
            out[name] = norms if len(shape) == 2 else torch.rand(shape[0], shape[-1], generator=g) + 0.5
        return out

    def teacher(self, module: Any, memory: str) -> Any:
        from masters.masking.runtime import MaskedTeacher

        tensors = {n: ("language", p) for n, p in self.params(module).items()}
        return MaskedTeacher(tensors, self.impl, self.levels, memory=memory, calibration=self.calibration(), model=module)

    def whole_scores(self, name: str, param: Any) -> Any:
        """Scores of the whole tensor in flat order (1-D), called exactly as the runtime calls them."""
        values = param.detach()
        layout = self.layouts.get(name)
        if layout is None or layout.is_contiguous:
            units, size = (layout.units, layout.size) if layout is not None else (1, values.numel())
            values = values.reshape(units, size)
        calibration = (self.calibration() or {}).get(name)
        return self.impl.scores(name, values, shape=param.shape, positions=lambda: None,
                                calibration=calibration).reshape(-1)

    def expected_masks(self, module: Any, level: Any) -> dict[str, Any]:
        """What the masker declares: per unit the floor(r * S) lowest scores, ties by position."""
        import torch

        params = self.params(module)
        if self.global_scope:
            scores = torch.cat([self.whole_scores(n, p).float() for n, p in params.items()])
            order = torch.sort(scores, stable=True).indices[: level.count(scores.numel())]
            flat = torch.zeros(scores.numel(), dtype=torch.bool)
            flat[order] = True
            out, start = {}, 0
            for n, p in params.items():
                out[n] = flat[start:start + p.numel()].view(p.shape)
                start += p.numel()
            return out
        out = {}
        for n, p in params.items():
            layout = self.layouts[n]
            index = layout.index_map()  # [U, S] flat index of each element, in layout order
            unit_scores = self.whole_scores(n, p).float()[index]
            order = torch.sort(unit_scores, dim=1, stable=True).indices[:, : level.count(layout.size)]
            mask = torch.zeros(p.numel(), dtype=torch.bool)
            mask[index.gather(1, order).reshape(-1)] = True
            out[n] = mask.view(p.shape)
        return out


def _masked(teacher: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    return {n: teacher.effective_weight(n) == 0 for n in params}


def _walk(levels: Sequence[Any]) -> list[Any]:
    """Down the staircase, back up, and a few jumps: every switch direction."""
    return [*levels, *reversed(levels), levels[0], levels[-1], *levels[1:2]]


def _where(case: _Case, name: str, dtype: str, memory: str, level: Any) -> str:
    return f"{case.label}: {name} {case.shapes[name][0]} {dtype} {memory} at level {level}"


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------


def check_protocol(case: _Case) -> None:
    import torch

    impl = case.impl
    for attr in ("spec", "scope", "needs_calibration"):
        _require(hasattr(impl, attr), "protocol", f"{case.label} has no attribute {attr!r}")
    for method in ("units", "scores", "check_levels"):
        _require(callable(getattr(impl, method, None)), "protocol", f"{case.label} has no method {method}()")
    _require(impl.scope in ("unit", "global"), "protocol", f"{case.label} scope {impl.scope!r} is not 'unit' or 'global'")
    module = case.tensors()
    for name, p in case.params(module).items():
        first, second = case.whole_scores(name, p), case.whole_scores(name, p)
        _require(first.dtype == torch.float32, "protocol", f"{case.label} scores {name} as {first.dtype}, not float32")
        _require(first.numel() == p.numel(), "protocol", f"{case.label} gives {first.numel()} scores for {p.numel()} values")
        _require(not bool(torch.isnan(first).any()), "protocol", f"{case.label} gives NaN scores for {name}")
        _require(torch.equal(first, second), "protocol", f"{case.label} scores {name} differently on a second call")


def check_scores_consistent(case: _Case) -> None:
    import torch

    module = case.tensors("bfloat16")
    g = torch.Generator().manual_seed(case.seed + 2)
    for name, p in case.params(module).items():
        whole = case.whole_scores(name, p)
        layout = case.layouts.get(name)
        index = layout.index_map() if layout is not None else torch.arange(p.numel()).view(1, -1)
        # a subset per unit, in the unit's order, as the stored mode passes it
        take = max(1, index.shape[1] // 3)
        pick = torch.sort(torch.rand(index.shape, generator=g).argsort(dim=1)[:, :take], dim=1).values
        where = index.gather(1, pick)
        values = p.detach().reshape(-1)[where]
        calibration = (case.calibration() or {}).get(name)
        subset = case.impl.scores(name, values, shape=p.shape, positions=lambda w=where: w, calibration=calibration)
        _require(tuple(subset.shape) == tuple(values.shape), "scores_consistent",
                 f"{case.label} scores a {tuple(values.shape)} subset of {name} with shape {tuple(subset.shape)}")
        _require(torch.equal(subset.float(), whole[where].float()), "scores_consistent",
                 f"{case.label}: scores of a subset of {name} (with positions) differ from the whole tensor's "
                 "at those positions; scores must depend only on the value, its flat position and calibration")


def check_per_unit_exact(case: _Case) -> None:
    module = case.tensors()
    params = case.params(module)
    teacher = case.teacher(module, "stored")
    for level in case.levels:
        teacher.set_level(level)
        masks = _masked(teacher, params)
        report = {row.name: row for row in teacher.report().tensors}
        if case.global_scope:
            total = sum(p.numel() for p in params.values())
            got = sum(int(m.sum()) for m in masks.values())
            _require(got == level.count(total), "per_unit_exact",
                     f"{case.label} at level {level} masks {got} of the scope's {total}, expected {level.count(total)}")
            continue
        for name, mask in masks.items():
            layout = case.layouts[name]
            per_unit = mask.reshape(-1)[layout.index_map()].sum(dim=1)
            want = level.count(layout.size)
            bad = (per_unit != want).nonzero().view(-1)
            _require(bad.numel() == 0, "per_unit_exact",
                     f"{_where(case, name, 'float32', 'stored', level)}: unit {int(bad[0]) if bad.numel() else -1} of "
                     f"{layout.describe()} masks {int(per_unit[bad[0]]) if bad.numel() else 0}, expected floor(r * S) = {want}")
            _require(report[name].masked == want * layout.units, "per_unit_exact",
                     f"{_where(case, name, 'float32', 'stored', level)}: the report says {report[name].masked} masked, "
                     f"expected {want * layout.units}")


def check_layout_exact(case: _Case) -> None:
    import torch

    for dtype in DTYPES:
        for memory in MEMORY_MODES:
            module = case.tensors(dtype)
            params = case.params(module)
            teacher = case.teacher(module, memory)
            expected = {level: case.expected_masks(module, level) for level in case.levels}
            for level in _walk(case.levels):
                teacher.set_level(level)
                for name, mask in _masked(teacher, params).items():
                    want = expected[level][name]
                    if not torch.equal(mask, want):
                        extra = (mask & ~want).nonzero()
                        missing = (want & ~mask).nonzero()
                        raise MaskerConformanceError(
                            f"[layout_exact] {_where(case, name, dtype, memory, level)}: {len(extra)} masked elements "
                            f"the layout does not select (first {extra[0].tolist() if len(extra) else None}), "
                            f"{len(missing)} it selects left unmasked (first {missing[0].tolist() if len(missing) else None})")
            teacher.close()


def check_nesting(case: _Case) -> None:
    module = case.tensors("bfloat16")
    params = case.params(module)
    teacher = case.teacher(module, "stored")
    previous = None
    for level in case.levels:  # largest first
        teacher.set_level(level)
        masks = _masked(teacher, params)
        if previous is not None:
            for name in params:
                escaped = int((masks[name] & ~previous[name]).sum())
                _require(escaped == 0, "nesting",
                         f"{_where(case, name, 'bfloat16', 'stored', level)}: {escaped} elements masked here are "
                         "not masked at the level above")
        previous = masks


def check_restore_exact(case: _Case) -> None:
    import torch

    for dtype in DTYPES:
        for memory in MEMORY_MODES:
            module = case.tensors(dtype)
            params = case.params(module)
            original = {n: p.detach().clone() for n, p in params.items()}
            teacher = case.teacher(module, memory)
            for level in _walk(case.levels):
                teacher.set_level(level)
            teacher.set_level(case.levels[0])
            teacher.restore()
            for name, p in params.items():
                bits = torch.int16 if p.element_size() == 2 else torch.int32
                _require(torch.equal(p.detach().view(bits), original[name].view(bits)), "restore_exact",
                         f"{_where(case, name, dtype, memory, 0)}: weights differ from the original after restore")
                _require(torch.equal(teacher.effective_weight(name).view(bits), original[name].view(bits)),
                         "restore_exact", f"{_where(case, name, dtype, memory, 0)}: the forward would see other weights")
            teacher.close()


_CHECKS: dict[str, Callable[[_Case], None]] = {
    "protocol": check_protocol,
    "scores_consistent": check_scores_consistent,
    "per_unit_exact": check_per_unit_exact,
    "layout_exact": check_layout_exact,
    "nesting": check_nesting,
    "restore_exact": check_restore_exact,
}
assert tuple(_CHECKS) == MASKER_CHECKS


# A masker that perturbs the logits (``perturbs = "logits"``, e.g. ``temperature``) masks no weight:
# it is checked by what it promises instead, on a small linear model with an output head.
LOGIT_MASKER_CHECKS: tuple[str, ...] = ("logits_protocol", "logits_restore_exact")


def masker_checks(masker_name: str) -> tuple[str, ...]:
    """The checks that apply to a registered masker: the weight kit, or the logit kit."""
    spec = masker_spec(masker_name)
    return LOGIT_MASKER_CHECKS if getattr(type(spec), "perturbs", "weights") == "logits" else MASKER_CHECKS


class _HeadModel:
    """A tiny torch model with an output head (``get_output_embeddings``), built lazily."""

    def __new__(cls) -> Any:
        import torch

        class Model(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = torch.nn.Linear(8, 8)
                self.head = torch.nn.Linear(8, 12, bias=False)

            def get_output_embeddings(self) -> torch.nn.Module:
                return self.head

            def forward(self, x: Any) -> Any:
                return self.head(torch.tanh(self.body(x)))

        torch.manual_seed(0)
        return Model()


def _logit_case(masker_name: Any) -> tuple[Any, Any, list[Any]]:
    import torch

    from masters.ratios import Ratio

    spec = masker_spec(masker_name)
    levels = [Ratio(0)] + sorted(getattr(spec, "temperatures", {}) or {}, reverse=True)
    if len(levels) == 1:  # a logit masker configured without levels: give it two if it takes a mapping
        fields = type(spec).model_fields
        if "temperatures" in fields:
            spec = spec.model_copy(update={"temperatures": {Ratio(2000): 2.0, Ratio(1000): 1.5}})
            levels = [Ratio(0), Ratio(2000), Ratio(1000)]
    model = _HeadModel()
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    return spec, model, [levels, x]


def _check_logits_protocol(masker_name: Any) -> None:
    from masters.masking.runtime import MaskedTeacher

    spec, model, (levels, _) = _logit_case(masker_name)
    teacher = MaskedTeacher.from_model(model, spec, levels)
    for attr in ("level", "set_level", "restore", "close", "report"):
        _require(hasattr(teacher, attr), "logits_protocol", f"the runtime of {spec.name!r} has no {attr}")
    _require(teacher.report().masked == 0, "logits_protocol", f"{spec.name!r} reports masked weights")
    teacher.close()


def _check_logits_restore_exact(masker_name: Any) -> None:
    import torch

    from masters.masking.runtime import MaskedTeacher

    spec, model, (levels, x) = _logit_case(masker_name)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        base = model(x)
        teacher = MaskedTeacher.from_model(model, spec, levels)
        changed = False
        for level in sorted(levels, reverse=True) + [levels[0]]:
            teacher.set_level(level)
            out = model(x)
            if level.bp == 0:
                _require(torch.equal(out, base), "logits_restore_exact", f"{spec.name!r} changes level 0's logits")
            else:
                changed = changed or not torch.equal(out, base)
        _require(changed or len(levels) == 1, "logits_restore_exact", f"{spec.name!r} changes no level's logits")
        teacher.close()
        _require(torch.equal(model(x), base), "logits_restore_exact", f"{spec.name!r} left its change after close")
    _require(all(torch.equal(v, weights[k]) for k, v in model.state_dict().items()), "logits_restore_exact",
             f"{spec.name!r} modified weights")


def run_masker_check(masker_name: str, check: str, **options: Any) -> None:
    """Run one conformance check on one masker (a registered name; a spec or mapping works too).

    Raises :class:`MaskerConformanceError` (an ``AssertionError``) naming the rule, the tensor, the
    dtype, the memory mode and the level that broke. ``options``: ``levels``, ``shapes``, ``seed``.
    """
    if check in LOGIT_MASKER_CHECKS:
        {"logits_protocol": _check_logits_protocol, "logits_restore_exact": _check_logits_restore_exact}[check](
            masker_name)
        return
    if check not in _CHECKS:
        raise ValueError(f"unknown masker check {check!r}; checks: {', '.join(MASKER_CHECKS)}")
    _CHECKS[check](_Case(masker_name, **options))


def check_masker(masker: Any, *, checks: Iterable[str] = MASKER_CHECKS, levels: Sequence[Any] | None = None,
                 shapes: Mapping[str, tuple[tuple[int, ...], bool]] | None = None, seed: int = 0) -> None:
    """Run the conformance checks on a masker: a registered name, a ``{"name": ..., ...}`` mapping,
    a spec class or a spec instance. ``levels`` defaults to the first of ``LEVEL_SETS`` the masker
    accepts; ``shapes`` maps tensor names to ``(shape, ties)`` (default ``SHAPES``)."""
    case = _Case(masker, levels=levels, shapes=shapes, seed=seed)
    for check in checks:
        if check not in _CHECKS:
            raise ValueError(f"unknown masker check {check!r}; checks: {', '.join(MASKER_CHECKS)}")
        _CHECKS[check](case)
