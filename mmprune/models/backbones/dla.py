"""DLA (Deep Layer Aggregation) backbone as used by CenterNet.

Structure and module names follow the original DLA / CenterNet code
(Yu et al., "Deep Layer Aggregation", CVPR 2018; Zhou et al., "Objects as
Points", 2019), so that the original ImageNet checkpoint (``dla34-ba72cf86``)
and timm's ``dla34`` weights load without renaming by hand.

Every conv is built with ``mmcv.cnn.build_conv_layer(conv_cfg, ...)`` and every
norm with ``mmcv.cnn.build_norm_layer(norm_cfg, ...)``, so a plugin layer type
(e.g. a masked conv) can be swapped in from the config.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmdet.registry import MODELS
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.runner import CheckpointLoader
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    'DLA', 'DLABasicBlock', 'DLARoot', 'DLATree', 'DLA_ARCH_SETTINGS',
    'map_timm_dla_keys', 'dla_dead_keys', 'load_dla_checkpoint'
]


class DLABasicBlock(nn.Module):
    """Two 3x3 conv + norm layers with a residual add (ResNet basic block).

    Args:
        in_channels (int): Input channels C_in.
        out_channels (int): Output channels C_out.
        stride (int): Stride of the first conv; the output has
            H/stride x W/stride pixels.
        conv_cfg (dict | None): Config of the conv layers.
        norm_cfg (dict): Config of the norm layers.

    ``forward(x, shortcut=None)`` maps [N, C_in, H, W] to
    [N, C_out, H/stride, W/stride]. ``shortcut`` is what gets added before the
    last ReLU; it defaults to ``x``, which then must already have the output
    shape (the parent tree passes a pooled / projected one otherwise).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.conv1 = build_conv_layer(
            conv_cfg, in_channels, out_channels, 3, stride=stride, padding=1,
            bias=False)
        self.bn1 = build_norm_layer(norm_cfg, out_channels)[1]
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = build_conv_layer(
            conv_cfg, out_channels, out_channels, 3, stride=1, padding=1,
            bias=False)
        self.bn2 = build_norm_layer(norm_cfg, out_channels)[1]
        self.stride = stride

    def forward(self, x: torch.Tensor,
                shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Apply the block; see the class docstring for shapes."""
        if shortcut is None:
            shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Out-of-place add: a forward hook on bn2 (e.g. a channel mask) may
        # hand back a tensor that autograd still needs unchanged.
        out = out + shortcut
        return self.relu(out)


class DLARoot(nn.Module):
    """Aggregation node: concat children, 1x1 conv, norm, (residual), ReLU.

    Args:
        in_channels (int): Sum of the children's channels.
        out_channels (int): Output channels.
        residual (bool): Add the first child to the output (False in DLA-34).
        conv_cfg (dict | None): Config of the conv layer.
        norm_cfg (dict): Config of the norm layer.

    ``forward(*children)`` takes tensors [N, C_i, H, W] with
    ``sum(C_i) == in_channels`` and returns [N, out_channels, H, W].
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 residual: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        # The original takes a root kernel size but always builds a 1x1 conv
        # (the size only changes its padding); 1x1 is what every released
        # checkpoint holds, so 1x1 it is.
        self.conv = build_conv_layer(
            conv_cfg, in_channels, out_channels, 1, stride=1, padding=0,
            bias=False)
        self.bn = build_norm_layer(norm_cfg, out_channels)[1]
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual

    def forward(self, *children: torch.Tensor) -> torch.Tensor:
        """Aggregate the children; see the class docstring for shapes."""
        out = self.bn(self.conv(torch.cat(children, 1)))
        if self.residual:
            out = out + children[0]
        return self.relu(out)


class DLATree(nn.Module):
    """Hierarchical DLA tree of ``levels`` depth over residual blocks.

    A tree of depth 1 holds two blocks (``tree1``, ``tree2``) and a ``root``
    that aggregates ``[tree2 out, tree1 out, *children]``. A deeper tree holds
    two sub-trees; its second sub-tree's root also aggregates the first
    sub-tree's output (and, with ``level_root``, the pooled input).

    Args:
        levels (int): Depth of the tree (>= 1).
        block (type): Residual block class, e.g. :class:`DLABasicBlock`.
        in_channels (int): Input channels C_in.
        out_channels (int): Output channels C_out.
        stride (int): Spatial downsampling of the tree (1 or 2 here).
        level_root (bool): Also feed the (pooled) tree input to the root.
        root_dim (int): Input channels of the root; 0 means 2 * C_out.
        root_residual (bool): Residual add in the roots.
        conv_cfg (dict | None): Config of the conv layers.
        norm_cfg (dict): Config of the norm layers.

    ``forward(x, shortcut=None, children=None)`` maps [N, C_in, H, W] to
    [N, C_out, H/stride, W/stride].

    Note:
        Like the original, every tree whose ``C_in != C_out`` owns a
        ``project`` (1x1 conv + norm) branch. It is used only when
        ``levels == 1``: for deeper trees the original computes it and then
        discards it (the sub-tree ignores the shortcut it is given). We keep
        the module, so that original checkpoints load strictly and parameter
        counts match the published ones, but we do not run it. It therefore
        never appears in a forward trace and costs no MACs.
    """

    def __init__(self,
                 levels: int,
                 block: type,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 level_root: bool = False,
                 root_dim: int = 0,
                 root_residual: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        if levels < 1:
            raise ValueError(f'DLATree: levels must be >= 1, got {levels}')
        if root_dim == 0:
            root_dim = 2 * out_channels
        if level_root:
            root_dim += in_channels
        layer_cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)
        if levels == 1:
            self.tree1 = block(in_channels, out_channels, stride, **layer_cfg)
            self.tree2 = block(out_channels, out_channels, 1, **layer_cfg)
            self.root = DLARoot(root_dim, out_channels, root_residual,
                                **layer_cfg)
        else:
            self.tree1 = DLATree(
                levels - 1, block, in_channels, out_channels, stride,
                root_dim=0, root_residual=root_residual, **layer_cfg)
            self.tree2 = DLATree(
                levels - 1, block, out_channels, out_channels, 1,
                root_dim=root_dim + out_channels,
                root_residual=root_residual, **layer_cfg)
        self.level_root = level_root
        self.root_dim = root_dim
        self.levels = levels
        self.downsample = (
            nn.MaxPool2d(stride, stride=stride) if stride > 1 else None)
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Sequential(
                build_conv_layer(conv_cfg, in_channels, out_channels, 1,
                                 stride=1, bias=False),
                build_norm_layer(norm_cfg, out_channels)[1])

    def forward(self,
                x: torch.Tensor,
                shortcut: Optional[torch.Tensor] = None,
                children: Optional[List[torch.Tensor]] = None
                ) -> torch.Tensor:
        """Run the tree; see the class docstring for shapes.

        ``shortcut`` is accepted for call compatibility with blocks and is
        ignored, exactly as in the original; ``children`` are extra root
        inputs handed down by the parent tree.
        """
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            residual = (
                self.project(bottom) if self.project is not None else bottom)
            x1 = self.tree1(x, residual)
            x2 = self.tree2(x1)
            return self.root(x2, x1, *children)
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children=children)


