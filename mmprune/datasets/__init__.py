"""Datasets and transforms that mmdet's registries build."""
from . import transforms  # noqa: F401
from .kitti import KittiDataset
from .kitti_io import KittiLabelError, read_label_file, write_label_file
from .synthetic_kitti import make_synthetic_kitti

__all__ = ['KittiDataset', 'KittiLabelError', 'read_label_file',
           'write_label_file', 'make_synthetic_kitti']
