"""``ImageClassifier``: backbone, global average pool, linear layer.

A minimal mmengine ``BaseModel`` so that the pruning hook, the prune optim
wrapper, FastAT / PGD and the export run on classifiers in mmdet's scope
(`mmprune.datasets.classification` says why not mmpretrain). Its config
mirrors mmpretrain's::

    model = dict(type='ImageClassifier',
                 data_preprocessor=dict(type='ImgDataPreprocessor', ...),
                 backbone=dict(type='CifarResNet', depth=20),
                 num_classes=10, in_channels=64)

Modes of ``forward(inputs [N, C, H, W], data_samples, mode)``:
``'tensor'``: logits [N, num_classes] (the raw network that pruning traces);
``'loss'``: ``{'loss_cls': cross-entropy}`` against each sample's
``gt_label``; ``'predict'``: the samples with ``pred_score`` (softmax
[num_classes]) and ``pred_label`` [1] set.
"""
from __future__ import annotations

from typing import List, Optional, Union

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement
from torch import Tensor, nn

__all__ = ['ImageClassifier']


@MODELS.register_module()
class ImageClassifier(BaseModel):
    """Backbone -> last feature map -> global average pool -> linear.

    Args:
        backbone: config of a backbone returning a feature map or a tuple
            of them ([N, in_channels, h, w] last).
        num_classes: classes K.
        in_channels: channels of the backbone's last feature map.
        data_preprocessor: e.g. ``ImgDataPreprocessor`` with mean / std.
        init_cfg: mmengine init config.
    """

    def __init__(self, backbone: dict, num_classes: int, in_channels: int,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def logits(self, inputs: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, num_classes]."""
        feats = self.backbone(inputs)
        if isinstance(feats, (tuple, list)):
            feats = feats[-1]
        return self.fc(torch.flatten(self.pool(feats), 1))

    @staticmethod
    def _labels(data_samples: List[BaseDataElement], device) -> Tensor:
        if not data_samples or any('gt_label' not in s
                                   for s in data_samples):
            raise ValueError('ImageClassifier.loss: every data sample needs '
                             'a gt_label (PackClsInputs packs it)')
        return torch.cat([s.gt_label for s in data_samples]).to(device)

    def forward(self, inputs: Tensor,
                data_samples: Optional[List[BaseDataElement]] = None,
                mode: str = 'tensor') -> Union[Tensor, dict, list]:
        logits = self.logits(inputs)
        if mode == 'tensor':
            return logits
        if mode == 'loss':
            labels = self._labels(data_samples, logits.device)
            return dict(loss_cls=F.cross_entropy(logits, labels))
        if mode == 'predict':
            scores = logits.softmax(dim=1)
            if data_samples is None:
                data_samples = [BaseDataElement() for _ in range(len(scores))]
            for s, score in zip(data_samples, scores):
                s.pred_score = score.detach()
                s.pred_label = score.argmax().view(1).detach()
            return data_samples
        raise ValueError(f'ImageClassifier.forward: mode must be "tensor", '
                         f'"loss" or "predict", got {mode!r}')
