"""Every registered masker: exact restore, nesting and ratio accuracy per unit, in every memory mode."""

from __future__ import annotations

import pytest
import torch

from masters.errors import MastersError
from masters.masking.layout import layout_of
from masters.masking.runtime import MaskedTeacher
from masters.plugins import get_components
from masters.ratios import Ratio
from masters.config import validate_component
from masters.testing.maskers import registered_maskers


def tiny_mlp(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 40), torch.nn.ReLU(), torch.nn.Linear(40, 48), torch.nn.ReLU(),
                                torch.nn.Linear(48, 32))
    return model.to(dtype)


class TinyExperts(torch.nn.Module):
    """A mixture-of-experts block storing its experts as one 3-D parameter [E, out, in]."""

    def __init__(self, experts=4, out=24, inp=32):
        super().__init__()
        self.gate_up_proj = torch.nn.Parameter(torch.randn(experts, out, inp))

    def forward(self, x):
        return torch.einsum("bi,eoi->beo", x, self.gate_up_proj).sum(1)


MASKERS = registered_maskers()  # weight maskers; the temperature control has tests of its own
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def levels_for(name):
    return [Ratio(5000), Ratio(2500), Ratio(0)] if name == "nm" else [Ratio(bp) for bp in (3000, 2000, 1500, 500, 0)]


def build(name, model, memory, levels=None, **fields):
    spec = validate_component("masker", {"name": name, "memory": memory, **fields})
    tensors = {f"{n}.weight": ("language", m.weight) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    g = torch.Generator().manual_seed(0)
    calibration = {n: torch.rand(t.shape[-1], generator=g) + 0.5 for n, (_, t) in tensors.items()}
    return MaskedTeacher(tensors, spec.build(), levels or levels_for(name), memory=memory, calibration=calibration,
                         model=model), tensors


def effective_masks(teacher, tensors):
    return {n: teacher.effective_weight(n) == 0 for n in tensors}


@pytest.mark.parametrize("memory", ["stored", "indexed", "on_the_fly"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MASKERS)
def test_masks_nest_restore_exactly_and_realise_the_ratio_per_unit(name, dtype, memory):
    model = tiny_mlp(dtype)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    teacher, tensors = build(name, model, memory)
    previous = None
    for level in teacher.levels:  # r_max first, down to 0
        teacher.set_level(level)
        masks = effective_masks(teacher, tensors)
        report = teacher.report()
        for row in report.tensors:
            w = tensors[row.name][1]
            changed = teacher.effective_weight(row.name) != original[f"{row.name}"]
            # nothing but zeroing happens, and only where the report says
            assert not changed[~masks[row.name]].any()
            assert int(changed.sum()) <= row.masked
            if teacher.masker.scope == "unit":
                layout = layout_of(teacher.masker, row.name, w.shape)
                units, size = layout.units, layout.size
                assert row.masked == units * level.count(size)  # each unit realises floor(r * size) exactly
            else:
                total = sum(t.numel() for _, t in tensors.values())
        if teacher.masker.scope == "global":
            assert report.masked == level.count(total)
        if previous is not None:  # what is masked at a smaller ratio is masked at the larger one
            for n in tensors:
                assert not (masks[n] & ~previous[n] & (original[n] != 0)).any()
        previous = masks
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k]), k


@pytest.mark.parametrize("memory", ["stored", "indexed"])
@pytest.mark.parametrize("name", MASKERS)
def test_up_and_down_then_restore_is_bit_identical(name, memory):
    model = tiny_mlp(torch.bfloat16)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    teacher, tensors = build(name, model, memory)
    seen = {}
    for level in [*teacher.levels, *reversed(teacher.levels), teacher.levels[1], teacher.levels[0], teacher.levels[-2]]:
        teacher.set_level(level)
        snap = {n: t.detach().clone() for n, (_, t) in tensors.items()}
        if level in seen:  # a level looks the same however it was reached
            assert all(torch.equal(snap[n], seen[level][n]) for n in snap)
        seen[level] = snap
    teacher.restore()
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k]) and v.view(torch.int16).equal(original[k].view(torch.int16))


