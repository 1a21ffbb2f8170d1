"""Layer plugins named from configs (``norm_cfg=dict(type='MaskedBN')``)."""
from .masked_norm import MaskedBatchNorm2d

__all__ = ['MaskedBatchNorm2d']
