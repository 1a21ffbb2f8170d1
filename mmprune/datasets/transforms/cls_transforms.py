"""Transforms of the classification pipelines (see
`mmprune.datasets.classification` for why they are not mmpretrain's).

* `RandomPadCrop`: zero-pad ``padding`` pixels, crop ``crop_size`` back at a
  random place (the CIFAR augmentation of He et al.).
* `RandomAreaCrop`: a crop of random area (``scale``) and aspect
  (``ratio``) resized to ``size`` (the Inception crop of ImageNet training).
* `ResizeShortEdge`: resize so the short edge has ``size`` pixels.
* `PackClsInputs`: ``inputs`` [C, H, W] uint8 tensor and a data sample with
  ``gt_label`` [1] and the ``img_shape`` / ``ori_shape`` meta.

Geometry is ``(H, W)`` in pixels; images are [H, W, C] uint8 before packing.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS
from mmengine.structures import BaseDataElement

__all__ = ['RandomPadCrop', 'RandomAreaCrop', 'ResizeShortEdge',
           'PackClsInputs']


def _hw(size) -> Tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, float)) else \
        (int(size[0]), int(size[1]))


@TRANSFORMS.register_module()
class RandomPadCrop(BaseTransform):
    """Pad by ``padding`` zeros on every side, crop ``crop_size`` randomly."""

    def __init__(self, crop_size, padding: int = 4):
        self.crop_size, self.padding = _hw(crop_size), int(padding)

    def transform(self, results: dict) -> dict:
        img = results['img']
        p = self.padding
        pad = [(p, p), (p, p)] + [(0, 0)] * (img.ndim - 2)
        img = np.pad(img, pad)
        h, w = self.crop_size
        if img.shape[0] < h or img.shape[1] < w:
            raise ValueError(f'RandomPadCrop: image {img.shape[:2]} with '
                             f'padding {p} is smaller than crop {h, w}')
        y = np.random.randint(0, img.shape[0] - h + 1)
        x = np.random.randint(0, img.shape[1] - w + 1)
        results['img'] = img[y:y + h, x:x + w]
        results['img_shape'] = (h, w)
        return results


@TRANSFORMS.register_module()
class RandomAreaCrop(BaseTransform):
    """Crop of area ``U(scale)`` x image and aspect log-``U(ratio)``,
    resized to ``size``; the centre crop when 10 draws do not fit."""

    def __init__(self, size, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio = _hw(size), scale, ratio

    def _box(self, h: int, w: int) -> Tuple[int, int, int, int]:
        for _ in range(10):
            area = h * w * np.random.uniform(*self.scale)
            aspect = math.exp(np.random.uniform(*np.log(self.ratio)))
            cw = int(round(math.sqrt(area * aspect)))
            ch = int(round(math.sqrt(area / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return (np.random.randint(0, h - ch + 1),
                        np.random.randint(0, w - cw + 1), ch, cw)
        s = min(h, w)
        return (h - s) // 2, (w - s) // 2, s, s

    def transform(self, results: dict) -> dict:
        img = results['img']
        y, x, ch, cw = self._box(*img.shape[:2])
        th, tw = self.size
        img = cv2.resize(img[y:y + ch, x:x + cw], (tw, th),
                         interpolation=cv2.INTER_LINEAR)
        results['img'], results['img_shape'] = img, (th, tw)
        return results


@TRANSFORMS.register_module()
class ResizeShortEdge(BaseTransform):
    """Resize keeping the aspect so that the short edge is ``size``."""

    def __init__(self, size: int):
        self.size = int(size)

    def transform(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        f = self.size / min(h, w)
        nh, nw = max(1, int(round(h * f))), max(1, int(round(w * f)))
        results['img'] = cv2.resize(img, (nw, nh),
                                    interpolation=cv2.INTER_LINEAR)
        results['img_shape'] = (nh, nw)
        return results


@TRANSFORMS.register_module()
class PackClsInputs(BaseTransform):
    """``inputs`` uint8 [C, H, W] and a ``BaseDataElement`` holding
    ``gt_label`` (int64 [1]) and the meta keys present in ``results``."""

    META_KEYS = ('img_shape', 'ori_shape', 'sample_idx', 'img_path')

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(np.ascontiguousarray(
            img.transpose(2, 0, 1)))
        sample = BaseDataElement(metainfo={
            k: results[k] for k in self.META_KEYS if k in results})
        if 'img_shape' not in sample:
            sample.set_metainfo(dict(img_shape=img.shape[:2]))
        if 'gt_label' in results:
            sample.gt_label = torch.tensor([int(results['gt_label'])])
        return dict(inputs=inputs, data_samples=sample)
