"""Registered evaluation metrics (mmdet's METRICS registry)."""
from .accuracy import TopKAccuracy
from .kitti_metric import KittiMetric

__all__ = ['KittiMetric', 'TopKAccuracy']
