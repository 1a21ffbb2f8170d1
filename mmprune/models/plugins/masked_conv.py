"""MaskedConv2d: a Conv2d that applies its channel mask in its own forward.

The conv form of the masked-layer plugin, for mask sites no norm follows
(DLA-Up's projections, head convs): ``conv_cfg=dict(type='MaskedConv2d')``
in any mmcv ``ConvModule``. Like `MaskedBN` it is exactly ``nn.Conv2d``
until ``InTrainPruningHook`` installs masks (same parameters and state dict
keys, so plain checkpoints load), and then multiplies its output by the
multiplier the `MaskSet` hands it instead of a forward hook.
"""
from mmdet.registry import MODELS
from torch import nn

from .masked_norm import ChannelMaskMixin


@MODELS.register_module('MaskedConv2d')
class MaskedConv2d(ChannelMaskMixin, nn.Conv2d):
    """Conv2d ``[N, C_in, H, W] -> [N, C_out, H', W']`` times a mask
    ``[C_out]`` (`ChannelMaskMixin`)."""
