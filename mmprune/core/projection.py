"""Projection of the binary masks onto the cost target (METHOD.md 4)."""

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch
from torch import Tensor

from .cost import CostModel
from .mask import MaskSet


@dataclass
class ProjectionReport:
    """What `project_to_target` did.

    ``psi_*`` are cost ratios; ``dropped`` / ``restored`` count channels
    switched off / on; ``reached`` is True only when ``psi_after`` lies in
    ``[target - tol, target]``, else ``reason`` says why not (fixed layers,
    ``min_channels``, rounding to ``channel_multiple``, or channels too
    coarse for ``tol``; ``''`` when reached); ``kept_before`` /
    ``kept_after`` map each group to its kept channel count.
    """

    target: float
    tol: float
    psi_before: float
    psi_after: float
    dropped: int
    restored: int
    reached: bool
    kept_before: Dict[str, int] = field(default_factory=dict)
    kept_after: Dict[str, int] = field(default_factory=dict)
    reason: str = ''


def project_to_target(
    maskset: MaskSet,
    cost_model: CostModel,
    psi_target: float,
    tol: float = 0.02,
    freeze: bool = True,
    channel_multiple: int = 1,
) -> ProjectionReport:
    """Move the masks onto ``[psi_target - tol, psi_target]``, then freeze.

    * If ``psi > psi_target``: switch off kept channels, lowest ``M`` per unit
      of cost first (cost = the channel's marginal cost at the current masks),
      until ``psi <= psi_target``; each group keeps its ``min_channels``.
    * If then ``psi < psi_target - tol``: switch pruned channels back on,
      highest ``M`` first, each only if ``psi`` stays ``<= psi_target``.
    * If ``psi`` is still below the band (channels or blocks coarser than
      ``tol``), mix the groups' kept counts: the highest ``psi`` at or below
      the target over every mix of allowed counts (up to 4096 mixes), else
      over pair moves (one group steps, another fills up).

    Args:
        maskset: the masks; their current binaries (frozen ones included) are
            the starting point.
        cost_model: the `CostModel` of the same plan (its ``cost`` is used).
        psi_target: target ratio in (0, 1].
        tol: how far below the target is acceptable.
        freeze: freeze the masks at the result (default True).
        channel_multiple: round every group's kept count to a multiple of
            this (groups smaller than it keep exact counts, and a group may
            stay full). CPU and GPU conv kernels run much faster at widths
            that are multiples of 8 or 16, so the MAC target then turns
            into more of a latency gain. Rounding goes down after the drop
            phase (up to one block for a group left below it); if that
            overshoots, whole blocks go (least ``M`` per unit of cost
            first), then blocks (highest mean ``M`` first) are restored
            while ``psi`` stays at or below the target.

    A result outside ``[psi_target - tol, psi_target]`` warns and sets
    ``reached=False`` with the cause in ``reason``.

    Groups with tied channels (`ChannelGroup.tie`) move one unit at a time:
    the search runs over mask values (units), the cost over the channels
    they stand for, and counts in the report are channels.

    Returns:
        A `ProjectionReport`.
    """
    target = float(psi_target)
    if not 0.0 < target <= 1.0:
        raise ValueError(
            f'project_to_target: psi_target must lie in (0, 1], '
            f'got {target}'
        )
    if int(channel_multiple) < 1:
        raise ValueError('project_to_target: channel_multiple must be an '
                         f'int >= 1, got {channel_multiple!r}')
    if not 0.0 <= tol < target:
        raise ValueError(
            f'project_to_target: tol must lie in [0, target), got {tol}'
        )
    names = cost_model.group_names
    if list(names) != list(maskset.group_names):
        raise ValueError(
            'project_to_target: the mask set and the cost model '
            'come from different plans'
        )
    masks = [maskset.mask(n) for n in names]
    with torch.no_grad():
        b = _flat([mk.unit_binary().detach() for mk in masks])
        m = _flat([mk.mask.detach() for mk in masks])
    sizes = [mk.num_units for mk in masks]
    wts = [mk.unit_size for mk in masks]
    gidx = torch.repeat_interleave(
        torch.arange(len(names)), torch.tensor(sizes, dtype=torch.long)
    )
    wvec = torch.tensor(wts, dtype=torch.float64)[gidx]
    expand = _expander(masks)
    mins = [mk.min_units for mk in masks]
    dense = float(cost_model.dense)
    budget = target * dense
    eps = 1e-9 * dense

    def total(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(cost_model.total_flat(x[expand]))

    def kept(x: torch.Tensor) -> Dict[str, int]:
        counts = torch.zeros(len(names), dtype=torch.float64).index_add(
            0, gidx, x * wvec
        )
        return {n: int(round(c)) for n, c in zip(names, counts.tolist())}

    before = kept(b)
    cur = total(b)
    psi_before = cur / dense
    dropped = restored = 0
    q = int(channel_multiple)
    # The multiple in units: the fewest units whose channels are multiples.
    qs = [q // math.gcd(q, w) for w in wts]
    multi = any(x > 1 for x in qs)
    if multi:
        # Whole blocks first: masks trained with channel_multiple already
        # keep multiples, and single-channel drops followed by rounding
        # would churn many channels for a small correction.
        cur, d, r = _round_groups(b, m, sizes, mins, qs, wts, total,
                                  budget + eps, (target - tol) * dense - eps)
        dropped += d
        restored += r
    per_channel = 0
    while cur > budget + eps:
        x = b.clone().requires_grad_(True)
        cost_model.total_flat(x[expand]).backward()
        marginal = x.grad
        idx = ((b == 1) & (marginal > 0)).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        score = m[idx] / marginal[idx]
        order = idx[torch.argsort(score, stable=True)].tolist()
        room = (
            torch.zeros(len(names), dtype=torch.float64).index_add(0, gidx, b)
            - torch.tensor(mins, dtype=torch.float64)
        ).tolist()
        excess, acc, chosen = cur - budget, 0.0, []
        # The marginals over-estimate a batch's saving (bilinear cost), so
        # this drops at most one channel too few and loops.
        for c in order:
            g = int(gidx[c])
            if room[g] < 1:
                continue
            room[g] -= 1
            chosen.append(c)
            acc += float(marginal[c])
            if acc >= excess:
                break
        if not chosen:
            break
        b[chosen] = 0.0
        dropped += int(wvec[chosen].sum())
        per_channel += len(chosen)
        cur = total(b)
    low = [_low(s, k, qg) for s, k, qg in zip(sizes, mins, qs)]
    floor = budget - tol * dense
    if multi:
        if per_channel:
            cur, d, r = _round_groups(b, m, sizes, mins, qs, wts, total,
                                      budget + eps)
            dropped += d
            restored += r
    elif cur < floor:
        idx = (b == 0).nonzero().squeeze(1)
        order = idx[torch.argsort(-m[idx], stable=True)].tolist()
        for c in order:
            b[c] = 1.0
            t = total(b)
            if t <= budget + eps:
                cur = t
                restored += int(wvec[c])
            else:
                b[c] = 0.0
    over = None
    if cur < floor - eps:
        cur, d, r, over = _best_mix(b, m, sizes, low, qs, wvec, total,
                                    budget + eps, floor - eps)
        dropped += d
        restored += r
    reached = floor - eps <= cur <= budget + eps
    reason = ''
    if not reached:
        reason = _why(b, m, sizes, mins, low, q if multi else 1, total,
                      budget + eps, dense, cur, over)
        where = ('stays above the target' if cur > budget + eps else
                 f'lands below the band [{floor / dense:.4f}, {target}]')
        warnings.warn(f'project_to_target: psi {cur / dense:.4f} {where}: '
                      f'{reason}')
    if freeze:
        out, off = {}, 0
        for n, s, mk in zip(names, sizes, masks):
            out[n] = _channels(mk, b[off:off + s])
            off += s
        maskset.freeze(out)
    return ProjectionReport(
        target=target,
        tol=float(tol),
        psi_before=psi_before,
        psi_after=cur / dense,
        dropped=dropped,
        restored=restored,
        reached=reached,
        kept_before=before,
        kept_after=kept(b),
        reason=reason,
    )


def _flat(parts) -> Tensor:
    return (torch.cat([p.to('cpu', torch.float64) for p in parts]) if parts
            else torch.zeros(0, dtype=torch.float64))


def _expander(masks) -> Tensor:
    """``[sum C]`` the flat unit index of every flat channel."""
    out, off = [], 0
    for mk in masks:
        ties = (torch.arange(mk.num_channels) if mk.ties is None
                else mk.ties.cpu())
        out.append(ties + off)
        off += mk.num_units
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _channels(mk, units: Tensor) -> Tensor:
    """A unit binary ``[U]`` of mask ``mk`` as its channel binary ``[C]``."""
    dev = mk.frozen_binary.device
    b = units if mk.ties is None else units[mk.ties.cpu()]
    return b.to(dev, torch.float32)


def _spans(sizes):
    out, off = [], 0
    for s in sizes:
        out.append((off, s))
        off += s
    return out


def _order(b, m):
    """Channel order of a group: kept ones first, each part by ``M``
    (highest first, ties by index)."""
    i = torch.argsort(-m, stable=True)
    return i[torch.argsort(-b[i], stable=True)]


def _low(size: int, min_keep: int, q: int) -> int:
    """Fewest channels a group may keep when counts round to ``q``."""
    if size < q or q == 1:  # exact counts
        return min(size, min_keep)
    return min(size, max(q, -(-min_keep // q) * q))


def _step(b, m, o, s, low, q, up):
    """Indices that move group ``[o, o + s)`` to its next allowed count up
    (highest ``M`` first) or down (lowest ``M`` first); None if none."""
    seg = b[o:o + s]
    k = int(seg.sum())
    unit = 1 if s < q else q
    n = min(s, (k // unit + 1) * unit) if up else ((k - 1) // unit) * unit
    if (up and n <= k) or (not up and (k == 0 or n < low)):
        return None
    cand = (seg == (0 if up else 1)).nonzero().squeeze(1)
    mm = m[o:o + s][cand]
    cand = cand[torch.argsort(-mm if up else mm, stable=True)]
    return cand[:abs(n - k)] + o


def _round_groups(b, m, sizes, mins, qs, wts, total, limit, floor=None):
    """Round kept counts to multiples of ``qs[g]`` in place; see
    `project_to_target`. A block whose removal lands in ``[floor, limit]``
    is preferred to one that overshoots below it. Returns (cost, dropped,
    restored) with the counts in channels (``wts[g]`` per unit)."""
    dropped = restored = 0
    spans = _spans(sizes)
    low = [_low(s, k, q) for s, k, q in zip(sizes, mins, qs)]
    for gi, (o, s) in enumerate(spans):
        k = int(b[o:o + s].sum())
        q = qs[gi]
        if s < q or q == 1 or k == s:
            continue
        k_new = min(s, max((k // q) * q, -(-mins[gi] // q) * q, q))
        if k_new == k:
            continue
        order = _order(b[o:o + s], m[o:o + s])
        new = torch.zeros(s, dtype=b.dtype)
        new[order[:k_new]] = 1.0
        dropped += wts[gi] * int((b[o:o + s] - new).clamp(min=0).sum())
        restored += wts[gi] * int((new - b[o:o + s]).clamp(min=0).sum())
        b[o:o + s] = new
    cur = total(b)
    # Rounding up (a group left with fewer than q channels goes back to q, or
    # to its min_channels multiple) can overshoot: take whole blocks off
    # again, least M per unit of saved cost first, as the drop phase does.
    while cur > limit:
        best = None
        for gi, (o, s) in enumerate(spans):
            q = qs[gi]
            block = (None if s < q or q == 1 else
                     _step(b, m, o, s, low[gi], q, False))
            if block is None:
                continue
            b[block] = 0.0
            t = total(b)
            b[block] = 1.0
            if t >= cur:
                continue
            lands = floor is not None and floor <= t <= limit
            score = (not lands, float(m[block].mean()) / (cur - t))
            if best is None or score < best[0]:
                best = (score, block, t, wts[gi])
        if best is None:
            break
        b[best[1]] = 0.0
        cur = best[2]
        dropped += len(best[1]) * best[3]
    while True:
        best = None
        for gi, (o, s) in enumerate(spans):
            q = qs[gi]
            block = (None if s < q or q == 1 else
                     _step(b, m, o, s, low[gi], q, True))
            if block is None:
                continue
            b[block] = 1.0
            t = total(b)
            b[block] = 0.0
            if t <= limit:
                score = float(m[block].mean())
                if best is None or score > best[0]:
                    best = (score, block, t, wts[gi])
        if best is None:
            return cur, dropped, restored
        b[best[1]] = 1.0
        cur = best[2]
        restored += len(best[1]) * best[3]


def _best_mix(b, m, sizes, low, qs, wvec, total, limit, floor, max_mix=4096,
              max_evals=4000):
    """Raise the cost towards ``limit`` by moving groups between their
    allowed counts, in place: the best of every mix when there are at most
    ``max_mix``, else pair moves (one group a step up or down, another as high
    as fits) until the cost reaches ``floor``. Returns (cost, dropped,
    restored, the least cost seen above ``limit`` or None); ``qs[g]`` is
    group g's multiple, ``wvec`` the channels of every unit."""
    spans = _spans(sizes)
    start = b.clone()
    # Channels of a group in the order counts take them: kept ones, then M.
    orders = [_order(b[o:o + s], m[o:o + s]) + o for o, s in spans]
    counts = [int(b[o:o + s].sum()) for o, s in spans]
    levels = []
    for (o, s), lo, k, q in zip(spans, low, counts, qs):
        lv = range(lo, s + 1) if s < q or q == 1 else range(0, s + 1, q)
        levels.append(sorted({v for v in lv if v >= lo} | {s, k}))

    def put(g: int, k: int) -> None:
        b[orders[g]] = (torch.arange(sizes[g]) < k).to(b.dtype)

    over = [None]

    def cost() -> float:
        t = total(b)
        if t > limit and (over[0] is None or t < over[0]):
            over[0] = t
        return t

    def with_counts(change: Dict[int, int]) -> float:
        for g, k in change.items():
            put(g, k)
        t = cost()
        for g in change:
            put(g, counts[g])
        return t

    cur = total(b)
    n_mix = 1
    for lv in levels:
        n_mix *= len(lv)
        if n_mix > max_mix:
            break
    best = (cur, {})
    if n_mix <= max_mix:
        for ks in itertools.product(*levels):
            t = with_counts(dict(enumerate(ks)))
            if best[0] < t <= limit:
                best = (t, dict(enumerate(ks)))
    evals = 0
    while n_mix > max_mix and cur < floor and evals < max_evals:
        best = (cur, {})
        for i, lv_i in enumerate(levels):
            at = lv_i.index(counts[i])
            for ki in lv_i[max(0, at - 1):at + 2]:
                if ki == counts[i] or evals >= max_evals:
                    continue
                put(i, ki)
                t = cost()
                evals += 1
                if best[0] < t <= limit:
                    best = (t, {i: ki})
                for j, lv_j in enumerate(levels):
                    if j == i:
                        continue
                    a, z, fit = 0, len(lv_j) - 1, None
                    while a <= z:  # the cost rises with each count
                        mid = (a + z) // 2
                        t = with_counts({j: lv_j[mid]})
                        evals += 1
                        if t <= limit:
                            fit, a = (t, lv_j[mid]), mid + 1
                        else:
                            z = mid - 1
                    if fit is not None and best[0] < fit[0]:
                        best = (fit[0], {i: ki, j: fit[1]})
                put(i, counts[i])
        if not best[1]:
            break
        for g, k in best[1].items():
            counts[g] = k
            put(g, k)
        cur = best[0]
    if n_mix <= max_mix:
        for g, k in best[1].items():
            counts[g] = k
            put(g, k)
        cur = best[0]
    diff = b - start
    return (cur, int(wvec[diff < 0].sum()), int(wvec[diff > 0].sum()),
            over[0])


def _why(b, m, sizes, mins, low, q, total, limit, dense, cur, over) -> str:
    """Why the cost ``cur`` misses the band, for the warning and report
    (``over``: the least cost seen above the target)."""
    spans = _spans(sizes)

    def at(counts) -> float:
        x = torch.zeros_like(b)
        for (o, s), k in zip(spans, counts):
            x[_order(b[o:o + s], m[o:o + s])[:k] + o] = 1.0
        return total(x) / dense

    if cur > limit:
        fixed = at([0] * len(spans))
        if fixed * dense > limit:
            return (f'the fixed (unprunable) layers alone cost psi '
                    f'{fixed:.4f} (see plan.kept)')
        least = at(mins)
        if least * dense > limit:
            return (f'min_channels protects the remaining channels (psi '
                    f'{least:.4f} with every group at its minimum)')
        if q > 1:
            return (f'rounding to channel_multiple={q}: no mix of '
                    f'multiples of {q} found at or below the target (psi '
                    f'{at(low):.4f} with every group at its smallest)')
        return 'no kept channel left whose removal lowers psi'
    above = 'none' if over is None else f'{over / dense:.4f}'
    if q > 1:
        return (f'rounding to channel_multiple={q}: no mix of multiples of '
                f'{q} found in the band; the nearest feasible psi levels are '
                f'{cur / dense:.4f} (taken) and {above}')
    return ('channels too coarse for tol: no mix of channel counts found '
            'in the band; the nearest feasible psi levels are '
            f'{cur / dense:.4f} (taken) and {above}')


def lowest_psi(maskset: MaskSet, cost_model: CostModel,
               channel_multiple: int = 1) -> Tuple[float, Dict[str, Tensor]]:
    """The lowest psi the masks can reach, and binaries that reach it.

    Every group keeps its floor: ``min_channels``, rounded up to
    ``channel_multiple`` as the projection rounds (groups narrower than it
    keep exact counts); layers outside every group keep their whole cost.
    psi only grows with a group's kept count, so no mask state goes lower
    (which channels a group keeps changes psi only where a group's channels
    feed slices of different cost; the first ones are kept here).

    Returns:
        ``(psi_min, binaries)``; ``binaries`` maps group names to ``[C]``
        0 / 1 tensors.
    """
    q = max(int(channel_multiple), 1)
    out = {}
    for name in maskset.group_names:
        mk = maskset.mask(name)
        b = torch.zeros(mk.num_units, dtype=torch.float64)
        qu = q // math.gcd(q, mk.unit_size)
        b[:_low(mk.num_units, mk.min_units, qu)] = 1.0
        out[name] = _channels(mk, b).cpu()
    with torch.no_grad():
        return float(cost_model.psi(out)), out
