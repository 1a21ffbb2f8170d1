"""A measured per-layer latency table, and psi as predicted latency.

The table (built by `mmprune.core.latency_probe.measure_latency_table`, CLI
``tools/analysis_tools/build_latency_table.py``) holds, for every distinct
layer kind and shape of a traced model, the measured latency (ms) of that
layer at a grid of channel widths:

- ``in``: the input width varied, the output at full width;
- ``out``: the output width varied, the input at full width;
- a per-channel layer (depthwise conv, norm) has one axis, ``out``.

A layer's predicted latency at ``c_in`` / ``c_out`` kept channels is the
separable form::

    t(c_in, c_out) = t_full * r_in(c_in) * r_out(c_out),
    r_in(c) = t(c, C_out) / t_full,   r_out(c) = t(C_in, c) / t_full

with ``r_*`` piecewise linear between the measured widths (and through 0 at
0 channels). It is exact on the two measured lines, bilinear in MAC-like
costs, and it carries the staircase of the hardware's channel blocks when
the grid is the ``channel_multiple`` points: predictions at multiples of the
step are measurements, and the slope between them is the marginal latency of
one channel. Every recorded call of a layer is its own row. Layers not in
the plan's groups (fixed axes) and ops that are not layers (activations,
upsampling, adds) enter as constants: the latter as ``other_ms``, the
measured end-to-end dense latency minus the sum of the layer rows.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

TABLE_FORMAT = 'mmprune-latency-table/1'

#: Layer kinds a table times (`LayerSpec.kind`); a DCN's offset conv is timed
#: with its DCN (its table row says ``included_in``).
TIMED_KINDS = ('conv', 'deconv', 'linear', 'norm')


def device_description(device: str = 'cpu',
                       threads: Optional[int] = None) -> Dict[str, Any]:
    """What a latency was measured on: device, its name, threads, torch."""
    device = str(device)
    if device.startswith('cuda'):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = platform.processor() or platform.machine()
    return dict(device=device.split(':')[0], device_name=name,
                threads=int(torch.get_num_threads() if threads is None
                            else threads),
                torch=torch.__version__)


def describe(meta: Dict[str, Any]) -> str:
    """One line: ``cpu (x86_64), 1 thread(s), torch 2.x, input 1x3x64x64``."""
    shape = meta.get('input_shape')
    shape = 'x'.join(str(v) for v in shape) if shape else '?'
    return (f"{meta.get('device', '?')} ({meta.get('device_name', '?')}), "
            f"{meta.get('threads', '?')} thread(s), torch "
            f"{meta.get('torch', '?')}, input {shape}")


@dataclass
class LatencyTable:
    """Measured layer latencies of one model at one input shape.

    Attributes:
        meta: `device_description` plus ``input_shape`` ``[N, C, H, W]``,
            the grid ``step``, ``warmup`` / ``runs``, ``dense_ms`` (the whole
            raw forward, measured) and ``other_ms`` (its part outside the
            layer rows, a constant of the prediction).
        entries: ``{key: {'ms': t_full, 'in': [[c, ms], ...], 'out': ...}}``;
            a key names a layer kind and shape (`latency_probe.layer_key`).
        layers: ``{module name: {'rows': [key, ...], 'ms': [t, ...]}}``
            (one entry key and one in-model full-width time per call; without
            ``ms`` the entry's own ``ms``) or ``{'included_in': name}`` for a
            layer timed inside another.
    """

    meta: Dict[str, Any]
    entries: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    layers: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    source: str = '<memory>'

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able form (`save` writes it)."""
        return dict(format=TABLE_FORMAT, meta=self.meta,
                    entries=self.entries, layers=self.layers)

    def save(self, path: str) -> None:
        """Write the table as JSON."""
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], source: str = '<memory>'
                  ) -> 'LatencyTable':
        """Validate and wrap a `to_dict` result; errors name ``source``."""
        if not isinstance(d, dict) or d.get('format') != TABLE_FORMAT:
            got = d.get('format') if isinstance(d, dict) else type(d).__name__
            raise ValueError(f'{source}: not a latency table (format '
                             f'{got!r}, expected {TABLE_FORMAT!r}); build one '
                             'with tools/analysis_tools/build_latency_table.py')
        for k in ('meta', 'entries', 'layers'):
            if not isinstance(d.get(k), dict):
                raise ValueError(f'{source}: key {k!r} must be an object')
        for key, e in d['entries'].items():
            for axis in ('in', 'out'):
                pts = e.get(axis)
                if not (isinstance(pts, list) and pts and all(
                        isinstance(p, list) and len(p) == 2 for p in pts)):
                    raise ValueError(f'{source}: entries[{key!r}][{axis!r}] '
                                     'must be a list of [channels, ms] pairs')
                cs = [p[0] for p in pts]
                if cs != sorted(set(cs)) or cs[0] < 1:
                    raise ValueError(f'{source}: entries[{key!r}][{axis!r}] '
                                     'channels must rise strictly from >= 1')
            if not float(e.get('ms', 0)) > 0:
                raise ValueError(f'{source}: entries[{key!r}]["ms"] must be '
                                 '> 0')
        for name, lay in d['layers'].items():
            if 'ms' in lay and len(lay['ms']) != len(lay.get('rows', [])):
                raise ValueError(f'{source}: layers[{name!r}] has '
                                 f"{len(lay['ms'])} times for "
                                 f"{len(lay.get('rows', []))} calls")
            for key in lay.get('rows', []):
                if key not in d['entries']:
                    raise ValueError(f'{source}: layers[{name!r}] names '
                                     f'entry {key!r}, which is missing')
        return cls(d['meta'], d['entries'], d['layers'], source)

    @classmethod
    def load(cls, path: str) -> 'LatencyTable':
        """Read a table written by `save` (or the builder tool)."""
        try:
            with open(path, encoding='utf-8') as f:
                d = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'latency table {path} does not exist; build it with '
                'tools/analysis_tools/build_latency_table.py CONFIG --out '
                f'{path}') from None
        except json.JSONDecodeError as err:
            raise ValueError(f'{path}: line {err.lineno}: not JSON '
                             f'({err.msg})') from None
        return cls.from_dict(d, path)

    def mismatches(self, device: Dict[str, Any],
                   input_shape: Optional[Sequence[int]] = None) -> List[str]:
        """How ``device`` (a `device_description`) and ``input_shape``
        differ from what the table was measured on (empty: they match)."""
        out = [f'{k}: table {self.meta.get(k)!r}, here {device[k]!r}'
               for k in ('device', 'device_name', 'threads', 'torch')
               if k in device and self.meta.get(k) != device[k]]
        shape = self.meta.get('input_shape')
        if input_shape is not None and shape is not None and list(
                shape)[-2:] != list(input_shape)[-2:]:
            out.append(f'input shape: table {list(shape)}, here '
                       f'{list(input_shape)}')
        return out

    def foreign(self, device: Dict[str, Any],
                input_shape: Optional[Sequence[int]] = None) -> str:
        """A warning with both descriptions when the table was measured on
        another device or input shape; ``''`` when it matches."""
        diff = self.mismatches(device, input_shape)
        if not diff:
            return ''
        here = dict(device)
        if input_shape is not None:
            here['input_shape'] = list(input_shape)
        return (f'latency table {self.source} was measured on '
                f'{describe(self.meta)}; this run is on {describe(here)} '
                f"({'; '.join(diff)}). Its predicted latencies may not hold "
                'here: rebuild it with '
                'tools/analysis_tools/build_latency_table.py')


