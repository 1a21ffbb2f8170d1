"""Registry-free KITTI evaluation math (numpy only)."""
from .kitti_caps import ap40_cap, capped_levels, valid_gt_counts
from .kitti_eval import (
    DIFFICULTIES,
    KITTI_IOU_THRESHOLDS,
    kitti_eval_2d,
    resolve_iou_thresholds,
)
from .kitti_results import kitti_result_lines, write_kitti_result_file

__all__ = [
    'DIFFICULTIES', 'KITTI_IOU_THRESHOLDS', 'ap40_cap', 'capped_levels',
    'kitti_eval_2d', 'kitti_result_lines', 'resolve_iou_thresholds',
    'valid_gt_counts', 'write_kitti_result_file'
]
