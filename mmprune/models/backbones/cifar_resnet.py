"""The CIFAR ResNets of He et al. (CVPR 2016, section 4.2): ResNet-20 ... 110.

Three stages of ``n`` basic blocks on 16, 32 and 64 channels after a 3x3 stem
conv with 16 channels, ``depth = 6 n + 2`` (20, 32, 44, 56, 110). Stages 2
and 3 halve the feature map in their first block. The paper's parameter
counts (option A): ResNet-20 0.27 M, ResNet-56 0.85 M, ResNet-110 1.7 M.

Shortcuts where the width doubles (the paper's options):

* ``'A'``: the identity, subsampled by 2 and zero-padded to the new width.
  Parameter-free, the paper's CIFAR choice. The zero channels are a constant
  that the channel tracer cannot couple, so under pruning each stage's
  residual width is kept whole; use it to reproduce dense numbers.
* ``'B'`` (default): a 1x1 conv with stride 2 and a BatchNorm. Adds 2.7 k
  parameters to every depth, and makes every stage's residual width a
  prunable group, which is what Torch-Pruning and mmprune prune.

This is not mmpretrain's ``ResNet_CIFAR``, which is the 4-stage ImageNet
ResNet (64..512 channels) with a 3x3 stem.
"""
from typing import Optional, Sequence, Tuple

import torch.nn.functional as F
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

__all__ = ['CifarResNet', 'CifarBasicBlock', 'CIFAR_DEPTHS']

#: Depths the paper trains, and any other ``6 n + 2``.
CIFAR_DEPTHS = (20, 32, 44, 56, 110)
#: Widths of the three stages.
STAGE_WIDTHS = (16, 32, 64)


class _PadShortcut(nn.Module):
    """Option A: ``x[:, :, ::s, ::s]`` zero-padded to ``out_channels``.

    [N, C_in, H, W] -> [N, C_out, H/s, W/s]; the extra channels are 0.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        # Pad order is last dim first: (W, W, H, H, C_front, C_back).
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class CifarBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

    [N, C_in, H, W] -> [N, C_out, H/stride, W/stride].
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 shortcut: str = 'B', conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.conv1 = build_conv_layer(conv_cfg, in_channels, out_channels, 3,
                                      stride=stride, padding=1, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, out_channels)[1]
        self.conv2 = build_conv_layer(conv_cfg, out_channels, out_channels,
                                      3, padding=1, bias=False)
        self.bn2 = build_norm_layer(norm_cfg, out_channels)[1]
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            if shortcut == 'A':
                self.downsample = _PadShortcut(in_channels, out_channels,
                                               stride)
            else:
                self.downsample = nn.Sequential(
                    build_conv_layer(conv_cfg, in_channels, out_channels, 1,
                                     stride=stride, bias=False),
                    build_norm_layer(norm_cfg, out_channels)[1])

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


@MODELS.register_module()
class CifarResNet(BaseModule):
    """He et al.'s CIFAR ResNet (3 stages, 16/32/64 channels).

    Args:
        depth: ``6 n + 2`` (20, 32, 44, 56, 110).
        shortcut: ``'A'`` (zero-pad identity) or ``'B'`` (1x1 projection
            where the width doubles); see the module docstring.
        in_channels: image channels (3; 1 for grey digits).
        out_indices: stages whose outputs are returned (0, 1, 2); the
            classifier neck takes the last.
        conv_cfg, norm_cfg: mmcv layer configs, so a plugin conv or norm
            (e.g. a masked one) can be swapped in.
        init_cfg: mmengine init config; default Kaiming for convs.

    ``forward`` maps [N, in_channels, H, W] to a tuple of
    [N, 16 * 2**i, H / 2**i, W / 2**i] for ``i`` in ``out_indices``.
    """

    def __init__(self, depth: int = 20, shortcut: str = 'B',
                 in_channels: int = 3, out_indices: Sequence[int] = (2, ),
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None):
        if init_cfg is None:
            init_cfg = [dict(type='Kaiming', layer='Conv2d'),
                        dict(type='Constant', val=1,
                             layer=['_BatchNorm', 'GroupNorm'])]
        super().__init__(init_cfg=init_cfg)
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f'CifarResNet.depth must be 6 n + 2 with n >= 1 '
                             f'(e.g. {CIFAR_DEPTHS}), got {depth!r}')
        if shortcut not in ('A', 'B'):
            raise ValueError("CifarResNet.shortcut must be 'A' (zero-pad) or "
                             f"'B' (1x1 projection), got {shortcut!r}")
        bad = [i for i in out_indices if i not in (0, 1, 2)]
        if bad or not out_indices:
            raise ValueError('CifarResNet.out_indices must be a non-empty '
                             f'subset of (0, 1, 2), got {out_indices!r}')
        self.depth, self.shortcut = depth, shortcut
        self.out_indices = tuple(out_indices)
        blocks = (depth - 2) // 6
        self.conv1 = build_conv_layer(conv_cfg, in_channels, STAGE_WIDTHS[0],
                                      3, padding=1, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, STAGE_WIDTHS[0])[1]
        self.relu = nn.ReLU(inplace=True)
        width = STAGE_WIDTHS[0]
        for i, out in enumerate(STAGE_WIDTHS):
            layers = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(CifarBasicBlock(width, out, stride, shortcut,
                                              conv_cfg, norm_cfg))
                width = out
            self.add_module(f'layer{i + 1}', nn.Sequential(*layers))

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        x = self.relu(self.bn1(self.conv1(x)))
        outs = []
        for i in range(3):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

