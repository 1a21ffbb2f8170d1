"""The differentiable hardware cost psi (METHOD.md section 3a).

For every conv, deformable conv (main and offset conv), transposed conv and
linear layer ``l`` of a `PrunePlan`:

    MACs_l = k_h * k_w * (c_in_active / groups) * c_out_active * positions_l

with ``c_in_active`` / ``c_out_active`` the sums of the binary masks over the
layer's input / output channels (fixed channels count 1 each) and
``positions_l`` the output positions per sample (``H_out * W_out`` summed over
all calls; input positions for a transposed conv). A depthwise layer costs
``k_h * k_w * c_active * positions``. ``psi = sum MACs(B) / sum MACs(1)`` is
bilinear in the masks, so it is differentiable through the STE.

The ``'params'`` cost counts conv / linear weights and biases the same way.
The ``'latency'`` cost is the predicted latency (ms) of a measured
`LatencyTable` (latency.py): every timed layer, norms included, is a row
``t_full * r_in(c_in) * r_out(c_out)`` of the same active channel counts,
plus the table's ``other_ms`` (the untimed ops between layers) scaled by
the norms' predicted time over their dense time.
"""

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

import torch
from torch import Tensor

from .latency import LatencyTable, interp_rows, latency_rows
from .plan import PrunePlan

COSTS = ('macs', 'params', 'latency')


@dataclass
class LayerCost:
    """Cost of one layer before and after pruning (per input sample)."""

    name: str
    type: str
    kind: str
    in_kept: int
    in_total: int
    out_kept: int
    out_total: int
    macs_dense: int
    macs: int
    params_dense: int
    params: int