@pytest.mark.parametrize("other", ["indexed", "on_the_fly"])
@pytest.mark.parametrize("name", MASKERS)
def test_memory_modes_give_the_same_masks(name, other):
    stored_model, other_model = tiny_mlp(), tiny_mlp()
    stored, tensors = build(name, stored_model, "stored")
    alt, _ = build(name, other_model, other)
    x = torch.randn(3, 64)
    # every pair of levels in both directions, not only the staircase down
    path = [*stored.levels, *reversed(stored.levels), stored.levels[0], stored.levels[-1], stored.levels[1]]
    for level in path:
        stored.set_level(level)
        alt.set_level(level)
        for n in tensors:
            assert torch.equal(stored.effective_weight(n), alt.effective_weight(n))
        with torch.no_grad():
            assert torch.equal(stored_model(x), other_model(x))  # the hooks really mask the forward
    stored.restore(), alt.restore()
    assert all(torch.equal(a, b) for a, b in zip(stored_model.state_dict().values(), other_model.state_dict().values()))


def test_ties_are_broken_by_flat_index():
    w = torch.nn.Parameter(torch.ones(4, 8))  # every score ties
    teacher = MaskedTeacher({"w": w}, validate_component("masker", "magnitude").build(), ["0.25"])
    teacher.set_level("0.25")
    assert torch.equal((w.detach() == 0).view(-1).nonzero().view(-1), torch.arange(8))


def test_moe_experts_are_masked_per_expert_slice():
    torch.manual_seed(0)
    block = TinyExperts()
    with torch.no_grad():
        block.gate_up_proj[0] *= 100  # a global threshold would spare expert 0 entirely
    teacher = MaskedTeacher({"gate_up_proj": block.gate_up_proj}, validate_component("masker", "magnitude").build(), ["0.2"])
    teacher.set_level("0.2")
    per_expert = (block.gate_up_proj.detach() == 0).flatten(1).sum(1)
    assert per_expert.tolist() == [Ratio(2000).count(24 * 32)] * 4


def test_nm_rejects_levels_that_are_not_multiples_of_one_over_m():
    with pytest.raises(MastersError, match="multiples of 1/4"):
        build("nm", tiny_mlp(), "stored", levels=["0.2", "0"])


def test_nm_masks_two_then_one_of_every_four():
    model = tiny_mlp()
    teacher, tensors = build("nm", model, "stored")
    for level, per_group in (("0.5", 2), ("0.25", 1), ("0", 0)):
        teacher.set_level(level)
        for _, t in tensors.values():
            assert ((t.detach() == 0).view(-1, 4).sum(1) == per_group).all()


def test_wanda_needs_calibration():
    model = tiny_mlp()
    tensors = {"0.weight": model[0].weight}
    with pytest.raises(MastersError, match="input norms") as info:
        MaskedTeacher(tensors, validate_component("masker", "wanda").build(), ["0.2"])
    assert info.value.fix and "collect_input_norms" in info.value.fix


def test_collect_input_norms_matches_the_definition():
    from masters.masking.calibration import collect_input_norms

    model = tiny_mlp()
    x = torch.randn(5, 64)
    norms = collect_input_norms(model, {"0.weight": model[0].weight}, lambda: model(x))
    assert torch.allclose(norms["0.weight"], x.norm(dim=0))


def test_random_masker_is_reproducible_by_seed():
    a, b, c = tiny_mlp(), tiny_mlp(), tiny_mlp()
    masks = []
    for model, seed in ((a, 1), (b, 1), (c, 2)):
        teacher, tensors = build("random", model, "stored", seed=seed)
        teacher.set_level("0.2")
        masks.append(torch.cat([(t.detach() == 0).view(-1) for _, t in tensors.values()]))
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_unplanned_level_is_a_clear_error():
    teacher, _ = build("magnitude", tiny_mlp(), "stored")
    with pytest.raises(MastersError) as info:
        teacher.set_level("0.25")
    assert info.value.where and "0.3" in info.value.fix


