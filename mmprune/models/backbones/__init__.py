"""Backbones registered in mmdet's MODELS registry."""
from .dla import DLA, load_dla_checkpoint, map_timm_dla_keys

__all__ = ['DLA', 'load_dla_checkpoint', 'map_timm_dla_keys']
