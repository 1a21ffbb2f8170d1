"""KittiDataset: the KITTI 2D object layout, read directly by mmdet."""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List, Optional

import numpy as np
from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS
from PIL import Image

from .faults import BadSampleError, BadSampleMixin
from .kitti_io import KittiLabelError, objects_to_annos, read_label_file


class BadLabelFileError(BadSampleError, KittiLabelError):
    """A label file with a bad line, met while listing a dataset."""


@DATASETS.register_module()
class KittiDataset(BadSampleMixin, BaseDetDataset):
    """KITTI object detection (2D boxes) from ``training/image_2`` + ``label_2``.

    Which frames belong to the split:

    * ``ann_file`` (relative to ``data_root``), a text file with one frame id
      per line, when given;
    * else ``ImageSets/{split}.txt`` under ``data_root`` when it exists
      (the common 3DOP split ships as ``train.txt`` / ``val.txt``);
    * else a deterministic, seeded ratio split of all label files:
      ``split_ratio`` of a permutation (``split_seed``) is ``train``, the rest
      ``val``; ``trainval`` is all frames.

    Every object with a type in ``classes`` becomes a training instance. The
    neighbour types in ``ignore_map`` (Van for Car, Person_sitting for
    Pedestrian) and ``DontCare`` regions are kept as instances with
    ``ignore_flag=1``, so mmdet moves them to ``ignored_instances``. Each
    instance keeps ``truncated``, ``occluded`` and ``alpha``. The whole label
    file also travels as ``kitti_annos`` (arrays of name, truncated,
    occluded, alpha, bbox), which KittiMetric reads when the test pipeline's
    ``PackDetInputs`` lists it in ``meta_keys``.

    Args:
        split: ``'train'``, ``'val'`` or ``'trainval'``.
        split_ratio: train share of the ratio split, in (0, 1).
        split_seed: seed of the ratio split's permutation.
        ignore_map: neighbour type -> evaluated class whose boxes it marks
            as ignored. ``None`` means ``{'Van': 'Car',
            'Person_sitting': 'Pedestrian'}``.
        data_prefix: ``img`` and ``label`` folders relative to ``data_root``.
        skip_bad_samples: training only. ``False`` (default): an image that
            cannot be decoded or a label file with a bad line raises
            :class:`~mmprune.datasets.faults.BadSampleError` naming the
            file (and the line). ``True``: the frame is skipped with a
            warning naming it, and the skips are counted in the log.
    """

    METAINFO = dict(
        classes=('Car', 'Pedestrian', 'Cyclist'),
        palette=[(0, 182, 255), (220, 20, 60), (119, 172, 48)])
    SPLITS = ('train', 'val', 'trainval')

    def __init__(self,
                 *args,
                 split: str = 'train',
                 split_ratio: float = 0.75,
                 split_seed: int = 0,
                 ignore_map: Optional[Dict[str, str]] = None,
                 data_prefix: dict = dict(img='training/image_2',
                                          label='training/label_2'),
                 skip_bad_samples: bool = False,
                 **kwargs) -> None:
        if split not in self.SPLITS:
            raise ValueError(f'KittiDataset: split={split!r}; expected one of '
                             f'{self.SPLITS}')
        if not 0.0 < split_ratio < 1.0:
            raise ValueError(f'KittiDataset: split_ratio={split_ratio}; '
                             'expected a fraction in (0, 1)')
        for key in ('img', 'label'):
            if key not in data_prefix:
                raise KeyError(f'KittiDataset: data_prefix needs the key '
                               f'{key!r}, got {sorted(data_prefix)}')
        self.skip_bad_samples = bool(skip_bad_samples)
        self.split = split
        self.split_ratio = split_ratio
        self.split_seed = split_seed
        self.ignore_map = dict(Van='Car', Person_sitting='Pedestrian') \
            if ignore_map is None else dict(ignore_map)
        super().__init__(*args, data_prefix=data_prefix, **kwargs)

    # -- split ------------------------------------------------------------
    def _frame_ids(self) -> List[str]:
        """Frame ids of this split, in a stable order."""
        if self.ann_file:
            return self._read_id_file(self.ann_file)
        sets = osp.join(self.data_root, 'ImageSets', f'{self.split}.txt')
        if osp.isfile(sets):
            return self._read_id_file(sets)
        label_dir = self.data_prefix['label']
        if not osp.isdir(label_dir):
            raise FileNotFoundError(
                f'KittiDataset: label folder {label_dir} does not exist; '
                'expected the KITTI layout data_root/training/label_2/*.txt '
                '(set data_root or data_prefix.label)')
        ids = sorted(f[:-4] for f in os.listdir(label_dir)
                     if f.endswith('.txt'))
        if not ids:
            raise FileNotFoundError(
                f'KittiDataset: no *.txt label files in {label_dir}')
        if self.split == 'trainval':
            return ids
        perm = np.random.default_rng(self.split_seed).permutation(len(ids))
        n_train = int(round(self.split_ratio * len(ids)))
        chosen = perm[:n_train] if self.split == 'train' else perm[n_train:]
        return [ids[i] for i in sorted(chosen)]

    @staticmethod
    def _read_id_file(path: str) -> List[str]:
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'KittiDataset: split file {path} does not exist; expected a '
                'text file with one frame id (e.g. 000123) per line')
        ids = []
        with open(path, encoding='utf-8') as f:
            for lineno, line in enumerate(f, start=1):
                tok = line.strip()
                if not tok:
                    continue
                if not tok.isdigit():
                    raise ValueError(f'{path}:{lineno}: {tok!r} is not a '
                                     'KITTI frame id; expected digits such '
                                     'as 000123')
                ids.append(tok)
        return ids

    # -- parsing ----------------------------------------------------------
    def load_data_list(self) -> List[dict]:
        """Parse the split's label files into mmdet data infos."""
        classes = list(self.metainfo['classes'])
        data_list = []
        for frame in self._frame_ids():
            img_path = osp.join(self.data_prefix['img'], frame + '.png')
            lbl_path = osp.join(self.data_prefix['label'], frame + '.txt')
            if not osp.isfile(img_path):
                raise FileNotFoundError(
                    f'KittiDataset: image {img_path} for frame {frame} does '
                    'not exist; expected training/image_2/<frame>.png')
            if not osp.isfile(lbl_path):
                raise FileNotFoundError(
                    f'KittiDataset: label file {lbl_path} for frame {frame} '
                    'does not exist')
            try:
                with Image.open(img_path) as im:
                    width, height = im.size
            except (OSError, SyntaxError) as e:
                self._bad_sample(img_path, 'is not a readable PNG '
                                 f'({type(e).__name__}: {e})')
                continue
            try:
                objects = read_label_file(lbl_path)
            except (KittiLabelError, UnicodeDecodeError) as e:
                self._bad_sample(lbl_path, f'has a bad line: {e}',
                                 BadLabelFileError)
                continue
            data_list.append(dict(
                img_path=img_path, img_id=frame, height=height, width=width,
                instances=self._instances(objects, classes),
                kitti_annos=objects_to_annos(objects)))
        return data_list

    def _instances(self, objects, classes) -> List[dict]:
        out = []
        for obj in objects:
            if obj.type in classes:
                label, ignore = classes.index(obj.type), 0
            elif obj.type in self.ignore_map and \
                    self.ignore_map[obj.type] in classes:
                label, ignore = classes.index(self.ignore_map[obj.type]), 1
            elif obj.type == 'DontCare':
                label, ignore = -1, 1
            else:
                continue
            out.append(dict(
                bbox=[float(v) for v in obj.bbox], bbox_label=label,
                ignore_flag=ignore, truncated=obj.truncated,
                occluded=obj.occluded, alpha=obj.alpha))
        return out

    def filter_data(self) -> List[dict]:
        """Drop frames with no usable box when ``filter_empty_gt`` (train)."""
        if self.test_mode or not self.filter_cfg:
            return self.data_list
        drop_empty = self.filter_cfg.get('filter_empty_gt', False)
        min_size = self.filter_cfg.get('min_size', 0)
        kept = []
        for info in self.data_list:
            if min(info['width'], info['height']) < min_size:
                continue
            if drop_empty and not any(
                    i['ignore_flag'] == 0 for i in info['instances']):
                continue
            kept.append(info)
        return kept