def monotone(ys: Sequence[float]) -> List[float]:
    """The closest non-decreasing sequence in least squares (pool adjacent
    violators): timing noise must not make a channel look free or make
    dropping it cost time."""
    blocks: List[List[float]] = []  # [mean, count]
    for y in ys:
        blocks.append([float(y), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, n2 = blocks.pop()
            m1, n1 = blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    out: List[float] = []
    for mean, n in blocks:
        out.extend([mean] * int(n))
    return out


#: Share of a curve that is proportional to the width (the MACs' shape),
#: so that every channel has a price even where the measured steps are flat.
SLOPE_FLOOR = 0.01


def _curve(points: Sequence[Sequence[float]], full_ms: float, size: int):
    """``(widths, ratios)`` through (0, 0) up to the full width, made
    non-decreasing (`monotone`) and strictly rising (`SLOPE_FLOOR`)."""
    cs = [0.0] + [float(c) for c, _ in points]
    if cs[-1] != size:
        raise ValueError(f'curve ends at {cs[-1]:g} channels, layer has '
                         f'{size}')
    rs = monotone([0.0] + [float(t) / full_ms for _, t in points])
    rs = [(1 - SLOPE_FLOOR) * r / rs[-1] + SLOPE_FLOOR * c / size
          for c, r in zip(cs, rs)]
    return cs, rs


def _padded(curves: List[tuple]):
    """``[R, P]`` width / ratio tensors; padding continues the last slope
    (widths +1 each, flat ratio) so every row is sorted."""
    p = max(len(c) for c, _ in curves)
    xs, ys = [], []
    for c, r in curves:
        pad = p - len(c)
        xs.append(c + [c[-1] + 1.0 + i for i in range(pad)])
        ys.append(r + [r[-1]] * pad)
    return (torch.tensor(xs, dtype=torch.float64),
            torch.tensor(ys, dtype=torch.float64))


def interp_rows(x, xs, ys):
    """Piecewise-linear ``y(x)`` per row, differentiable in ``x``.

    Args:
        x: ``[R]`` float64 widths (soft channel counts).
        xs, ys: ``[R, P]`` ascending knots and values (`_padded`).

    A width on a knot takes the segment below it, so the gradient there is
    the latency of the last channel kept.
    """
    p = xs.shape[1]
    idx = torch.searchsorted(xs, x.detach().unsqueeze(1)).clamp(1, p - 1)
    x0, x1 = xs.gather(1, idx - 1), xs.gather(1, idx)
    y0, y1 = ys.gather(1, idx - 1), ys.gather(1, idx)
    t = (x.unsqueeze(1) - x0) / (x1 - x0)
    return (y0 + t * (y1 - y0)).squeeze(1)


def latency_rows(table: LatencyTable, layers) -> Dict[str, Any]:
    """The rows a `CostModel` evaluates for ``layers`` (`LayerSpec` list).

    Returns ``layer`` (row -> index into ``layers``), ``full_ms`` ``[R]``,
    ``one_axis`` and ``is_norm`` ``[R]`` bools, and the padded ``in`` /
    ``out`` curves.
    Raises ValueError naming the layers the table lacks.
    """
    missing, rows, full, one, norm = [], [], [], [], []
    cin, cout = [], []
    for i, lay in enumerate(layers):
        if lay.kind not in TIMED_KINDS:
            continue
        rec = table.layers.get(lay.name)
        if rec is None:
            missing.append(lay.name)
            continue
        in_model = rec.get('ms') or [None] * len(rec.get('rows', []))
        for key, call_ms in zip(rec.get('rows', []), in_model):
            e = table.entries[key]
            probe_ms = float(e['ms'])
            # The curves' shape is the probe's; their scale is the layer's
            # time inside the model, where the builder measured it.
            ms = probe_ms if call_ms is None else float(call_ms)
            single = bool(e.get('one_axis', False))
            rows.append(i)
            full.append(ms)
            one.append(single)
            norm.append(lay.kind == 'norm')
            cout.append(_curve(e['out'], probe_ms, lay.out_channels))
            cin.append(([0.0, float(lay.in_channels)], [1.0, 1.0]) if single
                       else _curve(e['in'], probe_ms, lay.in_channels))
    if missing:
        raise ValueError(
            f'latency table {table.source} has no entry for {len(missing)} '
            f'layer(s) of this model (first: {missing[:5]}); it was built '
            'for another model or config: rebuild it with '
            'tools/analysis_tools/build_latency_table.py CONFIG')
    if not rows:
        raise ValueError(f'latency table {table.source}: no timed layer of '
                         'this model is in it')
    xin, yin = _padded(cin)
    xout, yout = _padded(cout)
    return dict(layer=torch.tensor(rows, dtype=torch.long),
                full_ms=torch.tensor(full, dtype=torch.float64),
                one_axis=torch.tensor(one, dtype=torch.bool),
                is_norm=torch.tensor(norm, dtype=torch.bool),
                xin=xin, yin=yin, xout=xout, yout=yout)


__all__ = ['LatencyTable', 'TABLE_FORMAT', 'TIMED_KINDS', 'describe',
           'device_description', 'interp_rows', 'latency_rows']
