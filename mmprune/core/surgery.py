"""Physical channel surgery: remove the channels whose binary mask is 0.

Given a model, its `PrunePlan` and the binary masks ``{group: [C] 0/1}``,
`prune_model` slices every layer the plan records, in place:

* a conv / transposed conv / linear loses the output channels of its
  ``out_map`` and the input channels of its ``in_map`` that are pruned
  (weights, bias, ``in_channels`` / ``out_channels`` / ``in_features`` ...);
* a depthwise conv (``groups == in == out``) is one axis: weight, bias and
  ``groups`` shrink together; another grouped conv keeps ``groups`` and the
  same within-group positions in every conv group;
* a norm loses the same entries (affine weight and bias, running statistics,
  ``num_features``); a GroupNorm loses whole norm groups and ``num_groups``
  falls with them;
* an mmcv ``*DeformConv2dPack`` loses channels of its main weight and bias;
  its ``conv_offset`` is a layer of the plan of its own whose input follows
  the DCN's input and whose output width (offsets, masks) never changes;
* a concatenation needs no code of its own: a consumer's ``in_map`` lists
  the groups of the concatenated tensors as consecutive segments, so the
  kept positions of each slice are removed where they sit.

The surgery is written down first as a `ChannelSpec`: per module, the kept
input and output positions (JSON-able). `apply_channel_spec` slices any
model built from the same config by such a spec, so the small model's
checkpoint can be loaded into a freshly built detector.

The per-module slicers, and which come from torch-pruning, are in
slicers.py.

torch-pruning's pruners also replace each parameter by a new one with
``requires_grad=True``; we restore the original flags (frozen stages and
``requires_grad=False`` norms stay frozen when the small model trains).
"""

import json
from dataclasses import dataclass, field
from typing import (
    Any,
    Dict,
    List,
    Mapping,
    Sequence,
    Tuple,
)

import torch
from torch import Tensor, nn

from .plan import ChannelMap, PrunePlan
from .slicers import (
    Keep,
    module_widths,
    register_channel_slicer,
    slice_module,
    slicer_for,
)

__all__ = [
    'ChannelSpec',
    'ModuleChannels',
    'kept_channels',
    'kept_positions',
    'channel_spec',
    'apply_channel_spec',
    'prune_model',
    'register_channel_slicer',
    'module_widths',
    'slice_module',
]

SPEC_FORMAT = 'mmprune.channels/1'

def kept_channels(binaries: Mapping[str, Tensor]) -> Dict[str, List[int]]:
    """``{group: ascending indices whose binary mask is 1}``.

    Args:
        binaries: ``{group: [C]}`` tensors of 0.0 / 1.0 (e.g.
            ``MaskSet.binaries()``).
    """
    out = {}
    for g, b in binaries.items():
        b = b.detach().flatten()
        if not bool(((b == 0) | (b == 1)).all()):
            raise ValueError(
                f'kept_channels: binary mask of group {g!r} holds values '
                'other than 0 and 1'
            )
        out[g] = (b > 0.5).nonzero().flatten().tolist()
    return out


def kept_positions(cmap: ChannelMap, keep: Mapping[str, Sequence[int]]
                   ) -> List[int]:
    """Positions of a module axis that survive, given the kept group channels.

    Each segment of ``cmap`` (see `Segment`) maps a run of the axis onto
    channels ``[start, start + length)`` of its group; fixed segments
    (``group=None``) survive whole. Positions are returned ascending.
    """
    out: List[int] = []
    off = 0
    for s in cmap:
        if s.group is None:
            out.extend(range(off, off + s.length))
        else:
            if s.group not in keep:
                raise KeyError(
                    f'kept_positions: no binary mask given for group '
                    f'{s.group!r}'
                )
            out.extend(
                off + i - s.start
                for i in keep[s.group]
                if s.start <= i < s.start + s.length
            )
        off += s.length
    return sorted(out)