def test_stored_mode_keeps_r_max_values_plus_an_eighth_byte_per_weight():
    model = torch.nn.Linear(512, 512, bias=False)
    teacher = MaskedTeacher({"w": model.weight}, validate_component("masker", "magnitude").build(),
                            ["0.2", "0.15", "0.1", "0.05"])
    n = model.weight.numel()
    thresholds = 4 * (4 + 4)  # one (k, t) pair per level
    assert teacher.extra_bytes() == Ratio(2000).count(n) * 4 + n // 8 + thresholds
    fly = MaskedTeacher({"w": model.weight}, validate_component("masker", "magnitude").build(),
                        ["0.2", "0.15"], memory="on_the_fly", model=model)
    assert fly.extra_bytes() < 64


def test_indexed_mode_keeps_values_and_int32_positions_and_switches_touch_only_the_change():
    model = torch.nn.Linear(512, 512, bias=False)
    spec = validate_component("masker", {"name": "magnitude", "memory": "indexed"})
    teacher = MaskedTeacher({"w": model.weight}, spec.build(), ["0.2", "0.15", "0.1", "0.05"], memory="indexed")
    n = model.weight.numel()
    assert teacher.extra_bytes() == Ratio(2000).count(n) * (4 + 4) + 4 * (4 + 4)  # values + int32 positions
    teacher.set_level("0.15")
    before = model.weight.detach().clone()
    teacher.set_level("0.1")  # restores exactly the band between 0.15 and 0.1: 5% of the weights
    changed = int((model.weight.detach() != before).sum())
    assert changed == Ratio(1500).count(n) - Ratio(1000).count(n)


@pytest.mark.parametrize("memory", ["stored", "indexed"])
def test_scatters_split_across_threads_write_the_same_bits(monkeypatch, memory):
    from masters.masking import runtime

    def walk(model):
        teacher, tensors = build("magnitude", model, memory)
        snaps = []
        for level in [*teacher.levels, *reversed(teacher.levels), teacher.levels[1], teacher.levels[-1]]:
            teacher.set_level(level)
            snaps.append([t.detach().clone() for _, t in tensors.values()])
        return snaps

    scatters, pieces = [], []
    scatter, assign = runtime._scatter, runtime._assign
    monkeypatch.setattr(runtime, "_scatter", lambda *a: (scatters.append(1), scatter(*a)))
    monkeypatch.setattr(runtime, "_assign", lambda *a: (pieces.append(1), assign(*a)))
    threads = torch.get_num_threads()
    monkeypatch.setattr(runtime, "PARALLEL_SCATTER_MIN", 16)  # split even these tiny scatters
    torch.set_num_threads(3)
    try:
        split = walk(tiny_mlp(torch.bfloat16))
    finally:
        torch.set_num_threads(threads)
    assert len(pieces) > len(scatters) > 0  # the split path really ran: several pieces per scatter
    scatters.clear(), pieces.clear()
    monkeypatch.setattr(runtime, "PARALLEL_SCATTER_MIN", 1 << 40)
    whole = walk(tiny_mlp(torch.bfloat16))
    assert len(pieces) == len(scatters) > 0  # and unsplit here
    assert all(a.view(torch.int16).equal(b.view(torch.int16)) for x, y in zip(split, whole) for a, b in zip(x, y))
    original = [m.weight for m in tiny_mlp(torch.bfloat16) if isinstance(m, torch.nn.Linear)]
    assert all(a.view(torch.int16).equal(b.view(torch.int16)) for a, b in zip(split[-1], original, strict=True))


@pytest.mark.parametrize("units", [1, 7])
def test_keep_first_ties_matches_a_running_count(units):
    from masters.masking.selection import keep_first_ties

    g = torch.Generator().manual_seed(units)
    tied = torch.rand(units, 301, generator=g) < 0.3
    t = torch.randint(0, 120, (units,), generator=g, dtype=torch.int32)
    t[0] = 0  # a row that keeps no tie, and (with 7 rows) some that keep all of theirs
    expected = tied & (tied.cumsum(dim=1) <= t.unsqueeze(1))
    keep_first_ties(tied, t)
    assert torch.equal(tied, expected)
