"""Backbones registered in mmdet's MODELS registry."""
from .cifar_resnet import CifarResNet
from .dla import DLA, load_dla_checkpoint, map_timm_dla_keys

__all__ = ['CifarResNet', 'DLA', 'load_dla_checkpoint', 'map_timm_dla_keys']
