"""The recovery probe's box fit, on hand-made boxes with hand-computed IoU."""
import os.path as osp
import sys

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))

from posttrain_recovery import box_fit  # noqa: E402


class _Fixed:
    """Returns given predictions: box_fit only needs eval and test_step."""

    def __init__(self, samples):
        self.samples = samples

    def eval(self):
        return self

    def test_step(self, batch):
        return [self.samples[i] for i in batch]


def _sample(gt, gt_labels, pred, labels, scores):
    s = DetDataSample()
    s.gt_instances = InstanceData(bboxes=torch.tensor(gt).float(),
                                  labels=torch.tensor(gt_labels))
    s.pred_instances = InstanceData(bboxes=torch.tensor(pred).float(),
                                    labels=torch.tensor(labels),
                                    scores=torch.tensor(scores))
    return s


def test_box_fit_counts_best_iou_and_kitti_hits():
    # Car GT 10 x 10; its prediction covers the top half: IoU 50/100.
    # Pedestrian GT 10 x 20, found exactly by one box, missed by another
    # (a Car box on it does not count); a second Pedestrian GT has only a
    # box below --score-thr, so its best IoU is 0.
    a = _sample([[0, 0, 10, 10], [20, 0, 30, 20]], [0, 1],
                [[0, 0, 10, 5], [20, 0, 30, 20], [20, 0, 30, 20]],
                [0, 1, 0], [0.9, 0.8, 0.9])
    b = _sample([[0, 0, 10, 20], [40, 0, 50, 10]], [1, 2],
                [[0, 0, 10, 20], [40, 0, 45, 10]], [1, 2], [0.05, 0.5])
    fit = box_fit(_Fixed([a, b]), [[0], [1]], score_thr=0.1)
    assert fit['n_Car'] == 1 and fit['iou_Car'] == pytest.approx(0.5)
    # 0.5 < 0.7: not a KITTI Car hit.
    assert fit['hit_Car'] == 0.0
    assert fit['n_Pedestrian'] == 2
    assert fit['iou_Pedestrian'] == pytest.approx(0.5)  # (1 + 0) / 2
    assert fit['hit_Pedestrian'] == pytest.approx(0.5)
    # Cyclist: half the box, IoU 50/100 = 0.5, which is a KITTI hit (0.5).
    assert fit['iou_Cyclist'] == pytest.approx(0.5)
    assert fit['hit_Cyclist'] == 1.0
    # Sizes of the best-fitting boxes over the truth's: Car half height,
    # Cyclist half width, Pedestrian exact (the missed one overlaps none).
    assert (fit['w_Car'], fit['h_Car']) == (1.0, 0.5)
    assert (fit['w_Cyclist'], fit['h_Cyclist']) == (0.5, 1.0)
    assert (fit['w_Pedestrian'], fit['h_Pedestrian']) == (1.0, 1.0)


def test_box_fit_reports_none_for_a_class_without_boxes():
    a = _sample([[0, 0, 10, 10]], [0], [[0, 0, 10, 10]], [0], [0.9])
    fit = box_fit(_Fixed([a]), [[0]], score_thr=0.1)
    assert fit['iou_Car'] == 1.0 and fit['hit_Car'] == 1.0
    assert fit['n_Cyclist'] == 0 and fit['iou_Cyclist'] is None
    assert fit['w_Cyclist'] is None and fit['h_Cyclist'] is None
