"""mmprune.datasets.transforms."""
from .border_pad import BorderPad
from .cls_transforms import (
                             PackClsInputs,
                             RandomAreaCrop,
                             RandomPadCrop,
                             ResizeShortEdge,
)

__all__ = ['BorderPad', 'PackClsInputs', 'RandomAreaCrop', 'RandomPadCrop',
           'ResizeShortEdge']