#: Architectures by depth. ``levels``: conv count of level0/level1, then tree
#: depth of level2..level5; ``channels``: output channels of level0..level5.
#: Add an entry (and its block class) to support another depth.
DLA_ARCH_SETTINGS: Dict[int, dict] = {
    34: dict(
        block=DLABasicBlock,
        levels=(1, 1, 1, 2, 2, 1),
        channels=(16, 32, 64, 128, 256, 512),
        residual_root=False),
}


@MODELS.register_module()
class DLA(BaseModule):
    """DLA backbone (CenterNet's DLA-34) returning multi-level features.

    Level ``i`` (0..5) outputs ``channels[i]`` channels at stride ``2**i``;
    for DLA-34 that is 16, 32, 64, 128, 256, 512 channels at strides 1..32.

    Args:
        depth (int): Network depth; only 34 is supported.
        in_channels (int): Input image channels.
        out_indices (Sequence[int]): Strictly increasing levels (0..5) to
            return. Levels above the largest index are not run.
        frozen_stages (int): -1 freezes nothing; ``k`` in 0..5 freezes (stops
            the gradient of, and puts in eval mode) ``base_layer`` and
            ``level0``..``level{k}``. Unlike mmdet's ResNet, where 0 means
            "stem only", ``k`` lines up with ``out_indices`` here.
        norm_eval (bool): Keep every BatchNorm in eval mode during training
            (running stats frozen).
        conv_cfg (dict | None): Config of every conv layer.
        norm_cfg (dict): Config of every norm layer.
        init_cfg (dict | list | None): Init config. ``dict(type='Pretrained',
            checkpoint=PATH, prefix=None)`` loads a local checkpoint in the
            original DLA or timm ``dla34`` naming, see
            :func:`load_dla_checkpoint`.

    Attributes:
        channels (tuple[int]): Output channels of all six levels.
        strides (tuple[int]): Strides (pixels) of all six levels.
        out_channels (tuple[int]): Channels of the returned levels.
        out_strides (tuple[int]): Strides of the returned levels.
        feature_info (list[dict]): Per returned level: ``num_chs``,
            ``reduction`` (stride) and ``module`` name, as in timm.

    ``forward(x)`` takes [N, in_channels, H, W] images and returns a tuple of
    [N, channels[i], H / 2**i, W / 2**i] for ``i`` in ``out_indices``. H and
    W must be multiples of ``2**max(out_indices)`` (32 for all levels).
    """

    arch_settings = DLA_ARCH_SETTINGS

    def __init__(self,
                 depth: int = 34,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3, 4, 5),
                 frozen_stages: int = -1,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = False,
                 conv_cfg: Optional[dict] = None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise KeyError(
                f'DLA: unsupported depth={depth!r}; supported depths are '
                f'{sorted(self.arch_settings)}')
        arch = self.arch_settings[depth]
        levels, channels = arch['levels'], arch['channels']
        num_levels = len(channels)
        out_indices = tuple(out_indices)
        if (not out_indices
                or any(not isinstance(i, int) or not 0 <= i < num_levels
                       for i in out_indices)
                or any(b <= a for a, b in zip(out_indices, out_indices[1:]))):
            raise ValueError(
                f'DLA: out_indices must be a non-empty, strictly increasing '
                f'sequence of ints in [0, {num_levels - 1}], got '
                f'{out_indices!r}')
        if not (isinstance(frozen_stages, int)
                and -1 <= frozen_stages < num_levels):
            raise ValueError(
                f'DLA: frozen_stages must be an int in [-1, '
                f'{num_levels - 1}], got {frozen_stages!r}')

        self.depth = depth
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.channels = tuple(channels)
        self.strides = tuple(2**i for i in range(num_levels))
        self.out_channels = tuple(self.channels[i] for i in out_indices)
        self.out_strides = tuple(self.strides[i] for i in out_indices)
        self.feature_info = [
            dict(num_chs=self.channels[i], reduction=self.strides[i],
                 module=f'level{i}') for i in out_indices
        ]

        layer_cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)
        self.base_layer = nn.Sequential(
            build_conv_layer(conv_cfg, in_channels, channels[0], 7, stride=1,
                             padding=3, bias=False),
            build_norm_layer(norm_cfg, channels[0])[1],
            nn.ReLU(inplace=True))
        self.level0 = self._make_conv_level(channels[0], channels[0],
                                            levels[0], 1, **layer_cfg)
        self.level1 = self._make_conv_level(channels[0], channels[1],
                                            levels[1], 2, **layer_cfg)
        block, residual_root = arch['block'], arch['residual_root']
        for i in range(2, num_levels):
            # level2 sees only its own blocks; level3..5 also aggregate their
            # pooled input at the root, as in the original.
            self.add_module(
                f'level{i}',
                DLATree(levels[i], block, channels[i - 1], channels[i],
                        stride=2, level_root=i > 2,
                        root_residual=residual_root, **layer_cfg))
        self._num_run_levels = max(out_indices) + 1
        self._freeze_stages()

    @staticmethod
    def _make_conv_level(in_channels: int, out_channels: int, num_convs: int,
                         stride: int, conv_cfg: Optional[dict],
                         norm_cfg: dict) -> nn.Sequential:
        """Stack ``num_convs`` 3x3 conv-norm-ReLU; the first one strides."""
        modules = []
        for i in range(num_convs):
            modules += [
                build_conv_layer(conv_cfg, in_channels, out_channels, 3,
                                 stride=stride if i == 0 else 1, padding=1,
                                 bias=False),
                build_norm_layer(norm_cfg, out_channels)[1],
                nn.ReLU(inplace=True)
            ]
            in_channels = out_channels
        return nn.Sequential(*modules)

    def _freeze_stages(self) -> None:
        """Freeze ``base_layer`` and ``level0..level{frozen_stages}``."""
        if self.frozen_stages < 0:
            return
        names = ['base_layer'] + [
            f'level{i}' for i in range(self.frozen_stages + 1)
        ]
        for name in names:
            module = getattr(self, name)
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'DLA':
        """Set train mode, keeping frozen stages (and norms if
        ``norm_eval``) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_weights(self) -> None:
        """Initialise; a ``Pretrained`` entry of init_cfg goes through the DLA
        key mapping of :func:`load_dla_checkpoint` instead of mmengine's plain
        non-strict loader, so timm and original checkpoints both load and
        anything else fails loudly. Other entries run first, as in mmengine,
        so the checkpoint overwrites them."""
        cfgs = self.init_cfg
        if isinstance(cfgs, dict):
            cfgs = [cfgs]
        cfgs = list(cfgs or [])
        pretrained = [c for c in cfgs if c.get('type') == 'Pretrained']
        if not pretrained or self._is_init:
            super().init_weights()
            return
        if len(pretrained) > 1:
            raise ValueError(
                f'DLA: init_cfg has {len(pretrained)} Pretrained entries, '
                f'expected at most one')
        cfg = pretrained[0]
        if 'checkpoint' not in cfg:
            raise KeyError(
                "DLA: init_cfg=dict(type='Pretrained') needs a 'checkpoint' "
                'key with the path of a local checkpoint')
        unknown = set(cfg) - {'type', 'checkpoint', 'prefix', 'map_location'}
        if unknown:
            raise KeyError(
                f'DLA: unknown keys {sorted(unknown)} in Pretrained init_cfg; '
                f'expected checkpoint, prefix, map_location')
        original_cfg = self.init_cfg
        self.init_cfg = [c for c in cfgs if c is not cfg] or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = original_cfg
        load_dla_checkpoint(self, cfg['checkpoint'], prefix=cfg.get('prefix'),
                            map_location=cfg.get('map_location', 'cpu'))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Return the ``out_indices`` level features; see class docstring."""
        if x.dim() != 4 or x.shape[1] != self.base_layer[0].in_channels:
            raise ValueError(
                f'DLA.forward: expected input of shape [N, '
                f'{self.base_layer[0].in_channels}, H, W], got '
                f'{tuple(x.shape)}')
        # A stride-2 tree max-pools (floor) its shortcut but strides its conv
        # (ceil): an odd size before any tree breaks the residual add.
        multiple = 2**(self._num_run_levels - 1)
        if self._num_run_levels > 2 and (x.shape[2] % multiple
                                         or x.shape[3] % multiple):
            raise ValueError(
                f'DLA.forward: input H and W must be multiples of {multiple} '
                f'to reach level {self._num_run_levels - 1}, got '
                f'{tuple(x.shape[2:])}')
        x = self.base_layer(x)
        outs = []
        for i in range(self._num_run_levels):
            x = getattr(self, f'level{i}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


# ---------------------------------------------------------------------------
# Pretrained weights
# ---------------------------------------------------------------------------
def dla_dead_keys(model: DLA) -> List[str]:
    """State-dict keys of ``model`` that its forward never uses.

    These are the ``project`` branches of trees deeper than one level
    (``level3.project.*`` and ``level4.project.*`` in DLA-34). Original
    checkpoints hold them; timm dropped them. Returns sorted key names.
    """
    dead = []
    for name, module in model.named_modules():
        if (isinstance(module, DLATree) and module.levels > 1
                and module.project is not None):
            dead += [f'{name}.project.{k}'
                     for k in module.project.state_dict()]
    return sorted(dead)


def map_timm_dla_keys(state_dict: Dict[str, torch.Tensor]
                      ) -> 'OrderedDict[str, torch.Tensor]':
    """Map a timm ``dla34`` state dict onto :class:`DLA` key names.

    timm's DLA (``timm/models/dla.py``: ``DlaBasic``, ``DlaRoot``,
    ``DlaTree``) kept the original attribute names (``base_layer.0``,
    ``level{i}.tree1.conv1``, ``...root.conv``, ``...project.0``), so backbone
    keys pass through unchanged. The differences handled here:

    * ``fc.*``: timm's (and the original's) 1x1-conv ImageNet classifier is
      dropped, a detector does not use it.
    * timm removed the unused ``project`` of deeper trees
      (``level3.project``, ``level4.project``); those keys are simply absent
      and :func:`load_dla_checkpoint` accepts that (see :func:`dla_dead_keys`).

    The same function accepts the original DLA naming (a superset of timm's).

    Args:
        state_dict (dict[str, Tensor]): Flat checkpoint state dict.

    Returns:
        OrderedDict[str, Tensor]: The backbone entries under our names.
    """
    mapped = OrderedDict()
    for key, value in state_dict.items():
        if key == 'fc' or key.startswith('fc.'):
            continue
        mapped[key] = value
    return mapped


def _unwrap_checkpoint(checkpoint, filename: str) -> Dict[str, torch.Tensor]:
    """Return the flat state dict inside a loaded checkpoint object."""
    if not isinstance(checkpoint, dict):
        raise TypeError(
            f'{filename}: expected a checkpoint dict, got '
            f'{type(checkpoint).__name__}')
    for wrapper in ('state_dict', 'model', 'module'):
        if wrapper in checkpoint and isinstance(checkpoint[wrapper], dict):
            checkpoint = checkpoint[wrapper]
            break
    # Checkpoints saved from DataParallel / DDP prefix every key.
    if checkpoint and all(k.startswith('module.') for k in checkpoint):
        checkpoint = OrderedDict(
            (k[len('module.'):], v) for k, v in checkpoint.items())
    return checkpoint


def load_dla_checkpoint(model: DLA,
                        filename: str,
                        prefix: Optional[str] = None,
                        map_location: str = 'cpu') -> List[str]:
    """Load a DLA checkpoint (original or timm naming) into ``model``.

    Every backbone key of the checkpoint must match a parameter or buffer of
    ``model`` with the same shape, and every key of ``model`` must be
    present, except the unused ``project`` branches of :func:`dla_dead_keys`
    (absent from timm checkpoints) and BatchNorm ``num_batches_tracked``
    (absent from pre-1.0 PyTorch checkpoints such as ``dla34-ba72cf86.pth``).
    Anything else raises, naming the keys.

    Args:
        model (DLA): Backbone to load into.
        filename (str): Local checkpoint path (nothing is downloaded), or any
            URI that ``mmengine.runner.CheckpointLoader`` reads.
        prefix (str | None): Load only keys starting with this prefix and
            strip it, e.g. ``'base.'`` for a CenterNet ``ctdet_*.pth`` model
            or ``'backbone.'`` for an mmdet detector checkpoint.
        map_location (str): Device to load tensors to.

    Returns:
        list[str]: Keys of ``model`` that kept their initial values (the dead
        ``project`` keys when loading timm weights).
    """
    checkpoint = CheckpointLoader.load_checkpoint(
        filename, map_location=map_location)
    state_dict = _unwrap_checkpoint(checkpoint, filename)
    if prefix is not None:
        if not prefix.endswith('.'):
            prefix += '.'
        state_dict = OrderedDict((k[len(prefix):], v)
                                 for k, v in state_dict.items()
                                 if k.startswith(prefix))
        if not state_dict:
            raise KeyError(
                f'{filename}: no key starts with prefix {prefix!r} '
                f'(init_cfg.prefix)')
    state_dict = map_timm_dla_keys(state_dict)

    own = model.state_dict()
    unexpected = sorted(set(state_dict) - set(own))
    if unexpected:
        # A detector checkpoint nests the backbone under one prefix; name it.
        prefixes = sorted({
            k.split('.', 1)[0] + '.'
            for k in unexpected if k.split('.', 1)[-1] in own
        })
        hint = (f'its backbone keys start with {prefixes}, set '
                f'init_cfg.prefix' if prefixes else
                f'is this a DLA-{model.depth} checkpoint?')
        raise KeyError(
            f'{filename}: {len(unexpected)} keys do not belong to DLA-'
            f'{model.depth} ({hint}): {unexpected[:10]}')
    bad_shapes = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state_dict.items() if v.shape != own[k].shape
    ]
    if bad_shapes:
        raise ValueError(f'{filename}: shape mismatch: {bad_shapes[:10]}')
    allowed_missing = set(dla_dead_keys(model))
    missing = sorted(set(own) - set(state_dict))
    hard_missing = [
        k for k in missing if k not in allowed_missing
        and not k.endswith('num_batches_tracked')
    ]
    if hard_missing:
        raise KeyError(
            f'{filename}: {len(hard_missing)} DLA-{model.depth} keys are '
            f'missing from the checkpoint: {hard_missing[:10]}')
    # strict=False only for the tolerated keys checked above.
    model.load_state_dict(state_dict, strict=False)
    kept = [k for k in missing if k in allowed_missing]
    print_log(
        f'DLA-{model.depth}: loaded {len(state_dict)} tensors from '
        f'{filename}' + (f'; {len(kept)} unused project tensors keep their '
                         f'init ({kept[0].split(".project")[0]}...)'
                         if kept else ''),
        logger='current')
    return missing
