"""CenterNet's DLA-Up / IDA-Up neck ("DLASeg" without its heads).

Iterative Deep Aggregation (IDA) upsamples deeper levels and merges them into
shallower ones. CenterNet (Zhou et al., "Objects as Points", 2019,
``pose_dla_dcn.py``) stacks a ``DLAUp`` (IDA stages over levels
``first_level..5``) and one final ``IDAUp`` (levels
``first_level..last_level-1``) and reads its 64-channel stride-4 output.
Module names follow that code (``dla_up.ida_{i}.proj_{k}.conv``,
``...actf.0`` for the norm, ``up_{k}``, ``node_{k}``, ``ida_up...``), except
the DCN offset conv: mmcv calls it ``conv_offset``, CenterNet's DCNv2
``conv_offset_mask``.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule

from mmprune.core import is_deform_conv_pack

from ..layers import ModulatedDeformConv2dPackTorch  # noqa: F401 (registers)

__all__ = [
    'DLAUpNeck', 'DLAUp', 'IDAUp', 'DLAConvBlock', 'build_conv',
    'bilinear_kernel',
    'fill_bilinear_'
]


def bilinear_kernel(kernel_size: int) -> torch.Tensor:
    """Bilinear-interpolation kernel of an x``kernel_size // 2`` upsampler.

    Args:
        kernel_size (int): Even kernel size ``2 * f`` of a transposed conv
            with stride ``f``.

    Returns:
        Tensor: [kernel_size, kernel_size] float32 weights,
        ``w[i, j] = t[i] * t[j]`` with ``t[i] = 1 - |i - (k - 1) / 2| / f``.
        For ``k = 4``: ``t = [0.25, 0.75, 0.75, 0.25]``. Equals the original
        ``fill_up_weights`` for every even ``f`` (all DLA up factors).
    """
    if kernel_size < 2 or kernel_size % 2:
        raise ValueError(
            f'bilinear_kernel: kernel_size must be an even int >= 2, got '
            f'{kernel_size!r}')
    factor = kernel_size // 2
    center = (kernel_size - 1) / 2
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float32) -
                center).abs() / factor
    return taps[:, None] * taps[None, :]


@torch.no_grad()
def fill_bilinear_(deconv: nn.ConvTranspose2d) -> None:
    """Set every depthwise filter of ``deconv`` to :func:`bilinear_kernel`.

    ``deconv.weight`` has shape [C, 1, k, k] (groups == C); all C filters get
    the same kernel, so the layer starts as per-channel bilinear upsampling.
    """
    if deconv.weight.shape[1] != 1 or deconv.kernel_size[0] != \
            deconv.kernel_size[1]:
        raise ValueError(
            f'fill_bilinear_: expected a depthwise square kernel [C, 1, k, '
            f'k], got weight {tuple(deconv.weight.shape)}')
    kernel = bilinear_kernel(deconv.kernel_size[0])
    deconv.weight.copy_(kernel.expand_as(deconv.weight))


def build_conv(cfg: Optional[dict], in_channels: int,
               out_channels: int) -> nn.Module:
    """3x3, stride 1, padding 1 conv with bias from ``cfg`` (None: Conv2d).

    Like mmcv's ``build_conv_layer`` but looks a string type up in mmdet's
    MODELS (then its parents) whatever the default scope, so mmprune's
    ``'DCNv2Torch'`` resolves when the neck is built outside a runner.
    """
    cfg = dict(type='Conv2d') if cfg is None else dict(cfg)
    if 'type' not in cfg:
        raise KeyError(f'DLAUpNeck: conv config {cfg} has no "type" key')
    kind = cfg.pop('type')
    cls = MODELS.get(kind) if isinstance(kind, str) else kind
    if cls is None:
        raise KeyError(f'DLAUpNeck: conv type {kind!r} is not registered in '
                       'mmdet\'s MODELS (nor mmcv\'s)')
    return cls(in_channels, out_channels, 3, stride=1, padding=1, bias=True,
               **cfg)


class DLAConvBlock(nn.Module):
    """3x3 (deformable) conv + norm + ReLU: IDA-Up's "proj" and "node".

    Args:
        in_channels (int): Input channels C_in.
        out_channels (int): Output channels C_out.
        conv_cfg (dict | None): Config of the 3x3 conv, built with
            `build_conv` (3x3, stride 1, padding 1, with bias): a DCNv2
            type (``'DCNv2Torch'``, ``'DCNv2'``) keeps its own init, a plain
            conv (``None`` is ``nn.Conv2d``) gets the same start as DCNv2.
        norm_cfg (dict): Config of the norm layer.

    ``forward`` maps [N, C_in, H, W] to [N, C_out, H, W].
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.conv = build_conv(conv_cfg, in_channels, out_channels)
        if not is_deform_conv_pack(self.conv):
            # Same start as the DCN variant (mmcv / DCNv2 init):
            # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and zero bias.
            bound = 1 / math.sqrt(in_channels * 9)
            nn.init.uniform_(self.conv.weight, -bound, bound)
            nn.init.zeros_(self.conv.bias)
        # 'actf' (norm, ReLU) is the original's name; it keeps checkpoint keys.
        self.actf = nn.Sequential(
            build_norm_layer(norm_cfg, out_channels)[1], nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv, norm and ReLU; see the class docstring for shapes."""
        return self.actf(self.conv(x))


class IDAUp(nn.Module):
    """One Iterative Deep Aggregation stage.

    For ``k = 1..len(in_channels)-1`` it builds ``proj_k`` (in_channels[k] ->
    out_channels), ``up_k`` (depthwise transposed conv, x``up_factors[k]``,
    bilinear init) and ``node_k`` (out_channels -> out_channels).

    Args:
        out_channels (int): Channels C of every output.
        in_channels (Sequence[int]): Channels of the inputs it merges; entry 0
            is the anchor level, which is not projected and must already have
            C channels.
        up_factors (Sequence[int]): Upsampling of each input to the anchor's
            resolution; entries 1.. must be even (powers of 2 in DLA).
        conv_cfg, norm_cfg: See :class:`DLAConvBlock`.

    ``forward(layers, start, end)`` updates the list ``layers`` in place: for
    ``i`` in ``start+1..end-1``, ``layers[i] = node(up(proj(layers[i])) +
    layers[i-1])``, so each result is [N, C, H_start, W_start] and feeds the
    next. Returns ``layers``.
    """

    def __init__(self,
                 out_channels: int,
                 in_channels: Sequence[int],
                 up_factors: Sequence[int],
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        if len(in_channels) != len(up_factors):
            raise ValueError(
                f'IDAUp: in_channels {tuple(in_channels)} and up_factors '
                f'{tuple(up_factors)} must have the same length')
        self.num_inputs = len(in_channels)
        for k in range(1, len(in_channels)):
            f = int(up_factors[k])
            if f < 2 or f % 2:
                raise ValueError(
                    f'IDAUp: up_factors[{k}] must be an even int >= 2, got '
                    f'{up_factors[k]!r}')
            self.add_module(
                f'proj_{k}',
                DLAConvBlock(in_channels[k], out_channels, conv_cfg, norm_cfg))
            up = nn.ConvTranspose2d(
                out_channels, out_channels, 2 * f, stride=f, padding=f // 2,
                output_padding=0, groups=out_channels, bias=False)
            fill_bilinear_(up)
            self.add_module(f'up_{k}', up)
            self.add_module(
                f'node_{k}',
                DLAConvBlock(out_channels, out_channels, conv_cfg, norm_cfg))

    def forward(self, layers: List[torch.Tensor], start: int,
                end: int) -> List[torch.Tensor]:
        """Merge ``layers[start+1:end]`` upwards in place (class docstring)."""
        if end - start > self.num_inputs:
            raise ValueError(
                f'IDAUp: built for {self.num_inputs} inputs, asked to merge '
                f'layers[{start}:{end}]')
        for i in range(start + 1, end):
            k = i - start
            up = getattr(self, f'up_{k}')(getattr(self, f'proj_{k}')(
                layers[i]))
            layers[i] = getattr(self, f'node_{k}')(up + layers[i - 1])
        return layers


class DLAUp(nn.Module):
    """Stack of IDA stages, deepest first, as CenterNet's ``DLAUp``.

    Args:
        channels (Sequence[int]): Channels of the L input levels, shallow to
            deep (e.g. 64, 128, 256, 512).
        scales (Sequence[int]): Their strides relative to the first one
            (e.g. 1, 2, 4, 8).
        conv_cfg, norm_cfg: See :class:`DLAConvBlock`.

    ``forward(layers)`` takes the L level tensors [N, channels[j], H/s_j,
    W/s_j] and returns L tensors: entry j has channels[j] channels at the
    resolution of level j; the last one is the deepest input unchanged.
    Stage ``ida_i`` (i = 0..L-2) merges levels L-2-i..L-1.
    """

    def __init__(self,
                 channels: Sequence[int],
                 scales: Sequence[int],
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.channels = tuple(channels)
        scales = [int(s) for s in scales]
        in_channels = list(channels)
        num = len(channels)
        for i in range(num - 1):
            j = num - 2 - i
            self.add_module(
                f'ida_{i}',
                IDAUp(channels[j], in_channels[j:],
                      [s // scales[j] for s in scales[j:]], conv_cfg,
                      norm_cfg))
            # After this stage every level deeper than j lives at level j's
            # resolution with level j's channels.
            for k in range(j + 1, num):
                scales[k] = scales[j]
                in_channels[k] = channels[j]

    def forward(self, layers: List[torch.Tensor]) -> List[torch.Tensor]:
        """Run all IDA stages; see the class docstring for shapes."""
        layers = list(layers)
        num = len(layers)
        outs = [layers[-1]]
        for i in range(num - 1):
            getattr(self, f'ida_{i}')(layers, num - 2 - i, num)
            outs.insert(0, layers[-1])
        return outs


@MODELS.register_module()
class DLAUpNeck(BaseModule):
    """CenterNet's DLA-Up + IDA-Up neck over a 6-level DLA backbone.

    Args:
        in_channels (Sequence[int]): Channels of backbone levels 0..5.
        first_level (int): Shallowest level used (output stride
            ``2**first_level``); 1..4, CenterNet uses 2 (stride 4).
        last_level (int): The final IDA-Up merges levels
            ``first_level..last_level-1``; ``first_level < last_level <= 5``.
        out_channels (int): Output channels; must equal
            ``in_channels[first_level]``, since the original adds that level to
            the merged maps without projecting it.
        use_dcn (bool): Deformable (DCNv2) 3x3 convs in "proj"/"node" layers,
            built from ``dcn_cfg``; False gives plain 3x3 convs built from
            ``conv_cfg``.
        dcn_cfg (dict): The DCNv2 layer when ``use_dcn``. The default
            ``'DCNv2Torch'`` is mmcv's ``DCNv2`` (same parameters and keys)
            with a fast CPU forward; ``dict(type='DCNv2')`` gives mmcv's own.
        conv_cfg (dict | None): Plain-conv config; only with ``use_dcn=False``.
        norm_cfg (dict): Norm config of "proj"/"node" layers.
        init_cfg (dict | list | None): Init config. By default, as in the
            original: DCN weights U(+-1/sqrt(9 C_in)), zero bias, zero offset
            conv; norms 1/0; upsamplers bilinear (set at construction).

    ``forward(feats)`` takes the 6 backbone levels [N, in_channels[i],
    H/2**i, W/2**i] (H, W multiples of 32) and returns a 1-tuple with
    [N, out_channels, H/2**first_level, W/2**first_level].
    """

    def __init__(self,
                 in_channels: Sequence[int] = (16, 32, 64, 128, 256, 512),
                 first_level: int = 2,
                 last_level: int = 5,
                 out_channels: int = 64,
                 use_dcn: bool = True,
                 dcn_cfg: dict = dict(type='DCNv2Torch'),
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        in_channels = tuple(in_channels)
        if len(in_channels) != 6:
            raise ValueError(
                f'DLAUpNeck: in_channels must list the 6 DLA levels, got '
                f'{in_channels}')
        if not 1 <= first_level <= 4:
            raise ValueError(
                f'DLAUpNeck: first_level must be in 1..4 (output stride 2, '
                f'4, 8 or 16), got {first_level!r}')
        if not first_level < last_level <= 5:
            raise ValueError(
                f'DLAUpNeck: last_level must satisfy first_level '
                f'({first_level}) < last_level <= 5, got {last_level!r}')
        if out_channels != in_channels[first_level]:
            raise ValueError(
                f'DLAUpNeck: out_channels ({out_channels}) must equal '
                f'in_channels[first_level] ({in_channels[first_level]}): '
                f'the final IDA-Up adds that level unprojected')
        if use_dcn and conv_cfg is not None:
            raise ValueError(
                'DLAUpNeck: conv_cfg only applies to use_dcn=False; with '
                'use_dcn=True every 3x3 conv is built from dcn_cfg')
        block_cfg = dict(dcn_cfg) if use_dcn else conv_cfg
        self.in_channels = in_channels
        self.first_level = first_level
        self.last_level = last_level
        self.out_channels = out_channels
        self.out_stride = 2**first_level
        channels = in_channels[first_level:]
        self.dla_up = DLAUp(channels, [2**i for i in range(len(channels))],
                            block_cfg, norm_cfg)
        self.ida_up = IDAUp(
            out_channels, in_channels[first_level:last_level],
            [2**i for i in range(last_level - first_level)], block_cfg,
            norm_cfg)
        built = self.ida_up.proj_1.conv
        if use_dcn and not is_deform_conv_pack(built):
            raise ValueError(
                f'DLAUpNeck: dcn_cfg must build a deformable conv with its '
                f'own offset conv (e.g. type=\'DCNv2Torch\' or \'DCNv2\'), '
                f'got {type(built).__name__} from {dcn_cfg}')

    def input_widths(self) -> dict:
        """``{level: channels}`` the neck's layers read from the backbone.

        Read off the layers rather than ``in_channels``, so that a neck whose
        channels were pruned (``mmprune`` export) checks the widths it was
        sliced to. Levels below ``first_level`` are not read.
        """
        num = len(self.in_channels) - self.first_level
        widths = {}
        for i in range(num - 1):
            # Stage ida_i projects raw level first_level + num - 1 - i.
            proj = getattr(self.dla_up, f'ida_{i}').proj_1.conv
            widths[self.first_level + num - 1 - i] = proj.in_channels
        # The shallowest level is added, unprojected, to the last stage's
        # upsampled projection.
        last = getattr(self.dla_up, f'ida_{num - 2}')
        widths[self.first_level] = last.proj_1.conv.out_channels
        return widths

    def _check_inputs(self, feats: Sequence[torch.Tensor]) -> None:
        """Raise if ``feats`` are not the 6 consistent DLA levels."""
        if len(feats) != len(self.in_channels):
            raise ValueError(
                f'DLAUpNeck: expected {len(self.in_channels)} backbone levels '
                f'(backbone out_indices=(0, 1, 2, 3, 4, 5)), got {len(feats)}')
        widths = self.input_widths()
        for i, x in enumerate(feats):
            if x.dim() != 4 or x.shape[1] != widths.get(i, x.shape[1]):
                raise ValueError(
                    f'DLAUpNeck: level {i} must be [N, {widths.get(i, "C")}, '
                    f'H, W], got {tuple(x.shape)}')
        for i in range(self.first_level, len(feats) - 1):
            h, w = feats[i].shape[-2:]
            if (h, w) != (2 * feats[i + 1].shape[-2],
                          2 * feats[i + 1].shape[-1]):
                raise ValueError(
                    f'DLAUpNeck: level {i} is {h}x{w} but level {i + 1} is '
                    f'{tuple(feats[i + 1].shape[-2:])}; input H and W must be '
                    f'multiples of 32')

    def forward(self, feats: Sequence[torch.Tensor]
                ) -> Tuple[torch.Tensor]:
        """Aggregate the levels; see the class docstring for shapes."""
        self._check_inputs(feats)
        ups = self.dla_up(list(feats[self.first_level:]))
        merged = ups[:self.last_level - self.first_level]
        self.ida_up(merged, 0, len(merged))
        return (merged[-1], )