@dataclass
class ModuleChannels:
    """The surgery of one module: which positions of each axis survive.

    Attributes:
        type: the module's class name (checked when the spec is applied).
        kind: ``'conv'``, ``'deconv'``, ``'linear'`` or ``'norm'``.
        in_total / out_total: widths of the unpruned module.
        in_kept / out_kept: kept positions (ascending) of the input / output
            axis, or None when that axis keeps every channel. For a norm and a
            depthwise conv both axes are one and the same.
    """

    type: str
    kind: str
    in_total: int
    out_total: int
    in_kept: Keep = None
    out_kept: Keep = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able form."""
        return dict(
            type=self.type,
            kind=self.kind,
            in_total=self.in_total,
            out_total=self.out_total,
            in_kept=self.in_kept,
            out_kept=self.out_kept,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> 'ModuleChannels':
        """Parse `to_dict` output; ``where`` names the entry in errors.

        ``in_kept`` / ``out_kept`` may also be an int ``n``: keep the first
        ``n`` positions (a width-only spec: the shapes are right and the
        weights are loaded from a checkpoint afterwards).
        """
        need = ('type', 'kind', 'in_total', 'out_total')
        missing = [k for k in need if k not in d]
        if missing:
            raise ValueError(f'{where}: missing keys {missing}')
        kept = {}
        for axis in ('in', 'out'):
            total = int(d[f'{axis}_total'])
            v = d.get(f'{axis}_kept')
            if isinstance(v, bool):
                raise ValueError(f'{where}.{axis}_kept: got a bool')
            if isinstance(v, int):
                v = list(range(v))
            if v is not None:
                v = [int(i) for i in v]
                if not v or v != sorted(set(v)) or v[0] < 0 or \
                        v[-1] >= total:
                    raise ValueError(
                        f'{where}.{axis}_kept must be a non-empty ascending '
                        f'list of distinct positions in [0, {total}) or a '
                        f'width in [1, {total}]'
                    )
            kept[axis] = v
        return cls(
            str(d['type']),
            str(d['kind']),
            int(d['in_total']),
            int(d['out_total']),
            kept['in'],
            kept['out'],
        )


@dataclass
class ChannelSpec:
    """Per-module surgery of a whole model; JSON-able.

    Attributes:
        modules: ``{module name: ModuleChannels}``, only modules that lose at
            least one channel.
        meta: free-form extra information (psi, input shape, ...).
    """

    modules: Dict[str, ModuleChannels] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able form (``format`` tags the layout)."""
        return dict(
            format=SPEC_FORMAT,
            meta=dict(self.meta),
            modules={n: m.to_dict() for n, m in self.modules.items()},
        )

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], where: str = 'channel spec'
    ) -> 'ChannelSpec':
        """Parse `to_dict` output; errors name ``where`` and the entry."""
        if not isinstance(d, Mapping) or d.get('format') != SPEC_FORMAT:
            got = d.get('format') if isinstance(d, Mapping) else type(d)
            raise ValueError(
                f'{where}: expected a dict with format={SPEC_FORMAT!r}, '
                f'got format={got!r}'
            )
        mods = d.get('modules')
        if not isinstance(mods, Mapping):
            raise ValueError(f'{where}: "modules" must be a dict')
        return cls(
            {
                n: ModuleChannels.from_dict(m, f'{where}: modules[{n!r}]')
                for n, m in mods.items()
            },
            dict(d.get('meta') or {}),
        )

    def save(self, path: str) -> None:
        """Write the spec as JSON."""
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def load(cls, path: str) -> 'ChannelSpec':
        """Read a spec written by `save`."""
        try:
            with open(path, encoding='utf-8') as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f'{path}:{e.lineno}: not valid JSON ({e.msg})'
            ) from None
        return cls.from_dict(d, path)

    def widths(self) -> Dict[str, Tuple[int, int]]:
        """``{module: (in width, out width)}`` after the surgery."""
        return {
            n: (
                m.in_total if m.in_kept is None else len(m.in_kept),
                m.out_total if m.out_kept is None else len(m.out_kept),
            )
            for n, m in self.modules.items()
        }


def channel_spec(
    plan: PrunePlan, binaries: Mapping[str, Tensor]
) -> ChannelSpec:
    """The surgery that removes every channel whose binary mask is 0.

    Args:
        plan: the model's `PrunePlan`.
        binaries: ``{group: [C]}`` 0/1 masks for every group of the plan.

    Returns:
        A `ChannelSpec` listing each layer of the plan that loses channels.
    """
    missing = [g for g in plan.groups if g not in binaries]
    extra = [g for g in binaries if g not in plan.groups]
    if missing or extra:
        raise KeyError(
            f'channel_spec: binaries must cover exactly the plan groups; '
            f'missing {missing[:5]}, unknown {extra[:5]}'
        )
    keep = kept_channels(binaries)
    for g, idx in keep.items():
        size = plan.groups[g].size
        if binaries[g].numel() != size:
            raise ValueError(
                f'channel_spec: binary mask of group {g!r} has '
                f'{binaries[g].numel()} entries, the group has {size}'
            )
        if not idx:
            raise ValueError(
                f'channel_spec: group {g!r} keeps no channel; every group '
                'must keep at least one'
            )
    spec = ChannelSpec()
    for name, lay in plan.layers.items():
        ik = kept_positions(lay.in_map, keep)
        ok = kept_positions(lay.out_map, keep)
        if lay.depthwise and ik != ok:
            raise ValueError(
                f'channel_spec: depthwise layer {name} would keep input '
                f'{ik} and output {ok}; its two axes must agree'
            )
        in_kept = None if len(ik) == lay.in_channels else ik
        out_kept = None if len(ok) == lay.out_channels else ok
        if in_kept is None and out_kept is None:
            continue
        spec.modules[name] = ModuleChannels(
            lay.type,
            lay.kind,
            lay.in_channels,
            lay.out_channels,
            in_kept,
            out_kept,
        )
    return spec


