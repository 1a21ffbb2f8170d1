"""Channel slicers: cut one module down to its kept input / output positions.

The export surgery (surgery.py) calls `slice_module` on every layer of a
`ChannelSpec`. Which code slices what (decided by reading torch-pruning
1.6's pruners):

* torch-pruning's functional pruners are used where they are right:
  ``nn.Conv*d`` / ``nn.ConvTranspose*d`` with ``groups == 1``
  (`prune_conv_out_channels` / `prune_conv_in_channels`, which know the
  ``[in, out, k, k]`` layout of transposed convs), depthwise convs and
  transposed convs (`prune_depthwise_conv_out_channels`), ``nn.Linear`` and
  the BatchNorm family incl. SyncBatchNorm (`prune_batchnorm_out_channels`).
* Our own code covers what torch-pruning lacks or gets wrong for us: grouped
  convs that keep their ``groups`` (the plan keeps the same within-group
  positions in every conv group, see ties.py), mmcv's deformable convs (not
  ``nn.Conv2d`` subclasses), GroupNorm (torch-pruning keeps ``num_groups``;
  we drop whole norm groups and lower it) and InstanceNorm with running
  statistics (torch-pruning leaves them at full length).
* LayerNorm is never pruned by the tracer, nor are grouped transposed convs;
  a spec that asks to slice them is an error. Unknown module types raise
  too; teach the surgery a new type with `register_channel_slicer`.
"""

from typing import Any, Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .handlers import is_deform_conv_pack

Keep = Optional[List[int]]
"""Kept positions of a module axis, ascending; None: the axis is untouched."""

Slicer = Callable[[nn.Module, Keep, Keep], None]


def _removed(keep: Keep, total: int) -> List[int]:
    if keep is None:
        return []
    kept = set(keep)
    return [i for i in range(total) if i not in kept]


def _index(t: Tensor, keep: List[int], dim: int) -> Tensor:
    idx = torch.tensor(keep, dtype=torch.long, device=t.device)
    return torch.index_select(t.detach(), dim, idx).clone()


def _set_param(m: nn.Module, name: str, value: Tensor) -> None:
    old = getattr(m, name)
    setattr(m, name, nn.Parameter(value, requires_grad=old.requires_grad))


def _per_group(keep: List[int], total: int, groups: int, axis: str
               ) -> List[int]:
    """Within-group positions ``keep`` holds in every one of ``groups``
    equal runs of ``total``; ValueError if the runs differ."""
    w = total // groups
    runs = [[k - g * w for k in keep if g * w <= k < (g + 1) * w]
            for g in range(groups)]
    if any(r != runs[0] for r in runs) or not runs[0]:
        raise ValueError(
            f'grouped conv (groups={groups}): the kept {axis} channels must '
            'sit at the same positions in every conv group, and at least '
            'one per group')
    return runs[0]


def _grouped_conv_slicer(m: nn.Module, in_keep: Keep, out_keep: Keep
                         ) -> None:
    """``groups = g`` stays; weight ``[out, in/g, *k]`` keeps the kept
    outputs (rows) and the kept within-group input positions (columns)."""
    g = m.groups
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        raise ValueError(f'grouped {type(m).__name__} (groups={g}) cannot '
                         'be pruned')
    if out_keep is not None:
        _per_group(out_keep, m.out_channels, g, 'output')
        _set_param(m, 'weight', _index(m.weight, out_keep, 0))
        if m.bias is not None:
            _set_param(m, 'bias', _index(m.bias, out_keep, 0))
        m.out_channels = len(out_keep)
    if in_keep is not None:
        cols = _per_group(in_keep, m.in_channels, g, 'input')
        _set_param(m, 'weight', _index(m.weight, cols, 1))
        m.in_channels = len(in_keep)


def _conv_slicer(m: nn.Module, in_keep: Keep, out_keep: Keep) -> None:
    import torch_pruning as tp

    depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
    if depthwise:
        if in_keep != out_keep:
            raise ValueError(
                'depthwise conv: input and output are one axis; got '
                'different kept positions'
            )
        tp.prune_depthwise_conv_out_channels(
            m, _removed(out_keep, m.out_channels)
        )
        return
    if m.groups != 1:
        _grouped_conv_slicer(m, in_keep, out_keep)
        return
    if out_keep is not None:
        tp.prune_conv_out_channels(m, _removed(out_keep, m.out_channels))
    if in_keep is not None:
        tp.prune_conv_in_channels(m, _removed(in_keep, m.in_channels))


def _linear_slicer(m: nn.Linear, in_keep: Keep, out_keep: Keep) -> None:
    import torch_pruning as tp

    if out_keep is not None:
        tp.prune_linear_out_channels(m, _removed(out_keep, m.out_features))
    if in_keep is not None:
        tp.prune_linear_in_channels(m, _removed(in_keep, m.in_features))


def _one_axis(in_keep: Keep, out_keep: Keep) -> Keep:
    if in_keep is not None and out_keep is not None and in_keep != out_keep:
        raise ValueError(
            'a per-channel layer has one axis; got different input and '
            'output kept positions'
        )
    return out_keep if out_keep is not None else in_keep


def _batchnorm_slicer(m: nn.Module, in_keep: Keep, out_keep: Keep) -> None:
    import torch_pruning as tp

    keep = _one_axis(in_keep, out_keep)
    tp.prune_batchnorm_out_channels(m, _removed(keep, m.num_features))


