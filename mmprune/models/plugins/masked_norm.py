"""MaskedBN: a BatchNorm2d that applies its channel mask in its own forward.

The registered form of the masked-conv plugin. Name it where a backbone or
neck builds its norms through mmcv, e.g.
``backbone=dict(type='DLA', norm_cfg=dict(type='MaskedBN'))`` or
``norm_cfg=dict(type='MaskedBN', requires_grad=True)`` in a ResNet.

Until a mask is attached it is exactly ``nn.BatchNorm2d`` (same parameters,
same state dict keys, so checkpoints of the plain model load). When
``InTrainPruningHook`` installs masks and this layer is a mask site, the
`MaskSet` hands it the site's multiplier instead of registering a forward
hook: the mask is then part of the module's forward, visible in
``print(model)``, and applied after the norm as the method requires. Layers
the plugin is not used for are masked by the model-level installer (forward
hooks), so both can be mixed.
"""
from typing import Callable, Optional

from mmdet.registry import MODELS
from torch import Tensor, nn


class ChannelMaskMixin:
    """``set_channel_mask(fn)`` and the multiply after the layer's forward.

    ``fn() -> Tensor[C]`` (binary, with the straight-through gradient) is
    called on every forward; ``None`` removes it. Mixed in before the torch
    layer class, so the parameters and state dict keys are the layer's.
    """

    _mask_fn: Optional[Callable[[], Tensor]] = None

    def set_channel_mask(self, fn: Optional[Callable[[], Tensor]]) -> None:
        """Attach (or with ``None`` detach) the mask multiplier."""
        if fn is not None and not callable(fn):
            raise TypeError(f'{type(self).__name__}.set_channel_mask expects '
                            f'a callable returning a [C] tensor or None, got '
                            f'{fn!r}')
        self._mask_fn = fn

    @property
    def masked(self) -> bool:
        """Whether a mask is attached."""
        return self._mask_fn is not None

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        if self._mask_fn is None:
            return y
        m = self._mask_fn()
        if m.shape != (y.shape[1], ):
            raise ValueError(f'{type(self).__name__}: mask of shape '
                             f'{tuple(m.shape)} for {y.shape[1]} channels')
        return y * m.to(dtype=y.dtype, device=y.device).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f', masked={self.masked}'


@MODELS.register_module('MaskedBN')
class MaskedBatchNorm2d(ChannelMaskMixin, nn.BatchNorm2d):
    """BatchNorm2d ``[N, C, H, W] -> [N, C, H, W]`` times a channel mask
    (`ChannelMaskMixin`)."""

    _abbr_ = 'bn'
