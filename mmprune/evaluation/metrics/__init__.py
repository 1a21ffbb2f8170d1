"""Registered evaluation metrics (mmdet's METRICS registry)."""
from .kitti_metric import KittiMetric

__all__ = ['KittiMetric']
