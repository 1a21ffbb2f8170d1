"""Tracer rules for indexing: ``narrow`` / ``select`` and ``__getitem__``.

Same contract as the rules of `trace_ops` (``(ctx, base, rev, args, kwargs,
out, where)``; True, a reason string, or False). Kept apart because a
channel slice must stay valid after pruning, which needs its own segment
arithmetic (`_channel_slice`).
"""

from typing import TYPE_CHECKING, Any, Callable, Dict, List

import torch
from torch import Tensor

from .trace_ops import FIXED, arg

if TYPE_CHECKING:
    from .tracer import TraceContext


def _op_narrow(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    x = args[0] if args else None
    info = ctx.info(x) if isinstance(x, Tensor) else None
    if info is None or not isinstance(out, Tensor):
        return False
    dim = arg(args, kwargs, 1, 'dim') % x.dim()
    if dim == info.cdim:
        return False
    p = info.cdim - 1 if (base == 'select' and dim < info.cdim) else info.cdim
    ctx.set(out, info.segs, p)
    return True


def _fixed_run(segs, lo: int, hi: int) -> bool:
    """Whether channels ``[lo, hi)`` of ``segs`` are all fixed."""
    pos = 0
    for s in segs:
        if s.gid != FIXED and pos < hi and pos + s.length > lo:
            return False
        pos += s.length
    return True


def _cut(segs, lo: int, hi: int):
    """Channels ``[lo, hi)`` of ``segs`` (segments split where needed)."""
    out, pos = [], 0
    for s in segs:
        a, b = max(lo, pos), min(hi, pos + s.length)
        if a < b:
            part = s._replace(start=s.start + a - pos, length=b - a)
            if part.dirty is not None and part.dirty[0] == 'm':
                part = part._replace(dirty=('m', s.dirty[1],
                                            s.dirty[2] + a - pos))
            out.append(part)
        pos += s.length
    return tuple(out)


def _channel_slice(segs, sl: slice, c: int):
    """Segments ``sl`` selects from a channel axis of width ``c``, or None.

    The export keeps the code's slice as written, so each bound must select
    the same channels after pruning: a bound ``k >= 0`` needs channels
    ``[0, k)`` fixed, a bound ``-k`` needs the last ``k`` fixed (SOLOv2's
    ``feat[:, :-2]`` drops two fixed coordinate channels).
    """
    if sl.step not in (None, 1):
        return None
    for bound in (sl.start, sl.stop):
        if bound is None:
            continue
        if not isinstance(bound, int):
            return None
        lo, hi = (0, min(bound, c)) if bound >= 0 else (max(c + bound, 0), c)
        if not _fixed_run(segs, lo, hi):
            return None
    lo, hi, _ = sl.indices(c)
    return _cut(segs, lo, max(lo, hi))


def _index_dims(i) -> int:
    """Axes one index consumes: a bool mask its own rank, anything else 1."""
    return i.dim() if isinstance(i, Tensor) and i.dtype == torch.bool else 1


def _op_getitem(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    """Basic indexing, plus one integer / bool tensor index before the
    channel axis (``feats[inds]`` on RoI features)."""
    x, idx = args[0], args[1]
    info = ctx.info(x) if isinstance(x, Tensor) else None
    if info is None or not isinstance(out, Tensor):
        return False
    idx = idx if isinstance(idx, tuple) else (idx,)
    if sum(1 for i in idx if isinstance(i, Tensor)) > 1 or any(
        not (i is None or i is Ellipsis
             or isinstance(i, (int, slice, Tensor)))
        or isinstance(i, bool)
        for i in idx
    ):
        return False
    used = sum(_index_dims(i) for i in idx
               if i is not None and i is not Ellipsis)
    expanded: List[Any] = []
    for i in idx:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (x.dim() - used))
        else:
            expanded.append(i)
    d_in = d_out = 0
    p, segs = None, info.segs
    for i in expanded:
        if i is None:
            d_out += 1
            continue
        if isinstance(i, Tensor):
            if d_in <= info.cdim < d_in + _index_dims(i):
                return 'are indexed by a tensor'
            d_in += _index_dims(i)
            d_out += 1 if i.dtype == torch.bool else i.dim()
            continue
        if d_in == info.cdim:
            if not isinstance(i, slice):
                return 'are selected one by one by __getitem__'
            segs = _channel_slice(info.segs, i, x.shape[d_in])
            if segs is None:
                return 'are sliced by __getitem__ at prunable positions'
            p = d_out
        d_in += 1
        d_out += 0 if isinstance(i, int) else 1
    if p is None:
        p = d_out + (info.cdim - d_in)
    ctx.set(out, segs, p)
    return True


#: Indexing rules by normalised function name (merged into `trace_ops.OPS`
#: by the tracer).
INDEX_OPS: Dict[str, Callable] = {
    'narrow': _op_narrow, 'select': _op_narrow, 'index_select': _op_narrow,
    'getitem': _op_getitem,
}