class CostModel:
    """MACs / parameter counts of a plan's layers as functions of the masks.

    Args:
        plan: the `PrunePlan` (its layer positions fix the input shape).
        cost: ``'macs'`` (default), ``'params'`` or ``'latency'``: which
            total ``psi`` uses.
        latency_table: the `LatencyTable` the ``'latency'`` cost predicts
            from (required for it, ignored otherwise).

    ``binaries`` arguments are ``{group: [C] tensor}`` for every group of the
    plan (e.g. ``MaskSet.binaries()``). Totals are float64 tensors.
    """

    def __init__(self, plan: PrunePlan, cost: str = 'macs',
                 latency_table: Optional[LatencyTable] = None):
        if cost not in COSTS:
            raise ValueError(
                f'CostModel: cost must be one of {COSTS}, got {cost!r}'
            )
        if cost == 'latency' and latency_table is None:
            raise ValueError(
                "CostModel: cost='latency' needs a latency_table (build one "
                'with tools/analysis_tools/build_latency_table.py)'
            )
        self.plan = plan
        self.cost = cost
        self.group_names = list(plan.groups)
        offsets, off = {}, 0
        for n in self.group_names:
            offsets[n] = off
            off += plan.groups[n].size
        self.num_channels = off
        self.layers = [x for x in plan.layers.values() if x.kind != 'norm']
        coef_m, coef_p, bias, div, dw = [], [], [], [], []
        for lay in self.layers:
            k = 1
            for s in lay.kernel:
                k *= int(s)
            coef_m.append(float(k * lay.positions))
            coef_p.append(float(k))
            bias.append(1.0 if lay.bias else 0.0)
            div.append(1.0 if lay.depthwise else float(lay.groups))
            dw.append(lay.depthwise)
        self._host = dict(
            coef_m=torch.tensor(coef_m, dtype=torch.float64),
            coef_p=torch.tensor(coef_p, dtype=torch.float64),
            bias=torch.tensor(bias, dtype=torch.float64),
            div=torch.tensor(div, dtype=torch.float64),
            dw=torch.tensor(dw, dtype=torch.bool),
            **_axis_index(self.layers, offsets),
        )
        self.latency_table = latency_table
        self.other_ms = 0.0
        if cost == 'latency':
            # Norms are timed too: they scale with the kept channels.
            self.timed = list(plan.layers.values())
            rows = latency_rows(latency_table, self.timed)
            self._host.update({f'lat_{k}': v for k, v in rows.items()})
            self._host.update({f'lat_{k}': v for k, v in _axis_index(
                self.timed, offsets).items()})
            self.other_ms = max(
                float(latency_table.meta.get('other_ms', 0.0)), 0.0)
            # Host-side once: latency_flat runs every iteration (no syncs).
            self.dense_norm_ms = float(
                rows['full_ms'][rows['is_norm']].sum())
        self._dev: Dict[torch.device, Dict[str, Tensor]] = {}
        # Dense totals in exact integer arithmetic.
        self.dense_macs = sum(self._layer_int(lay)[0] for lay in self.layers)
        self.dense_params = sum(self._layer_int(lay)[1] for lay in self.layers)
        self.dense_latency = (
            float(self._host['lat_full_ms'].sum()) + self.other_ms
            if cost == 'latency' else None
        )
        if self.dense_macs <= 0:
            raise ValueError(
                'CostModel: the plan has no layer with MACs; was '
                'the trace empty?'
            )

    @staticmethod
    def _layer_int(lay, cin: Optional[int] = None, cout: Optional[int] = None):
        cin = lay.in_channels if cin is None else cin
        cout = lay.out_channels if cout is None else cout
        k = 1
        for s in lay.kernel:
            k *= int(s)
        if lay.depthwise:
            macs = k * cout * lay.positions
            params = k * cout + (cout if lay.bias else 0)
        else:
            macs = k * (cin // lay.groups) * cout * lay.positions
            params = k * (cin // lay.groups) * cout + (cout if lay.bias else 0)
        return macs, params

    @property
    def dense(self):
        """Unpruned total in the chosen cost (MACs or params per sample, or
        predicted ms per batch of the table's input)."""
        if self.cost == 'latency':
            return self.dense_latency
        return self.dense_macs if self.cost == 'macs' else self.dense_params

    def ones(self, device=None) -> Dict[str, Tensor]:
        """All-ones binaries (the unpruned model)."""
        return {
            n: torch.ones(g.size, device=device)
            for n, g in self.plan.groups.items()
        }

    def _flat(self, binaries: Mapping[str, Tensor]) -> Tensor:
        missing = [n for n in self.group_names if n not in binaries]
        extra = [n for n in binaries if n not in self.plan.groups]
        if missing or extra:
            raise KeyError(
                f'CostModel: binaries must cover exactly the plan '
                f'groups; missing {missing[:5]}, unknown {extra[:5]}'
            )
        parts = []
        for n in self.group_names:
            b = binaries[n]
            if b.shape != (self.plan.groups[n].size,):
                raise ValueError(
                    f'CostModel: binaries[{n!r}] has shape '
                    f'{tuple(b.shape)}, expected '
                    f'({self.plan.groups[n].size},)'
                )
            parts.append(b.to(torch.float64))
        if not parts:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat(parts)

    def _tensors(self, device) -> Dict[str, Tensor]:
        t = self._dev.get(device)
        if t is None:
            t = {k: v.to(device) for k, v in self._host.items()}
            self._dev[device] = t
        return t

    def _active(self, flat: Tensor, prefix: str = ''):
        t = self._tensors(flat.device)
        n = t[prefix + 'const_in'].shape[0]
        cin = t[prefix + 'const_in'] + torch.zeros(
            n, dtype=torch.float64, device=flat.device
        ).index_add(0, t[prefix + 'in_layer'], flat[t[prefix + 'in_ch']])
        cout = t[prefix + 'const_out'] + torch.zeros(
            n, dtype=torch.float64, device=flat.device
        ).index_add(0, t[prefix + 'out_layer'], flat[t[prefix + 'out_ch']])
        return t, cin, cout

    def latency_flat(self, flat: Tensor) -> Tensor:
        """Predicted latency (ms, float64 scalar) of the masks ``flat``."""
        t, cin, cout = self._active(flat.to(torch.float64), 'lat_')
        lay = t['lat_layer']
        r_in = interp_rows(cin[lay], t['lat_xin'], t['lat_yin'])
        r_in = torch.where(t['lat_one_axis'], torch.ones_like(r_in), r_in)
        r_out = interp_rows(cout[lay], t['lat_xout'], t['lat_yout'])
        rows = t['lat_full_ms'] * r_in * r_out
        if not self.other_ms:
            return rows.sum()
        # Ops between the layers (activations, adds, upsampling) run over
        # the same tensors as the norms: their time follows the norms'.
        norm = t['lat_is_norm']
        if self.dense_norm_ms <= 0:
            return rows.sum() + self.other_ms
        return rows.sum() + self.other_ms * (
            rows[norm].sum() / self.dense_norm_ms)

    def latency(self, binaries: Mapping[str, Tensor]) -> Tensor:
        """Predicted latency (ms) under ``binaries`` (``cost='latency'``)."""
        if self.cost != 'latency':
            raise ValueError("CostModel.latency needs cost='latency'")
        return self.latency_flat(self._flat(binaries))

    def _per_layer(self, flat: Tensor):
        t, cin, cout = self._active(flat)
        cin_eff = torch.where(t['dw'], torch.ones_like(cin), cin / t['div'])
        macs = t['coef_m'] * cin_eff * cout
        params = t['coef_p'] * cin_eff * cout + t['bias'] * cout
        return cin, cout, macs, params

    def macs(self, binaries: Mapping[str, Tensor]) -> Tensor:
        """Total MACs per sample under ``binaries`` (float64 scalar)."""
        return self._per_layer(self._flat(binaries))[2].sum()

    def params(self, binaries: Mapping[str, Tensor]) -> Tensor:
        """Conv / linear weights and biases under ``binaries`` (float64)."""
        return self._per_layer(self._flat(binaries))[3].sum()

    def total(self, binaries: Mapping[str, Tensor]) -> Tensor:
        """Total in the chosen cost."""
        return self.total_flat(self._flat(binaries))

    def psi(self, binaries: Mapping[str, Tensor]) -> Tensor:
        """``total(binaries) / total(all ones)``, float64 scalar in [0, 1]."""
        return self.total(binaries) / float(self.dense)

    def total_flat(self, flat: Tensor) -> Tensor:
        """`total` on the masks concatenated in ``group_names`` order."""
        if self.cost == 'latency':
            return self.latency_flat(flat)
        per = self._per_layer(flat.to(torch.float64))
        return (per[2] if self.cost == 'macs' else per[3]).sum()

    def marginals(
        self, binaries: Optional[Mapping[str, Tensor]] = None
    ) -> Tensor:
        """``d psi / d B_c`` for every channel, in ``group_names`` order.

        Returns a float64 ``[num_channels]`` tensor (detached), evaluated at
        ``binaries`` (default: the dense model). Since ``psi`` is bilinear,
        a channel's marginal is the cost share it adds at those masks.
        """
        if binaries is None:
            binaries = self.ones()
        flat = self._flat({k: v.detach() for k, v in binaries.items()})
        flat = flat.clone().requires_grad_(True)
        with torch.enable_grad():
            psi = self.total_flat(flat) / float(self.dense)
            (grad,) = torch.autograd.grad(psi, flat)
        return grad.detach()

    def breakdown(
        self, binaries: Optional[Mapping[str, Tensor]] = None
    ) -> List[LayerCost]:
        """Per-layer channels kept and MACs / parameters before and after."""
        if binaries is None:
            binaries = self.ones()
        with torch.no_grad():
            flat = self._flat({k: v.detach() for k, v in binaries.items()})
            cin, cout, _, _ = self._per_layer(flat)
        out = []
        for i, lay in enumerate(self.layers):
            ci, co = int(round(cin[i].item())), int(round(cout[i].item()))
            if lay.depthwise:
                ci = co
            m0, p0 = self._layer_int(lay)
            m1, p1 = self._layer_int(lay, ci, co)
            out.append(
                LayerCost(
                    lay.name,
                    lay.type,
                    lay.kind,
                    ci,
                    lay.in_channels,
                    co,
                    lay.out_channels,
                    m0,
                    m1,
                    p0,
                    p1,
                )
            )
        return out


def _axis_index(layers, offsets) -> Dict[str, Tensor]:
    """Index tensors that sum a flat mask vector into each layer's active
    input / output channel counts (fixed channels are constants)."""
    const_in, const_out = [], []
    in_layer, in_ch, out_layer, out_ch = [], [], [], []
    for i, lay in enumerate(layers):
        for cmap, consts, rows, chs in (
            (lay.in_map, const_in, in_layer, in_ch),
            (lay.out_map, const_out, out_layer, out_ch),
        ):
            c = 0
            for s in cmap:
                if s.group is None:
                    c += s.length
                else:
                    base = offsets[s.group] + s.start
                    rows.extend([i] * s.length)
                    chs.extend(range(base, base + s.length))
            consts.append(float(c))
    return dict(
        const_in=torch.tensor(const_in, dtype=torch.float64),
        const_out=torch.tensor(const_out, dtype=torch.float64),
        in_layer=torch.tensor(in_layer, dtype=torch.long),
        in_ch=torch.tensor(in_ch, dtype=torch.long),
        out_layer=torch.tensor(out_layer, dtype=torch.long),
        out_ch=torch.tensor(out_ch, dtype=torch.long),
    )
