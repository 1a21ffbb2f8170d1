"""Trainable channel masks and their installation (METHOD.md 1-2)."""

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .plan import PrunePlan, Slot
from .ste import binarize

MinChannels = Union[int, float]
#: How a mask's kept count k is read from its continuous values.
BINARIZE_MODES = ('threshold', 'count')


def resolve_min_channels(min_channels: MinChannels, num_channels: int) -> int:
    """Channels the layer-collapse guard keeps in a group of ``num_channels``.

    ``min_channels`` is an int >= 1 (capped at ``num_channels``) or a ratio
    float in (0, 1] (``ceil(ratio * num_channels)``, at least 1).
    """
    if isinstance(min_channels, bool):
        raise TypeError(
            'min_channels must be an int >= 1 or a float in (0, 1], '
            f'got {min_channels!r}'
        )
    if isinstance(min_channels, int):
        if min_channels < 1:
            raise ValueError(
                'min_channels must be an int >= 1 or a float in '
                f'(0, 1], got {min_channels}'
            )
        return min(min_channels, num_channels)
    if isinstance(min_channels, float):
        if not 0.0 < min_channels <= 1.0:
            raise ValueError(
                'min_channels as a ratio must lie in (0, 1], got '
                f'{min_channels}'
            )
        return max(
            1, min(num_channels, math.ceil(min_channels * num_channels))
        )
    raise TypeError(
        'min_channels must be an int >= 1 or a float in (0, 1], '
        f'got {type(min_channels).__name__}'
    )


