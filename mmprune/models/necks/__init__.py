"""Necks registered in mmdet's MODELS registry."""
from .dla_up import DLAUpNeck

__all__ = ['DLAUpNeck']
