"""Projection of the binary masks onto the cost target (METHOD.md 4)."""

import warnings
from dataclasses import dataclass, field
from typing import Dict

import torch

from .cost import CostModel
from .mask import MaskSet


@dataclass
class ProjectionReport:
    """What `project_to_target` did.

    ``psi_*`` are cost ratios; ``dropped`` / ``restored`` count channels
    switched off / on; ``reached`` is False when the target could not be met
    (every remaining channel is protected by ``min_channels`` or costs
    nothing); ``kept_before`` / ``kept_after`` map each group to its kept
    channel count.
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

    Args:
        maskset: the masks; their current binaries (frozen ones included) are
            the starting point.
        cost_model: the `CostModel` of the same plan (its ``cost`` is used).
        psi_target: target ratio in (0, 1].
        tol: how far below the target is acceptable.
        freeze: freeze the masks at the result (default True).
        channel_multiple: round every group's kept count to a multiple of
            this (groups smaller than it, and fully kept groups, stay as
            they are). CPU and GPU conv kernels run much faster at widths
            that are multiples of 8 or 16, so the MAC target then turns
            into more of a latency gain. Rounding goes down after the drop
            phase (up to one block for a group left below it); if that
            overshoots, whole blocks go (least ``M`` per unit of cost
            first), then blocks (highest mean ``M`` first) are restored
            while ``psi`` stays at or below the target.

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
    with torch.no_grad():
        bins = maskset.binaries()
        b = (
            torch.cat(
                [bins[n].detach().to('cpu', torch.float64) for n in names]
            )
            if names
            else torch.zeros(0)
        )
        cont = maskset.continuous()
        m = (
            torch.cat([cont[n].to('cpu', torch.float64) for n in names])
            if names
            else torch.zeros(0)
        )
    sizes = [cost_model.plan.groups[n].size for n in names]
    gidx = torch.repeat_interleave(
        torch.arange(len(names)), torch.tensor(sizes, dtype=torch.long)
    )
    mins = [maskset.mask(n).min_keep for n in names]
    dense = float(cost_model.dense)
    budget = target * dense
    eps = 1e-9 * dense

    def total(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(cost_model.total_flat(x))

    def kept(x: torch.Tensor) -> Dict[str, int]:
        counts = torch.zeros(len(names), dtype=torch.float64).index_add(
            0, gidx, x
        )
        return {n: int(round(c)) for n, c in zip(names, counts.tolist())}

    before = kept(b)
    cur = total(b)
    psi_before = cur / dense
    dropped = restored = 0
    while cur > budget + eps:
        x = b.clone().requires_grad_(True)
        cost_model.total_flat(x).backward()
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
        dropped += len(chosen)
        cur = total(b)
    if channel_multiple > 1:
        cur, d, r = _round_groups(b, m, sizes, mins, int(channel_multiple),
                                  total, budget + eps)
        dropped += d
        restored += r
    elif cur < budget - tol * dense:
        idx = (b == 0).nonzero().squeeze(1)
        order = idx[torch.argsort(-m[idx], stable=True)].tolist()
        for c in order:
            b[c] = 1.0
            t = total(b)
            if t <= budget + eps:
                cur = t
                restored += 1
            else:
                b[c] = 0.0
    reached = cur <= budget + eps
    if not reached:
        warnings.warn(
            f'project_to_target: psi {cur / dense:.4f} stays above '
            f'the target {target}: the remaining channels are '
            'protected by min_channels or fixed'
        )
    if freeze:
        out, off = {}, 0
        for n, s in zip(names, sizes):
            dev = maskset.mask(n).frozen_binary.device
            out[n] = b[off : off + s].to(dev, torch.float32)
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
    )


def _round_groups(b, m, sizes, mins, q, total, limit):
    """Round kept counts to multiples of ``q`` in place; see
    `project_to_target`. Returns (cost, dropped, restored)."""
    dropped = restored = 0
    spans, off = [], 0
    for s in sizes:
        spans.append((off, s))
        off += s
    for gi, (o, s) in enumerate(spans):
        k = int(b[o:o + s].sum())
        if s < q or k == s:
            continue
        k_new = min(s, max((k // q) * q, -(-mins[gi] // q) * q, q))
        if k_new == k:
            continue
        # Keep the kept channels first, then by M.
        order = torch.argsort(-(m[o:o + s] + 2.0 * b[o:o + s]), stable=True)
        new = torch.zeros(s, dtype=b.dtype)
        new[order[:k_new]] = 1.0
        dropped += int((b[o:o + s] - new).clamp(min=0).sum())
        restored += int((new - b[o:o + s]).clamp(min=0).sum())
        b[o:o + s] = new
    cur = total(b)
    # Rounding up (a group left with fewer than q channels goes back to q, or
    # to its min_channels multiple) can overshoot: take whole blocks off
    # again, least M per unit of saved cost first, as the drop phase does.
    while cur > limit:
        best = None
        for gi, (o, s) in enumerate(spans):
            k = int(b[o:o + s].sum())
            if s < q or k % q or k - q < max(q, -(-mins[gi] // q) * q):
                continue
            on = (b[o:o + s] == 1).nonzero().squeeze(1)
            block = on[torch.argsort(m[o:o + s][on], stable=True)][:q] + o
            b[block] = 0.0
            t = total(b)
            b[block] = 1.0
            if t >= cur:
                continue
            score = float(m[block].mean()) / (cur - t)
            if best is None or score < best[0]:
                best = (score, block, t)
        if best is None:
            break
        b[best[1]] = 0.0
        cur = best[2]
        dropped += len(best[1])
    while True:
        best = None
        for o, s in spans:
            k = int(b[o:o + s].sum())
            if s < q or k == s:
                continue
            off_idx = (b[o:o + s] == 0).nonzero().squeeze(1)
            cand = off_idx[torch.argsort(-m[o:o + s][off_idx], stable=True)]
            block = cand[:q] if s - k >= q else cand
            block = block + o
            b[block] = 1.0
            t = total(b)
            b[block] = 0.0
            if t <= limit:
                score = float(m[block].mean())
                if best is None or score > best[0]:
                    best = (score, block, t)
        if best is None:
            return cur, dropped, restored
        b[best[1]] = 1.0
        cur = best[2]
        restored += len(best[1])
