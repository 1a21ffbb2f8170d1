"""``TopKAccuracy``: top-k classification accuracy in percent."""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric

__all__ = ['TopKAccuracy']


@METRICS.register_module()
class TopKAccuracy(BaseMetric):
    """Share of samples whose label is among the top-k scores, in %.

    Reads ``pred_score`` [K] and ``gt_label`` [1] of each prediction
    (`mmprune.models.classifiers.ImageClassifier`). Keys:
    ``accuracy/top1``, ``accuracy/top5`` ... (mmpretrain's names).
    """

    default_prefix = 'accuracy'

    def __init__(self, topk: Sequence[int] = (1, ), **kwargs):
        super().__init__(**kwargs)
        self.topk = tuple(int(k) for k in topk)
        if not self.topk or min(self.topk) < 1:
            raise ValueError(f'TopKAccuracy.topk must be ints >= 1, got '
                             f'{topk!r}')

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            if 'pred_score' not in s or 'gt_label' not in s:
                raise ValueError('TopKAccuracy: each prediction needs '
                                 'pred_score and gt_label')
            self.results.append((s['pred_score'].cpu(),
                                 int(s['gt_label'].view(-1)[0])))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        scores = torch.stack([r[0] for r in results])
        labels = torch.tensor([r[1] for r in results])
        out = {}
        for k in self.topk:
            top = scores.topk(min(k, scores.shape[1]), dim=1).indices
            hit = (top == labels[:, None]).any(dim=1).float().mean()
            out[f'top{k}'] = float(hit) * 100.0
        return out
