"""Built-in layer handlers for the channel tracer (see groups.py).

Each handler describes one module type to the tracer: which input channels it
reads, which output channels it makes, and the layer record the cost model and
export use. Registered on import; `register_layer_handler` adds more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

from torch import Tensor, nn

from .layer_registry import register_layer_handler

if TYPE_CHECKING:
    from .channel_map import Channels
    from .tracer import TraceContext


def _input(by: str, args, kwargs) -> Tensor:
    x = args[0] if args else kwargs.get('input', kwargs.get('x'))
    if not isinstance(x, Tensor):
        raise TypeError(
            f'{by}: expected a tensor as first input, got '
            f'{type(x).__name__}'
        )
    return x


def conv_handler(
    ctx: TraceContext, name: str, m: nn.Module, args, kwargs, out
) -> Optional[Tuple[Channels, int]]:
    """Conv1d/2d/3d and ConvTranspose1d/2d/3d.

    ``groups == 1``: consumes its input, produces a new group. Depthwise
    (``groups == in == out``): input and output are one axis of one group.
    Other grouped convs are pruned like ``groups == 1``, with the channels
    of their conv groups tied (ties.py); grouped transposed convs are kept
    at full width and reported.
    """
    x = _input(name, args, kwargs)
    kind = (
        'deconv' if isinstance(m, nn.modules.conv._ConvTransposeNd) else 'conv'
    )
    bias = m.bias is not None
    if m.groups > 1 and m.groups == m.in_channels == m.out_channels:
        ch = ctx.channels(x, 1, name)
        ctx.add_layer(name, kind, ch, ch, m.kernel_size, m.groups, True, bias)
        # Each output channel reads only its own input channel: a zero input
        # channel stays zero unless a bias (or a non-zero input) refills it.
        if bias or not ctx.is_exact(ch):
            return ctx.mark_dirty(ch, name), 1
        return ch, 1
    ch = ctx.consume(x, 1, name)
    if m.groups == 1 or kind == 'conv':
        # Grouped: the plan ties the same positions of every conv group
        # (ties.py), so `groups` stays as it is.
        out_ch = ctx.produce(name, m.out_channels)
    else:
        ctx.keep(
            ch,
            f'grouped {type(m).__name__} (groups={m.groups}) is not '
            'supported: only groups=1 and depthwise transposed convs are '
            'pruned',
            name,
        )
        out_ch = ctx.fixed(m.out_channels)
    ctx.add_layer(name, kind, ch, out_ch, m.kernel_size, m.groups, False, bias)
    return out_ch, 1


def linear_handler(
    ctx: TraceContext, name: str, m: nn.Linear, args, kwargs, out
) -> Optional[Tuple[Channels, int]]:
    """nn.Linear on the last axis: consumes it, produces a new group."""
    x = _input(name, args, kwargs)
    ch = ctx.consume(x, -1, name)
    out_ch = ctx.produce(name, m.out_features)
    ctx.add_layer(
        name,
        'linear',
        ch,
        out_ch,
        (),
        1,
        False,
        m.bias is not None,
        channel_dim=-1,
    )
    return out_ch, -1


def norm_handler(
    ctx: TraceContext, name: str, m: nn.Module, args, kwargs, out
) -> Optional[Tuple[Channels, int]]:
    """Per-channel norms pass channels on; norms mixing channels keep them.

    BatchNorm, SyncBatchNorm, InstanceNorm and GroupNorm are per-channel
    layers. A GroupNorm with several channels per group is pruned in whole
    norm groups (the plan ties them, ties.py). LayerNorm computes statistics
    across all its channels, so a pruned model would normalise differently
    from the masked one: its channels are kept.
    """
    x = _input(name, args, kwargs)
    if isinstance(m, nn.LayerNorm):
        ch = ctx.channels(x, -1, name)
        ctx.keep(ch, 'LayerNorm normalises across channels', name)
        ctx.add_layer(
            name, 'norm', ch, ch, bias=m.elementwise_affine, channel_dim=-1
        )
        return ctx.mark_dirty(ch, name), -1
    ch = ctx.channels(x, 1, name)
    groups = int(m.num_groups) if isinstance(m, nn.GroupNorm) else 0
    affine = bool(getattr(m, 'affine', False))
    ctx.add_layer(name, 'norm', ch, ch, bias=affine, norm_groups=groups)
    return ctx.mark_dirty(ch, name), 1


def is_deform_conv_pack(m: nn.Module) -> bool:
    """Duck-typed test for mmcv's (Modulated)DeformConv2dPack.

    Such a module owns a 4-D ``weight`` like a conv and a child ``conv_offset``
    (an nn.Conv2d that predicts offsets, and masks for the modulated one, from
    the same input).
    """
    w = getattr(m, 'weight', None)
    return (
        'DeformConv' in type(m).__name__
        and isinstance(getattr(m, 'conv_offset', None), nn.Conv2d)
        and isinstance(w, Tensor)
        and w.dim() == 4
    )


def deform_conv_handler(
    ctx: TraceContext, name: str, m: nn.Module, args, kwargs, out
) -> Optional[Tuple[Channels, int]]:
    """Deformable conv with its own offset conv (mmcv ``*DeformConv2dPack``).

    The main conv is pruned like a conv. The offset conv reads the same input
    channels (its in channels follow the DCN's input group); its
    ``deform_groups * 3 * k*k`` (or ``2 * k*k``) outputs are offsets and masks,
    never pruned.
    """
    x = _input(name, args, kwargs)
    ch = ctx.consume(x, 1, name)
    groups = int(getattr(m, 'groups', 1))
    off = m.conv_offset
    if groups == 1:
        out_ch = ctx.produce(name, m.weight.shape[0])
    else:
        ctx.keep(
            ch,
            f'grouped deformable conv (groups={groups}) is not supported',
            name,
        )
        out_ch = ctx.fixed(m.weight.shape[0])
    ctx.add_layer(
        name,
        'conv',
        ch,
        out_ch,
        tuple(m.weight.shape[2:]),
        groups,
        False,
        getattr(m, 'bias', None) is not None,
    )
    ctx.add_layer(
        f'{name}.conv_offset',
        'conv',
        ch,
        ctx.fixed(off.out_channels),
        off.kernel_size,
        off.groups,
        False,
        off.bias is not None,
    )
    return out_ch, 1


def is_roi_extractor(m: nn.Module) -> bool:
    """mmdet's RoI extractors (``SingleRoIExtractor``, ``GenericRoIExtractor``
    and subclasses of their base), duck-typed."""
    return type(m).__name__.endswith('RoIExtractor') and hasattr(
        m, 'roi_layers') and isinstance(getattr(m, 'out_channels', None), int)


def roi_extractor_handler(
    ctx: TraceContext, name: str, m: nn.Module, args, kwargs, out
) -> Optional[Tuple[Channels, int]]:
    """An RoI extractor keeps the pyramid channels it reads.

    It writes RoIAlign's ``[K, C, h, w]`` samples into a buffer whose width
    is the config's ``out_channels`` (not the features' width), and the box
    head flattens that buffer into its first linear (``C * h * w`` inputs).
    Pruning the pyramid would need both rewritten; mmprune keeps the
    channels feeding RoI heads and prunes everything behind the buffer.
    """
    feats = args[0] if args else kwargs.get('feats')
    for t in feats if isinstance(feats, (list, tuple)) else [feats]:
        if isinstance(t, Tensor) and ctx.info(t) is not None:
            ctx.fix_segs(ctx.channels(t, 1, name),
                         f'{name} copies them into a buffer of its '
                         "config's out_channels")
    return ctx.fixed(m.out_channels), 1


register_layer_handler(nn.modules.conv._ConvNd, conv_handler)
register_layer_handler(nn.Linear, linear_handler)
register_layer_handler(nn.modules.batchnorm._NormBase, norm_handler)
register_layer_handler(nn.GroupNorm, norm_handler)
register_layer_handler(nn.LayerNorm, norm_handler)
register_layer_handler(is_deform_conv_pack, deform_conv_handler)
register_layer_handler(is_roi_extractor, roi_extractor_handler)