def _instancenorm_slicer(m: nn.Module, in_keep: Keep, out_keep: Keep
                         ) -> None:
    keep = _one_axis(in_keep, out_keep)
    for name in ('weight', 'bias'):
        if getattr(m, name, None) is not None:
            _set_param(m, name, _index(getattr(m, name), keep, 0))
    for name in ('running_mean', 'running_var'):
        if getattr(m, name, None) is not None:
            setattr(m, name, _index(getattr(m, name), keep, 0))
    m.num_features = len(keep)


def _groupnorm_slicer(m: nn.GroupNorm, in_keep: Keep, out_keep: Keep
                      ) -> None:
    """Whole norm groups go; ``num_groups`` falls to the groups kept."""
    keep = _one_axis(in_keep, out_keep)
    if keep is None:
        return
    w = m.num_channels // m.num_groups
    blocks = sorted({k // w for k in keep})
    if keep != [c for b in blocks for c in range(b * w, (b + 1) * w)]:
        raise ValueError(
            f'GroupNorm(num_groups={m.num_groups}, num_channels='
            f'{m.num_channels}): only whole norm groups of {w} channels can '
            'be dropped')
    if m.affine:
        _set_param(m, 'weight', _index(m.weight, keep, 0))
        _set_param(m, 'bias', _index(m.bias, keep, 0))
    m.num_channels = len(keep)
    m.num_groups = len(blocks)


def _deform_conv_slicer(m: nn.Module, in_keep: Keep, out_keep: Keep
                        ) -> None:
    # Only the main weight [out, in/groups, kh, kw] and bias: conv_offset is
    # a layer of the plan of its own.
    groups = int(getattr(m, 'groups', 1))
    if groups != 1:
        raise ValueError(
            f'grouped deformable conv (groups={groups}) cannot be pruned'
        )
    dg = int(getattr(m, 'deform_groups', 1))
    if in_keep is not None and dg != 1:
        raise ValueError(
            f'deformable conv with deform_groups={dg}: its input channels '
            'are split among the offset groups and cannot be pruned'
        )
    if out_keep is not None:
        _set_param(m, 'weight', _index(m.weight, out_keep, 0))
        if getattr(m, 'bias', None) is not None:
            _set_param(m, 'bias', _index(m.bias, out_keep, 0))
        m.out_channels = len(out_keep)
    if in_keep is not None:
        _set_param(m, 'weight', _index(m.weight, in_keep, 1))
        m.in_channels = len(in_keep)


def _layernorm_slicer(m: nn.Module, in_keep: Keep, out_keep: Keep) -> None:
    raise ValueError(
        'LayerNorm normalises across channels and cannot be pruned'
    )


_SLICERS: List[Tuple[Any, Slicer]] = [
    (nn.modules.conv._ConvNd, _conv_slicer),
    (nn.Linear, _linear_slicer),
    (nn.modules.batchnorm._BatchNorm, _batchnorm_slicer),
    (nn.modules.instancenorm._InstanceNorm, _instancenorm_slicer),
    (nn.GroupNorm, _groupnorm_slicer),
    (nn.LayerNorm, _layernorm_slicer),
    (is_deform_conv_pack, _deform_conv_slicer),
]


def register_channel_slicer(
    match: Union[type, Callable[[nn.Module], bool]], slicer: Slicer
) -> None:
    """Teach the surgery a module type (pair it with a layer handler).

    Args:
        match: a module class (``isinstance``) or a predicate
            ``match(module) -> bool``; later registrations win.
        slicer: ``slicer(module, in_kept, out_kept)`` slices the module in
            place; ``in_kept`` / ``out_kept`` are ascending kept positions or
            None for an untouched axis. It must update the module's width
            attributes so `module_widths` reports the new widths.
    """
    if not (isinstance(match, type) or callable(match)):
        raise TypeError(
            f'register_channel_slicer: match must be a class or a predicate, '
            f'got {match!r}'
        )
    if not callable(slicer):
        raise TypeError(
            f'register_channel_slicer: slicer {slicer!r} is not callable'
        )
    _SLICERS.append((match, slicer))


def slicer_for(m: nn.Module) -> Optional[Slicer]:
    """The slicer registered last whose match fits ``m``, or None."""
    for match, fn in reversed(_SLICERS):
        hit = isinstance(m, match) if isinstance(match, type) else match(m)
        if hit:
            return fn
    return None


def slice_module(m: nn.Module, in_keep: Keep, out_keep: Keep) -> None:
    """Slice one module in place to the kept input / output positions
    (ascending lists, or None for an untouched axis) with its registered
    slicer; TypeError for a type no slicer knows."""
    fn = slicer_for(m)
    if fn is None:
        raise TypeError(f'no channel slicer for {type(m).__name__}; see '
                        'register_channel_slicer')
    fn(m, in_keep, out_keep)


def module_widths(m: nn.Module) -> Tuple[int, int]:
    """``(in width, out width)`` of a conv / deconv / DCN / linear / norm."""
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if isinstance(m, nn.GroupNorm):
        return m.num_channels, m.num_channels
    if isinstance(m, nn.LayerNorm):
        n = int(m.normalized_shape[-1])
        return n, n
    if hasattr(m, 'num_features'):
        return int(m.num_features), int(m.num_features)
    if hasattr(m, 'in_channels') and hasattr(m, 'out_channels'):
        return int(m.in_channels), int(m.out_channels)
    raise TypeError(
        f'module_widths: {type(m).__name__} has no known width attributes'
    )
