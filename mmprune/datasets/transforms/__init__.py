"""mmprune.datasets.transforms."""
from .border_pad import BorderPad

__all__ = ['BorderPad']
