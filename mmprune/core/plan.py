"""The prune plan: channel groups and the layers they touch.

`discover_groups` (groups.py) builds a `PrunePlan`; the mask installer, the
cost model and the export surgery all read it. It holds only names and
integers, so it never keeps the model alive and can be printed, compared and
pickled.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple


@dataclass(frozen=True)
class Segment:
    """A run of ``length`` consecutive channels of one layer axis.

    ``group`` is the name of the channel group these channels belong to, with
    the run starting at channel ``start`` of that group; ``group=None`` means
    the channels are fixed (never pruned) and ``start`` is then 0.
    """

    group: Optional[str]
    start: int
    length: int


ChannelMap = Tuple[Segment, ...]
"""A layer channel axis, read left to right as consecutive segments."""


def map_size(cmap: ChannelMap) -> int:
    """Total number of channels a `ChannelMap` describes."""
    return sum(s.length for s in cmap)


@dataclass
class LayerSpec:
    """One module whose channels the plan touches or whose cost it counts.

    Attributes:
        name: module name in the model (``model.get_submodule(name)``).
        type: the module's class name.
        kind: ``'conv'`` (incl. deformable), ``'deconv'`` (transposed conv),
            ``'linear'`` or ``'norm'`` (a per-channel layer: one axis).
        in_map: its input-channel axis (for ``'norm'``, equal to ``out_map``).
        out_map: its output-channel axis.
        kernel: kernel size, e.g. ``(3, 3)``; ``()`` for linear and norm.
        groups: the conv's ``groups``.
        depthwise: True when each output channel reads only its own input
            channel (``groups == in == out``); then in and out are one axis.
        bias: whether the layer has a bias (norm: whether it is affine).
        positions: output positions per input sample summed over all calls
            (``H_out * W_out`` for a conv, tokens for a linear; for a
            transposed conv the *input* positions, since each input pixel costs
            k*k*C_out).
        calls: how many times the module ran in the trace.
        channel_dim: the channel axis of the module's output tensor (1, or -1
            for channels-last tensors of linear layers).
        rows: leading-dim rows per image of its first call: 1 for layers on
            image batches, the RoI count for a layer that runs on RoIs
            (``positions`` then counts every RoI; `with_rows` rescales it
            to an RoI budget).
        norm_groups: a GroupNorm's ``num_groups`` (0 for every other
            layer); with fewer groups than channels its channels are pruned
            in whole norm groups (see `ChannelGroup.tie`).
    """

    name: str
    type: str
    kind: str
    in_map: ChannelMap
    out_map: ChannelMap
    kernel: Tuple[int, ...] = ()
    groups: int = 1
    depthwise: bool = False
    bias: bool = False
    positions: int = 0
    calls: int = 0
    channel_dim: int = 1
    rows: int = 1
    norm_groups: int = 0

    @property
    def in_channels(self) -> int:
        """Input channels of the unpruned layer."""
        return map_size(self.in_map)

    @property
    def out_channels(self) -> int:
        """Output channels of the unpruned layer."""
        return map_size(self.out_map)


@dataclass(frozen=True)
class Slot:
    """Channels ``[module_start, module_start + length)`` of a module axis that
    are channels ``[group_start, group_start + length)`` of a group."""

    module: str
    module_start: int
    group_start: int
    length: int


@dataclass
class ChannelGroup:
    """Channels that are kept or dropped together, with one mask of ``size``.

    Attributes:
        name: the group's name: the module that first produced it.
        size: number of channels (length of its mask).
        producers: output axes this group controls (convs, linears, depthwise
            convs and norms whose output channels are these channels).
        consumers: input axes that read these channels (convs, linears,
            depthwise convs, offset convs of deformable convs).
        sites: module outputs the mask multiplies (the norm after a conv, or
            the conv itself where no norm follows).
        tie: None when every channel is kept or dropped on its own; else
            the *unit* of each channel (a tuple of ``size`` ints, units
            numbered by their first channel, all of one size): a unit's
            channels are kept or dropped together, so the group has one mask
            value per unit. A GroupNorm with ``C / G`` channels per norm group
            ties each norm group's channels (a dropped norm group leaves the
            others' statistics unchanged); a grouped conv with ``g`` conv
            groups ties channel ``j`` of its input and of its output to
            ``j + a * C / g`` (every conv group keeps the same positions, so
            ``groups`` stays ``g``).
    """

    name: str
    size: int
    producers: List[Slot] = field(default_factory=list)
    consumers: List[Slot] = field(default_factory=list)
    sites: List[Slot] = field(default_factory=list)
    tie: Optional[Tuple[int, ...]] = None

    @property
    def units(self) -> int:
        """Number of mask values: ``size`` without ties, else the units."""
        return self.size if self.tie is None else max(self.tie) + 1

    @property
    def unit_size(self) -> int:
        """Channels per unit (1 without ties)."""
        return self.size // self.units


@dataclass
class PrunePlan:
    """The result of channel-group discovery.

    Attributes:
        groups: prunable groups by name, in trace order.
        layers: every conv / transposed conv / linear / norm met in the trace,
            by module name, including fixed-width ones (they still cost MACs).
        unsupported: ``(where, reason)`` for every construct the tracer did not
            understand; the channels around it are kept at full width.
        kept: ``(group, reason)`` for groups kept at full width on purpose
            (model outputs, ``skip``, ``ignore_output_layers``) or because of
            an unsupported construct.
        input_shapes: shapes of the example input tensors of the trace.
    """

    groups: Dict[str, ChannelGroup]
    layers: Dict[str, LayerSpec]
    unsupported: List[Tuple[str, str]]
    kept: List[Tuple[str, str]]
    input_shapes: List[Tuple[int, ...]] = field(default_factory=list)

    def sites(self) -> Dict[str, List[Tuple[str, Slot]]]:
        """Mask sites by module name: ``{module: [(group, slot), ...]}``."""
        out: Dict[str, List[Tuple[str, Slot]]] = {}
        for g in self.groups.values():
            for s in g.sites:
                out.setdefault(s.module, []).append((g.name, s))
        for v in out.values():
            v.sort(key=lambda gs: gs[1].module_start)
        return out

    def with_rows(self, budgets: Dict[str, int]) -> List[str]:
        """Count RoI layers at a fixed RoI budget instead of the trace's.

        ``budgets`` maps module-name prefixes (longest match wins) to RoIs
        per image. Every layer under a prefix that ran on RoIs
        (``rows > 1``) gets ``positions / rows * budget`` and ``rows =
        budget``, in place. Returns the names rescaled.
        """
        done = []
        order = sorted(budgets, key=len, reverse=True)
        for name, lay in self.layers.items():
            if lay.rows <= 1:
                continue
            hit = next((p for p in order if name == p
                        or name.startswith(p + '.')), None)
            if hit is None:
                continue
            n = int(budgets[hit])
            if n < 1:
                raise ValueError(f'RoI budget for {hit!r} must be >= 1, '
                                 f'got {n}')
            lay.positions = int(round(lay.positions / lay.rows * n))
            lay.rows = n
            done.append(name)
        return done

    def summary(self) -> str:
        """A readable table of groups, kept groups and unsupported items."""
        lines = [
            f'{len(self.groups)} prunable groups, '
            f'{sum(g.size for g in self.groups.values())} channels; '
            f'{len(self.layers)} layers; '
            f'{len(self.unsupported)} unsupported'
        ]
        for g in self.groups.values():
            tied = '' if g.tie is None else (
                f' in {g.units} units of {g.unit_size}')
            lines.append(
                f'  {g.name}: C={g.size}{tied} producers='
                f'{[s.module for s in g.producers]} consumers='
                f'{[s.module for s in g.consumers]} sites='
                f'{[s.module for s in g.sites]}'
            )
        for name, why in self.kept:
            lines.append(f'  kept {name}: {why}')
        for where, why in self.unsupported:
            lines.append(f'  unsupported {where}: {why}')
        return '\n'.join(lines)
