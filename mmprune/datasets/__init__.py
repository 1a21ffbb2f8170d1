"""Datasets and transforms that mmdet's registries build."""
from . import transforms  # noqa: F401
from .classification import (
                             Cifar10Dataset,
                             DigitsDataset,
                             ImageListDataset,
                             digits_split,
)
from .faults import BadSampleError, image_fault
from .kitti import KittiDataset
from .kitti_io import KittiLabelError, read_label_file, write_label_file
from .synthetic_kitti import make_synthetic_kitti

__all__ = ['BadSampleError', 'image_fault', 'Cifar10Dataset', 'DigitsDataset',
           'ImageListDataset',
           'digits_split', 'KittiDataset', 'KittiLabelError', 'read_label_file',
           'write_label_file', 'make_synthetic_kitti']
