"""Exact selection of the smallest scores per unit: thresholds for every level from one ranking.

A masker splits each tensor into units (a layout, which the runtime permutes into ``[U, S]``: U
units of S elements, each row in the unit's order) and gives each element a score; at ratio ``r``
every unit masks its ``floor(r * S)`` smallest elements, ties broken by position inside the unit.
Such a set is described exactly by a threshold pair per unit: every element with ``score < k``
plus the first ``t`` elements (in the row's order) with ``score == k``. Storing ``(k, t)``
per unit and level costs bytes, not a copy, and masks nest because a smaller count never moves
the threshold up. No ``torch.quantile`` (it fails beyond 2**24 elements): ``topk`` per tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

NOTHING = float("-inf")  # threshold of a level that masks nothing in a unit


def unit_thresholds(scores: torch.Tensor, counts: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(k, t)`` per unit for each count (counts descending), from ``scores`` of shape ``[U, S]``.

    One ``topk`` at the largest count, then each smaller count selects inside the previous
    selection, which is cheaper and keeps every level a subset of the one above.
    """
    units = scores.shape[0]
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    pool = scores
    for count in counts:
        if count <= 0:
            out.append((torch.full((units,), NOTHING, device=scores.device), torch.zeros(units, dtype=torch.int32, device=scores.device)))
            continue
        pool = torch.topk(pool, count, dim=1, largest=False, sorted=False).values
        k = pool.max(dim=1).values
        below = (pool < k.unsqueeze(1)).sum(dim=1)
        out.append((k, (count - below).to(torch.int32)))
    return out


def threshold_mask(scores: torch.Tensor, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Bool ``[U, X]``: ``score < k`` plus the first ``t`` ties (``score == k``) of each unit row."""
    k = k.unsqueeze(1)
    mask = scores < k
    tied = scores == k
    if bool((count_rows(tied) > t.cpu()).any()):  # only partly masked ties need ranking
        keep_first_ties(tied, t)
    mask |= tied
    return mask


def keep_first_ties(tied: torch.Tensor, t: torch.Tensor) -> None:
    """In place: keep only the first ``t[u]`` True elements of each row ``u`` of ``tied``.

    On CPU the ties are ranked from their positions (numpy ``nonzero``), which costs one pass over
    the row plus work per tie; a running count (``cumsum``) over every element was 7x slower on
    bf16 weights, whose few distinct values make ties at the threshold common.
    """
    if tied.device.type != "cpu":
        tied &= tied.cumsum(dim=1, dtype=torch.int32) <= t.unsqueeze(1).to(torch.int32)
        return
    flags = tied.numpy().reshape(-1)
    where = np.flatnonzero(flags)  # row-major: each row's ties in position order (1-D: the fast path)
    units = tied.shape[0]
    rows = where // tied.shape[1]
    starts = np.zeros(units, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=units)[:-1], out=starts[1:])
    drop = np.arange(where.size) - starts[rows] >= t.numpy().astype(np.int64)[rows]
    flags[where[drop]] = False


def count_rows(mask: torch.Tensor) -> torch.Tensor:
    """True elements per row of a 2-D bool tensor (numpy on CPU: torch bool reductions are ~100x slower)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.count_nonzero(mask.numpy(), axis=1))
    return mask.sum(dim=1).cpu()


def group_rank(scores: torch.Tensor) -> torch.Tensor:
    """Rank of each element inside its (small) unit row by (score, position): int ``[U, S]``.

    For N:M groups storing a threshold per group would cost more than the weights; ranking a
    handful of elements by pairwise comparison is cheap and needs no bookkeeping at all.
    """
    size = scores.shape[1]
    rank = torch.zeros(scores.shape, dtype=torch.int8 if size < 128 else torch.int32, device=scores.device)
    for i in range(size):
        col = scores[:, i : i + 1]
        before = scores < col  # strictly smaller scores come first
        if i:
            before[:, :i] |= scores[:, :i] == col  # equal scores: the earlier position first
        rank[:, i] = before.sum(dim=1)
    return rank


# ---------------------------------------------------------------------------------------------
# One threshold over many tensors (the `global` masker): a histogram over the float bits.
# ---------------------------------------------------------------------------------------------

_BINS = 1 << 16


def _ordered_bits(scores: torch.Tensor) -> torch.Tensor:
    """int32 keys whose integer order is the float32 order (sign-magnitude -> two's complement)."""
    bits = scores.float().contiguous().view(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def _bin(scores: torch.Tensor) -> torch.Tensor:
    if scores.device.type == "cpu":  # numpy's shift and compare are several times faster than torch's here
        bits = scores.float().contiguous().numpy().view(np.int32)
        bins = bits >> 16
        if bins.min() < 0:  # negative scores: make the integer order follow the float order
            bins = np.where(bits < 0, (bits ^ 0x7FFFFFFF) >> 16, bins)
        return torch.from_numpy(bins + (_BINS // 2))
    return (_ordered_bits(scores) >> 16) + (_BINS // 2)


def global_thresholds(
    score_fns: Sequence[Callable[[], torch.Tensor]], counts: Sequence[int]
) -> list[tuple[float, int]]:
    """``(k, t)`` of each global count over all tensors: mask ``score < k`` plus ``t`` ties.

    Two streaming passes, never a concatenated copy (a 7B teacher would need 28 GB for one):
    a 65,536-bin histogram of the top float bits, then the exact order inside each boundary bin.
    """
    hist = None
    cache: list[tuple[torch.Tensor, torch.Tensor]] = []  # one tensor: keep its bins for the second pass
    for fn in score_fns:
        s = fn()
        bins = _bin(s).view(-1)
        if len(score_fns) == 1:
            cache.append((s, bins))
        h = torch.from_numpy(np.bincount(bins.numpy(), minlength=_BINS)) if bins.device.type == "cpu" \
            else torch.bincount(bins, minlength=_BINS).cpu()
        hist = h if hist is None else hist + h
    assert hist is not None
    cum = hist.cumsum(0)
    targets = []
    for count in counts:
        if count <= 0:
            targets.append(None)
            continue
        b = int(torch.searchsorted(cum, torch.tensor(count)).item())
        before = int(cum[b - 1]) if b else 0
        targets.append((b, count - before, before))
    wanted = {target[0] for target in targets if target}
    candidates: dict[int, list[torch.Tensor]] = {b: [] for b in wanted}
    for fn in score_fns:
        s, bins = cache[0] if cache else (fn(), None)
        s = s.reshape(-1).float()
        bins = _bin(s).view(-1) if bins is None else bins
        for b in wanted:
            candidates[b].append(s[bins == b].cpu())
    out: list[tuple[float, int]] = []
    for target in targets:
        if target is None:
            out.append((NOTHING, 0))
            continue
        b, need, before = target
        values = torch.sort(torch.cat(candidates[b])).values
        k = values[need - 1]
        below = before + int((values < k).sum())
        out.append((float(k), before + need - below))
    return out


def split_ties(counts_equal: Iterable[int], t: int) -> list[int]:
    """Hand ``t`` tied elements to tensors in order (tensor order, then flat index)."""
    out = []
    for n in counts_equal:
        take = min(n, t)
        out.append(take)
        t -= take
    return out
