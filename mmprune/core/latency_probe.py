"""Measure a `LatencyTable`: every timed layer of a plan at its widths.

One forward records each plan layer's input shape per call. Layers of the
same kind and shape share an entry (`layer_key`), timed once: a copy of the
module, sliced by the export's own channel slicers to the first ``c``
channels of one axis, runs on a random input of that width, ``warmup`` times
and then ``runs`` times; the entry keeps the median. A deformable conv is
timed whole, its offset conv included (sliced with its input), so the offset
conv's own row says ``included_in``. A fixed axis is timed at full width
only. The widths of one entry are timed in turns (`time_rounds`), so the
machine's drift does not bend the curve. Widths (`channel_grid`) are the
multiples of ``step`` (the hook's
``channel_multiple``), thinned to at most ``max_points`` per axis, plus the
full width.
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .handlers import is_deform_conv_pack
from .latency import TIMED_KINDS, LatencyTable, device_description
from .plan import PrunePlan
from .surgery import module_widths, slice_module

Progress = Optional[Callable[[int, int], None]]


def channel_grid(size: int, step: int = 16, max_points: int = 32
                 ) -> List[int]:
    """Ascending widths to time for an axis of ``size`` channels.

    Multiples of ``step`` (every ``k``-th one when there would be more than
    ``max_points``), and ``size`` itself; ``[size]`` for a thin axis.
    """
    if step < 1 or max_points < 1:
        raise ValueError(f'channel_grid: step and max_points must be >= 1, '
                         f'got {step}, {max_points}')
    stride = step * max(1, -(-size // (step * max_points)))
    return sorted({c for c in range(stride, size, stride)} | {size})


def _sync(device: str) -> None:
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def _attrs(m: nn.Module) -> str:
    parts = []
    for a in ('kernel_size', 'stride', 'padding', 'dilation', 'groups',
              'output_padding', 'deform_groups', 'num_groups', 'eps'):
        v = getattr(m, a, None)
        if v is not None:
            parts.append(f'{a}={tuple(v) if isinstance(v, list) else v}')
    bias = getattr(m, 'bias', None)
    parts.append(f'bias={bias is not None and bias is not False}')
    return ','.join(parts)


def layer_key(m: nn.Module, kind: str, shape: Sequence[int]) -> str:
    """Entry key: the module's class, widths, conv attributes and input
    shape, e.g. ``Conv2d|conv|16->32|kernel_size=(3, 3),...|1x16x64x64``."""
    ci, co = module_widths(m)
    return (f'{type(m).__name__}|{kind}|{ci}->{co}|{_attrs(m)}|'
            f"{'x'.join(str(int(s)) for s in shape)}")


def _record_inputs(model: nn.Module, names: Sequence[str],
                   run: Callable[[], object]) -> Dict[str, List[tuple]]:
    shapes: Dict[str, List[tuple]] = {n: [] for n in names}
    handles = []
    for n in names:
        def hook(_m, args, _n=n):
            if args and torch.is_tensor(args[0]):
                shapes[_n].append(tuple(args[0].shape))
        handles.append(model.get_submodule(n).register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in handles:
            h.remove()
    return shapes


def _narrow(m: nn.Module, axis: str, c: int, one_axis: bool) -> nn.Module:
    """A copy of ``m`` keeping its first ``c`` channels of ``axis``."""
    small = copy.deepcopy(m)
    keep = list(range(c))
    in_keep = keep if (axis == 'in' or one_axis) else None
    out_keep = keep if (axis == 'out' or one_axis) else None
    slice_module(small, in_keep, out_keep)
    off = getattr(small, 'conv_offset', None)
    if in_keep is not None and is_deform_conv_pack(small) and off is not None:
        slice_module(off, in_keep, None)
    return small


def _probe_fn(m: nn.Module, shape: tuple, channel_dim: int, axis: str,
              c: int, one_axis: bool, device: str) -> Callable[[], object]:
    """``m`` narrowed to ``c`` channels of ``axis`` (0: as it is), bound to
    a random input of the matching width."""
    small = _narrow(m, axis, c, one_axis) if c else m
    s = list(shape)
    if c and (axis == 'in' or one_axis):
        s[channel_dim] = c
    x = torch.randn(s, device=device)
    return lambda: small(x)


def time_rounds(fns: Sequence[Callable[[], object]], warmup: int, runs: int,
                device: str = 'cpu',
                progress: Optional[Callable[[], None]] = None
                ) -> List[List[float]]:
    """Wall times (ms) of several callables timed in turns.

    Each of ``runs`` rounds times every callable once, in a rotating order,
    so slow drift and other processes' load hit all of them alike (a curve
    measured width after width would bend with the machine's drift).
    """
    times: List[List[float]] = [[] for _ in fns]
    with torch.inference_mode():
        for fn in fns:
            for _ in range(warmup):
                fn()
            if progress:
                progress()
        for r in range(runs):
            for k in range(len(fns)):
                i = (k + r) % len(fns)
                _sync(device)
                t = time.perf_counter()
                fns[i]()
                _sync(device)
                times[i].append(1e3 * (time.perf_counter() - t))
    return times


def profile_layers(model: nn.Module, names: Sequence[str],
                   run: Callable[[], object], warmup: int, runs: int,
                   device: str = 'cpu') -> Tuple[float, Dict[str, List[float]]]:
    """Time the whole forward and, inside it, every call of ``names``.

    Returns the median forward time (ms) and, per module, the median time
    (ms) of each of its calls over the ``runs`` timed forwards. Timing the
    layers in their real context (caches, allocator, thread pool as the model
    leaves them) and in the same forwards as the total keeps ``other_ms``
    (total minus layers) free of drift between separate measurements.
    """
    times: Dict[str, List[List[float]]] = {n: [] for n in names}
    start: Dict[str, List[float]] = {n: [] for n in names}
    current: Dict[str, List[float]] = {n: [] for n in names}
    handles = []
    for n in names:
        m = model.get_submodule(n)

        def pre(_m, _a, _n=n):
            _sync(device)
            start[_n].append(time.perf_counter())

        def post(_m, _a, _o, _n=n):
            _sync(device)
            current[_n].append(1e3 * (time.perf_counter() - start[_n].pop()))
        handles += [m.register_forward_pre_hook(pre),
                    m.register_forward_hook(post)]
    totals = []
    try:
        with torch.inference_mode():
            for i in range(warmup + runs):
                for n in names:
                    current[n] = []
                _sync(device)
                t = time.perf_counter()
                run()
                _sync(device)
                if i >= warmup:
                    totals.append(1e3 * (time.perf_counter() - t))
                    for n in names:
                        times[n].append(current[n])
    finally:
        for h in handles:
            h.remove()
    per_call = {n: [float(statistics.median(c)) for c in zip(*times[n])]
                for n in names}
    return float(statistics.median(totals)), per_call


def _axis_prunable(cmap) -> bool:
    return any(s.group is not None for s in cmap)


def measure_latency_table(
        model: nn.Module, plan: PrunePlan, run: Callable[[], object], *,
        input_shape: Sequence[int], device: str = 'cpu', step: int = 16,
        max_points: int = 32, warmup: int = 2, runs: int = 5,
        progress: Progress = None) -> LatencyTable:
    """Time every timed layer of ``plan`` in ``model`` at its widths.

    Args:
        model: the traced model, in eval mode, on ``device``.
        plan: its `PrunePlan` (which layers, which axes are prunable).
        run: one raw forward of ``model`` at ``input_shape``.
        input_shape: ``[N, C, H, W]`` of that forward (saved in the meta).
        step / max_points: the width grid (`channel_grid`).
        warmup / runs: calls before timing, timed calls (median kept).
        progress: ``progress(done, total)`` after each timing.

    Returns:
        The table. Its curves come from the probes above; each layer call's
        full-width time (``layers[name]['ms']``), ``dense_ms`` and
        ``other_ms`` (``dense_ms`` minus those calls) from `profile_layers`.
    """
    timed = [lay for lay in plan.layers.values() if lay.kind in TIMED_KINDS]
    packs = {lay.name for lay in timed
             if is_deform_conv_pack(model.get_submodule(lay.name))}
    shapes = _record_inputs(model, [lay.name for lay in timed], run)
    entries: Dict[str, dict] = {}
    layers: Dict[str, dict] = {}
    jobs: Dict[str, Tuple] = {}
    for lay in timed:
        parent = lay.name.rpartition('.')[0]
        if lay.name.endswith('.conv_offset') and parent in packs:
            layers[lay.name] = dict(included_in=parent)
            continue
        m = model.get_submodule(lay.name)
        one = lay.kind == 'norm' or lay.depthwise
        keys = []
        for shape in shapes[lay.name]:
            key = layer_key(m, lay.kind, shape)
            keys.append(key)
            if key not in jobs:
                axes = {'out': channel_grid(lay.out_channels, step, max_points)
                        if _axis_prunable(lay.out_map) else [lay.out_channels]}
                if not one:
                    axes['in'] = (channel_grid(lay.in_channels, step,
                                               max_points)
                                  if _axis_prunable(lay.in_map)
                                  else [lay.in_channels])
                jobs[key] = (m, shape, lay.channel_dim, one, axes)
        if not keys:
            raise ValueError(f'measure_latency_table: {lay.name} did not run '
                             'in the forward; trace and run must match')
        layers[lay.name] = dict(rows=keys)
    total = sum(len(c) - 1 for *_, axes in jobs.values()
                for c in axes.values()) + len(jobs)
    done = [0]

    def step_done():
        done[0] += 1
        if progress:
            progress(done[0], total)

    for key, (m, shape, cdim, one, axes) in jobs.items():
        probes = [('out', 0)] + [(axis, c) for axis, widths in axes.items()
                                 for c in widths[:-1]]
        fns = [_probe_fn(m, shape, cdim, axis, c, one, device)
               for axis, c in probes]
        ms = [float(statistics.median(t)) for t in
              time_rounds(fns, warmup, runs, device, step_done)]
        got = dict(zip(probes, ms))
        full = got[('out', 0)]
        e = dict(ms=full, one_axis=one)
        for axis, widths in axes.items():
            e[axis] = [[c, full if c == widths[-1] else got[(axis, c)]]
                       for c in widths]
        e.setdefault('in', [[int(shape[cdim]), full]])
        entries[key] = e
    top = [n for n, lay in layers.items() if 'rows' in lay]
    dense_ms, inside = profile_layers(model, top, run, warmup, runs, device)
    for n in top:
        if len(inside[n]) != len(layers[n]['rows']):
            raise RuntimeError(f'measure_latency_table: {n} ran '
                               f'{len(inside[n])} times in the profiled '
                               f"forward, {len(layers[n]['rows'])} in the "
                               'recorded one; the forward must be '
                               'deterministic')
        layers[n]['ms'] = inside[n]
    rows_ms = sum(sum(v) for v in inside.values())
    meta = device_description(device)
    meta.update(input_shape=[int(v) for v in input_shape], step=step,
                max_points=max_points, warmup=warmup, runs=runs,
                dense_ms=dense_ms, layers_ms=rows_ms,
                other_ms=max(dense_ms - rows_ms, 0.0),
                entries=len(entries), timings=total)
    return LatencyTable(meta, entries, layers)


__all__ = ['channel_grid', 'layer_key', 'measure_latency_table',
           'profile_layers', 'time_rounds']