def apply_channel_spec(model: nn.Module, spec: ChannelSpec) -> nn.Module:
    """Slice ``model`` in place as ``spec`` says; returns ``model``.

    ``model`` must be built like the one the spec was made from: every listed
    module must exist, have the listed type and the listed unpruned widths.
    Works on a trained model (`prune_model`) and on a freshly built one,
    whose (random) weights are then replaced by loading the small model's
    checkpoint. Mask hooks must be removed first (`MaskSet.remove`): they
    would multiply the sliced outputs by full-width masks.
    """
    modules = dict(model.named_modules())
    hooked = [n for n, m in modules.items() if any(
        'MaskSet._make_hook' in getattr(h, '__qualname__', '')
        for h in m._forward_hooks.values())]
    if hooked:
        raise RuntimeError(
            f'apply_channel_spec: {hooked[0]} (and {len(hooked) - 1} more) '
            'still carries a mask hook; call MaskSet.remove() first (a deep '
            'copy of a masked model carries the hooks too)')
    problems = []
    for name, mc in spec.modules.items():
        m = modules.get(name)
        if m is None:
            problems.append(f'{name}: no such module')
            continue
        if type(m).__name__ != mc.type:
            problems.append(
                f'{name}: spec says {mc.type}, model has {type(m).__name__}'
            )
            continue
        if slicer_for(m) is None:
            problems.append(
                f'{name}: no channel slicer for {type(m).__name__} '
                '(register one with register_channel_slicer)'
            )
            continue
        widths = module_widths(m)
        if widths != (mc.in_total, mc.out_total):
            problems.append(
                f'{name}: spec expects {mc.in_total} -> {mc.out_total} '
                f'channels, model has {widths[0]} -> {widths[1]}'
            )
    if problems:
        raise ValueError(
            'apply_channel_spec: the channel spec does not fit this model '
            '(built from a different config?):\n  ' + '\n  '.join(problems)
        )
    with torch.no_grad():
        for name, mc in spec.modules.items():
            m = modules[name]
            flags = {
                n: p.requires_grad
                for n, p in m.named_parameters(recurse=False)
            }
            try:
                slicer_for(m)(m, mc.in_kept, mc.out_kept)
            except (ValueError, AssertionError) as e:
                raise ValueError(
                    f'apply_channel_spec: cannot slice {name} '
                    f'({type(m).__name__}): {e}'
                ) from None
            for n, p in m.named_parameters(recurse=False):
                if n in flags:
                    p.requires_grad_(flags[n])
            want = (
                mc.in_total if mc.in_kept is None else len(mc.in_kept),
                mc.out_total if mc.out_kept is None else len(mc.out_kept),
            )
            if module_widths(m) != want:
                raise RuntimeError(
                    f'apply_channel_spec: after slicing, {name} has widths '
                    f'{module_widths(m)}, expected {want} (a slicer did not '
                    'update the width attributes)'
                )
    return model


def prune_model(
    model: nn.Module, plan: PrunePlan, binaries: Mapping[str, Tensor]
) -> ChannelSpec:
    """Remove, in place, every channel of ``model`` whose binary mask is 0.

    Args:
        model: the traced model, without mask hooks.
        plan: its `PrunePlan`.
        binaries: ``{group: [C]}`` 0/1 masks (e.g. a frozen
            ``MaskSet.binaries()``).

    Returns:
        The `ChannelSpec` that was applied (save it next to the checkpoint of
        the small model).
    """
    spec = channel_spec(plan, binaries)
    apply_channel_spec(model, spec)
    return spec
