"""Layer plugins named from configs (``norm_cfg=dict(type='MaskedBN')``,
``conv_cfg=dict(type='MaskedConv2d')``)."""
from .masked_conv import MaskedConv2d
from .masked_norm import MaskedBatchNorm2d

__all__ = ['MaskedBatchNorm2d', 'MaskedConv2d']