class ChannelMask(nn.Module):
    """One trainable mask ``M`` of length C and its binarisation.

    ``binary()`` binarises ``M`` through the clipped straight-through
    estimator and fixes the kept count ``k``: with ``binarize='threshold'``
    (the seed's) ``k`` is the number of ``M >= threshold``; with
    ``'count'`` it is ``round(sum(clip(M, 0, 1)))``, the expected count if
    each ``M`` were a keep probability, so ``k`` falls one channel at a time
    as the masks of a group fall together, instead of all at once when they
    cross the threshold. Then ``k`` is at least
    ``min_keep`` (the layer-collapse guard), and, with ``channel_multiple``
    q > 1, ``k`` rounded to the nearest multiple of q (a full group, and a
    group smaller than q, stay as they are). The ``k`` channels with the
    largest ``M`` are kept (ties: lower index first). Training thus sees the
    widths the export will have, and the freeze has nothing to round. The
    count rule only changes the forward value; the gradient is the
    estimator's, so forced channels still learn. After ``freeze()`` the
    binary mask is a fixed buffer and ``M`` gets no gradient; the frozen
    state is part of the state dict.

    Args:
        num_channels: C, the group size.
        mask_init: initial value of every ``M`` (default 1.0).
        threshold: binarisation threshold (default 0.5).
        min_channels: see `resolve_min_channels`.
        channel_multiple: q, the multiple kept counts are rounded to.
        revive: the estimator passes gradient at ``M == 0`` (see
            `binarize`); use with `clamp_` so masks stay in [0, 1].
        binarize: ``'threshold'`` or ``'count'`` (see above).
        ties: the unit of each channel (`ChannelGroup.tie`) or None. With
            ties, ``M`` has one value per unit (U of them), every count
            above is in units, and ``binary()`` repeats each unit's value
            over its channels; ``min_channels`` and ``channel_multiple``
            stay in channels and round up to whole units.
    """

    def __init__(
        self,
        num_channels: int,
        mask_init: float = 1.0,
        threshold: float = 0.5,
        min_channels: MinChannels = 1,
        channel_multiple: int = 1,
        revive: bool = False,
        binarize: str = 'threshold',
        ties: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        if binarize not in BINARIZE_MODES:
            raise ValueError(
                f'ChannelMask: binarize must be one of {BINARIZE_MODES}, '
                f'got {binarize!r}'
            )
        self.count_mode = binarize == 'count'
        if not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(
                f'ChannelMask: num_channels must be an int >= 1, '
                f'got {num_channels!r}'
            )
        self.num_channels = num_channels
        self.threshold = float(threshold)
        units, width = _check_ties(ties, num_channels)
        #: channels per unit (1 without ties); U = num_units mask values.
        self.unit_size, self.num_units = width, units
        self.register_buffer(
            'ties', None if ties is None else
            torch.as_tensor(list(ties), dtype=torch.long), persistent=False)
        keep = resolve_min_channels(min_channels, num_channels)
        #: the layer-collapse guard in units (and in channels, min_keep).
        self.min_units = -(-keep // width)
        self.min_keep = self.min_units * width
        q = int(channel_multiple)
        if q < 1:
            raise ValueError(
                f'ChannelMask: channel_multiple must be an int >= 1, got '
                f'{channel_multiple!r}'
            )
        q = q // math.gcd(q, width)  # units whose channels are a multiple
        # Groups narrower than q keep exact counts.
        self.multiple = q if units >= q else 1
        self._low = min(units, -(-max(self.min_units, 1) // q) * q)
        self.revive = bool(revive)
        self.mask = nn.Parameter(torch.full((units,), float(mask_init)))
        self.register_buffer('frozen_binary', torch.ones(num_channels))
        self.register_buffer('frozen', torch.tensor(False))
        # A host-side copy of `frozen`, so binary() never syncs a GPU.
        self._is_frozen = False

    @property
    def is_frozen(self) -> bool:
        """Whether the binary mask is fixed."""
        return self._is_frozen

    def binary(self) -> Tensor:
        """The binary mask ``[C]`` (0.0 / 1.0); differentiable unless
        frozen."""
        if self._is_frozen:
            return self.frozen_binary
        b = self.unit_binary()
        return b if self.ties is None else b[self.ties]

    def continuous(self) -> Tensor:
        """``M`` per channel ``[C]``, detached (a unit's value repeated)."""
        m = self.mask.detach()
        return (m if self.ties is None else m[self.ties]).clone()

    def unit_binary(self) -> Tensor:
        """The binary mask per unit ``[U]`` (``[C]`` without ties)."""
        if self._is_frozen:
            return self.frozen_binary[self.first_channels()]
        b = binarize(self.mask, self.threshold, self.revive)
        with torch.no_grad():
            # Tensor ops only (no .item()): this runs at every mask site call.
            if self.count_mode:
                k = self.mask.clamp(0.0, 1.0).sum().round()
            else:
                k = b.sum()
            k = k.clamp(min=self.min_units)
            q, c = self.multiple, self.num_units
            if q > 1:
                kq = (torch.floor(k / q + 0.5) * q).clamp(self._low, c)
                k = torch.where(k >= c, k, kq)
            order = torch.sort(self.mask, descending=True, stable=True)[1]
            rank = torch.empty_like(order)
            rank[order] = torch.arange(c, device=order.device)
            delta = (rank < k).to(b.dtype) - b
        return b + delta

    def first_channels(self) -> Tensor:
        """``[U]`` the first channel of every unit."""
        if self.ties is None:
            return torch.arange(self.num_channels,
                                device=self.frozen_binary.device)
        first = torch.full((self.num_units,), self.num_channels,
                           dtype=torch.long, device=self.ties.device)
        pos = torch.arange(self.num_channels, device=self.ties.device)
        return first.scatter_reduce(0, self.ties, pos, 'amin')

    def clamp_(self) -> None:
        """With ``revive``, clip ``M`` to [0, 1] in place (call it after each
        mask optimizer step); without, do nothing (the seed's masks are
        unbounded)."""
        if self.revive and not self._is_frozen:
            with torch.no_grad():
                self.mask.clamp_(0.0, 1.0)

    def freeze(self, binary: Optional[Tensor] = None) -> None:
        """Fix the binary mask (default: the current ``binary()``)."""
        with torch.no_grad():
            b = self.binary().detach() if binary is None else binary.detach()
            b = b.to(self.frozen_binary)
            if b.shape != (self.num_channels,):
                raise ValueError(
                    f'ChannelMask.freeze: binary must have shape '
                    f'({self.num_channels},), got {tuple(b.shape)}'
                )
            if not bool(((b == 0) | (b == 1)).all()):
                raise ValueError(
                    'ChannelMask.freeze: binary must hold only 0 and 1'
                )
            if self.ties is not None and not bool(
                    (b == b[self.first_channels()][self.ties]).all()):
                raise ValueError(
                    'ChannelMask.freeze: binary splits a unit of tied '
                    f'channels ({self.unit_size} channels each: GroupNorm '
                    'groups or grouped-conv positions); keep or drop each '
                    'unit whole')
            if int(b.sum().item()) < self.min_keep:
                raise ValueError(
                    f'ChannelMask.freeze: binary keeps '
                    f'{int(b.sum().item())} channels, fewer than '
                    f'min_keep={self.min_keep}'
                )
            self.frozen_binary.copy_(b)
            self.frozen.fill_(True)
        self._is_frozen = True
        self.mask.requires_grad_(False)
        self.mask.grad = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._is_frozen = bool(self.frozen)
        # requires_grad is not in a state dict; it follows the frozen flag.
        self.mask.requires_grad_(not self._is_frozen)

    def extra_repr(self) -> str:
        tied = ('' if self.ties is None else
                f' in {self.num_units} units of {self.unit_size}')
        return (
            f'{self.num_channels}{tied}, threshold={self.threshold}, '
            f'min_keep={self.min_keep}, frozen={self.is_frozen}'
        )


def _check_ties(ties: Optional[Sequence[int]], num_channels: int
                ) -> Tuple[int, int]:
    """``(units, channels per unit)`` of a tie vector; ValueError if it is
    not ``num_channels`` unit ids 0..U-1 of one size."""
    if ties is None:
        return num_channels, 1
    ties = list(ties)
    if len(ties) != num_channels:
        raise ValueError(f'ChannelMask: ties must have {num_channels} '
                         f'entries, got {len(ties)}')
    units = max(ties) + 1
    counts = [0] * units
    for u in ties:
        if u < 0:
            raise ValueError(f'ChannelMask: ties holds a negative unit {u}')
        counts[u] += 1
    if len(set(counts)) != 1:
        raise ValueError('ChannelMask: tied units must all have the same '
                         f'number of channels, got sizes {sorted(set(counts))}')
    return units, counts[0]


def _key(group: str) -> str:
    # ModuleDict keys may not contain '.'; '-' never occurs in module names.
    return group.replace('.', '-') if group else '-'


class _PluginHandle:
    """Undoes ``set_channel_mask`` like a hook handle's ``remove()``."""

    def __init__(self, module: nn.Module):
        self.module = module

    def remove(self) -> None:
        self.module.set_channel_mask(None)


class MaskSet(nn.Module):
    """One `ChannelMask` per prunable group of a plan, and their hooks.

    The masks live in ``self.masks`` (an ``nn.ModuleDict`` keyed by the group
    name with '.' replaced by '-'), so the set has its own parameters and state
    dict and can get its own optimizer. Build it with `install_masks`.
    """

    def __init__(
        self,
        plan: PrunePlan,
        mask_init: float = 1.0,
        threshold: float = 0.5,
        min_channels: MinChannels = 1,
        channel_multiple: int = 1,
        revive: bool = False,
        binarize: str = 'threshold',
    ):
        super().__init__()
        self.plan = plan
        self.masks = nn.ModuleDict()
        self._keys: Dict[str, str] = {}
        for name, g in plan.groups.items():
            key = _key(name)
            if key in self.masks:
                raise ValueError(
                    f'MaskSet: groups {name!r} and another group '
                    f'map to the same key {key!r}'
                )
            self.masks[key] = ChannelMask(
                g.size, mask_init, threshold, min_channels,
                channel_multiple, revive, binarize, g.tie
            )
            self._keys[name] = key
        self._handles: List = []

    @property
    def group_names(self) -> List[str]:
        """Group names in plan order."""
        return list(self._keys)

    def mask(self, group: str) -> ChannelMask:
        """The `ChannelMask` of a group."""
        if group not in self._keys:
            raise KeyError(f'MaskSet: no group named {group!r}')
        return self.masks[self._keys[group]]

    def binaries(self) -> Dict[str, Tensor]:
        """``{group: binary mask [C]}``, differentiable through the STE."""
        return {n: self.masks[k].binary() for n, k in self._keys.items()}

    def continuous(self) -> Dict[str, Tensor]:
        """``{group: M [C]}``, detached copies of the continuous masks."""
        return {n: self.masks[k].continuous() for n, k in self._keys.items()}

    def clamp_(self) -> None:
        """`ChannelMask.clamp_` on every mask."""
        for m in self.masks.values():
            m.clamp_()

    @property
    def attached(self) -> bool:
        """Whether the hooks are on a model (see `attach` / `remove`)."""
        return bool(self._handles)

    @property
    def frozen(self) -> bool:
        """True when every mask is frozen."""
        return all(m.is_frozen for m in self.masks.values())

    def freeze(self, binaries: Optional[Mapping[str, Tensor]] = None) -> None:
        """Freeze every mask, at ``binaries[group]`` where given."""
        binaries = dict(binaries or {})
        unknown = set(binaries) - set(self._keys)
        if unknown:
            raise KeyError(f'MaskSet.freeze: unknown groups {sorted(unknown)}')
        for n, k in self._keys.items():
            self.masks[k].freeze(binaries.get(n))

    def attach(self, model: nn.Module) -> 'MaskSet':
        """Register hooks that multiply each site's output by its mask."""
        if self._handles:
            raise RuntimeError(
                'MaskSet.attach: already attached; call remove() first'
            )
        modules = dict(model.named_modules())
        for site, entries in self.plan.sites().items():
            if site not in modules:
                raise KeyError(
                    f'MaskSet.attach: mask site {site!r} of the plan '
                    f'is not a module of {type(model).__name__}'
                )
            layer = self.plan.layers[site]
            module = modules[site]
            if hasattr(module, 'set_channel_mask'):
                # A layer that applies masks in its own forward (the
                # registered MaskedBN plugin) gets the multiplier itself.
                module.set_channel_mask(self._multiplier_fn(
                    entries, layer.out_channels))
                self._handles.append(_PluginHandle(module))
                continue
            self._handles.append(
                module.register_forward_hook(
                    self._make_hook(
                        site, layer.out_channels, layer.channel_dim, entries
                    )
                )
            )
        return self

    def _multiplier_fn(self, entries, width):
        return lambda: self.site_multiplier(entries, width)

    def remove(self) -> None:
        """Remove the hooks; the model computes its unmasked function again."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def site_multiplier(
        self, entries: List[Tuple[str, Slot]], width: int
    ) -> Tensor:
        """``[width]`` multiplier of a site: masks where listed, else 1."""
        pieces, pos = [], 0
        ref = None
        for group, slot in entries:
            b = self.mask(group).binary()
            ref = b
            if slot.module_start > pos:
                pieces.append(b.new_ones(slot.module_start - pos))
            pieces.append(b[slot.group_start : slot.group_start + slot.length])
            pos = slot.module_start + slot.length
        if pos < width:
            pieces.append(ref.new_ones(width - pos))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def _make_hook(
        self, site: str, width: int, dim: int, entries: List[Tuple[str, Slot]]
    ):
        def hook(module, args, output):
            if not isinstance(output, Tensor):
                raise TypeError(
                    f'mask site {site} returned '
                    f'{type(output).__name__}; expected a tensor'
                )
            if output.dim() == 0 or output.shape[dim] != width:
                raise ValueError(
                    f'mask site {site}: expected {width} channels '
                    f'on axis {dim}, got shape '
                    f'{tuple(output.shape)}'
                )
            mult = self.site_multiplier(entries, width)
            shape = [1] * output.dim()
            shape[dim] = width
            return output * mult.to(
                device=output.device, dtype=output.dtype
            ).view(shape)

        return hook

    def extra_repr(self) -> str:
        return f'{len(self._keys)} groups, attached={self.attached}'


def install_masks(
    model: nn.Module,
    plan: PrunePlan,
    mask_init: float = 1.0,
    threshold: float = 0.5,
    min_channels: MinChannels = 1,
    channel_multiple: int = 1,
    revive: bool = False,
    binarize: str = 'threshold',
) -> MaskSet:
    """Create a `MaskSet` for ``plan`` and hook it onto ``model``.

    Each mask site's output ``[N, C, ...]`` (``[N, C]`` / ``[N, L, C]`` for
    linears) is multiplied by its group's binary mask, so a pruned channel is
    exactly zero downstream. The set is not registered inside ``model``; keep
    it, optimise its parameters, and call ``remove()`` to undo.
    ``channel_multiple``, ``revive`` and ``binarize``: see `ChannelMask`.
    """
    return MaskSet(
        plan, mask_init, threshold, min_channels, channel_multiple, revive,
        binarize
    ).attach(model)
