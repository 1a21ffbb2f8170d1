"""MaskedConv2d: a Conv2d that applies its channel mask in its own forward.

The conv form of the masked-layer plugin, for mask sites no norm follows
(DLA-Up's projections, head convs): ``conv_cfg=dict(type='MaskedConv2d')``
in any mmcv ``ConvModule``. Like `MaskedBN` it is exactly ``nn.Conv2d``
until ``InTrainPruningHook`` installs masks (same parameters and state dict
keys, so plain checkpoints load), and then multiplies its output by the
multiplier the `MaskSet` hands it instead of a forward hook.
"""
from typing import Callable, Optional

from mmdet.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module('MaskedConv2d')
class MaskedConv2d(nn.Conv2d):
    """Conv2d ``[N, C_in, H, W] -> [N, C_out, H', W']`` times a mask ``[C_out]``.

    ``set_channel_mask(fn)`` installs ``fn() -> Tensor[C_out]`` (binary, with
    the straight-through gradient), called on every forward; ``None``
    removes it.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._mask_fn: Optional[Callable[[], Tensor]] = None

    def set_channel_mask(self, fn: Optional[Callable[[], Tensor]]) -> None:
        """Attach (or with ``None`` detach) the mask multiplier."""
        if fn is not None and not callable(fn):
            raise TypeError('MaskedConv2d.set_channel_mask expects a callable '
                            f'returning a [C_out] tensor or None, got {fn!r}')
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
            raise ValueError(f'MaskedConv2d: mask of shape {tuple(m.shape)} '
                             f'for {y.shape[1]} channels')
        return y * m.to(dtype=y.dtype, device=y.device).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f', masked={self.masked}'
