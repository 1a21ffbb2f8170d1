"""KittiMetric: KITTI 2D AP (easy / moderate / hard) in mmdet's evaluator."""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from terminaltables import AsciiTable

from ..functional import (
    DIFFICULTIES,
    KITTI_IOU_THRESHOLDS,
    capped_levels,
    kitti_eval_2d,
    resolve_iou_thresholds,
    write_kitti_result_file,
)

_GT_KEYS = ('name', 'truncated', 'occluded', 'bbox')


def _numpy(value, where: str) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f'KittiMetric: {where} cannot be read as an array '
                        f'({err})') from None


@METRICS.register_module()
class KittiMetric(BaseMetric):
    """KITTI 2D detection AP11 and AP40, computed exactly as the devkit.

    Use it as ``val_evaluator = dict(type='KittiMetric')`` with
    ``KittiDataset``. Each data sample must carry ``img_id`` (the KITTI frame
    id, e.g. ``'000123'``), ``pred_instances`` (``bboxes`` [M, 4] x1 y1 x2 y2
    in pixels of the original image, ``scores`` [M], ``labels`` [M] indexing
    ``dataset_meta['classes']``) and the meta key ``kitti_annos``: every
    object of the frame's label file, DontCare included (``name``,
    ``truncated``, ``occluded``, ``bbox`` arrays). The test pipeline's
    ``PackDetInputs`` must list ``kitti_annos`` in ``meta_keys``.

    Results are ``{prefix}/{Class}_AP{11,40}_{easy,moderate,hard}`` in
    percent, plus ``Overall_*`` (mean over the evaluated classes); a table is
    logged.

    Args:
        classes: classes to evaluate. None means the dataset classes that
            KITTI evaluates (Car, Pedestrian, Cyclist). Other names need an
            entry in ``iou_thresholds``.
        iou_thresholds: None for the devkit's (Car 0.7, Pedestrian 0.5,
            Cyclist 0.5), a dict class -> IoU, or one IoU per ``classes``.
        format_only: only write result files to ``outfile_prefix`` (e.g. for
            the KITTI test server) and return ``{}``.
        outfile_prefix: folder for ``<img_id>.txt`` result files, one per
            image (16-column KITTI lines, an empty file for no detection).
            When set without ``format_only``, files are written and AP is
            computed.
        collect_device: ``'cpu'`` or ``'gpu'``, for distributed collection.
        prefix: prefix of the result keys.
    """

    default_prefix: Optional[str] = 'kitti'

    def __init__(self,
                 classes: Optional[Sequence[str]] = None,
                 iou_thresholds: Optional[Union[Mapping[str, float],
                                                Sequence[float]]] = None,
                 format_only: bool = False,
                 outfile_prefix: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = 'kitti') -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if format_only and not outfile_prefix:
            raise ValueError('KittiMetric: format_only=True needs '
                             'outfile_prefix, the folder for the <img_id>.txt '
                             'result files')
        if classes is not None:
            if isinstance(classes, str) or not isinstance(classes, Sequence):
                raise TypeError(f'KittiMetric: classes={classes!r}; expected '
                                "a list of names such as ['Car']")
            classes = list(classes)
            try:
                # Fail at build time, not after a full test pass.
                resolve_iou_thresholds(classes, iou_thresholds)
            except ValueError as err:
                raise ValueError(f'KittiMetric: {err}') from None
        self.classes = classes
        self.iou_thresholds = iou_thresholds
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix

    # ------------------------------------------------------------------
    def _dataset_classes(self) -> List[str]:
        meta = self.dataset_meta
        if not meta or 'classes' not in meta:
            raise RuntimeError(
                "KittiMetric needs dataset_meta['classes'] to name the "
                'predicted labels; the Evaluator sets it from the dataset '
                '(set metric.dataset_meta by hand outside a Runner)')
        return [str(c) for c in meta['classes']]

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Store each image's detections and KITTI labels as numpy arrays.

        ``data_samples``: dicts (or DetDataSample) with ``img_id``,
        ``pred_instances`` and, unless ``format_only``, ``kitti_annos``.
        """
        class_names = np.array(self._dataset_classes())
        for sample in data_samples:
            if hasattr(sample, 'to_dict'):
                sample = sample.to_dict()
            img_id = self._img_id(sample)
            if 'pred_instances' not in sample:
                raise KeyError(f'KittiMetric: data sample of image {img_id} '
                               "has no 'pred_instances'; expected the "
                               "detector's predictions")
            pred = sample['pred_instances']
            where = f'image {img_id} pred_instances'
            bboxes = _numpy(pred['bboxes'], f'{where}.bboxes').astype(
                np.float64).reshape(-1, 4)
            scores = _numpy(pred['scores'], f'{where}.scores').astype(
                np.float64).reshape(-1)
            labels = _numpy(pred['labels'], f'{where}.labels').astype(
                np.int64).reshape(-1)
            if not len(bboxes) == len(scores) == len(labels):
                raise ValueError(f'KittiMetric: {where} has {len(bboxes)} '
                                 f'boxes, {len(scores)} scores and '
                                 f'{len(labels)} labels; expected equal '
                                 'counts')
            if len(labels) and (labels.min() < 0 or
                                labels.max() >= len(class_names)):
                raise ValueError(
                    f'KittiMetric: {where}.labels holds {labels.min()}..'
                    f'{labels.max()}; expected indices into '
                    f"dataset_meta['classes'] = {list(class_names)}")
            det = dict(name=class_names[labels], bbox=bboxes, score=scores)
            gt = None
            if 'kitti_annos' in sample:
                annos = sample['kitti_annos']
                missing = [k for k in _GT_KEYS if k not in annos]
                if missing:
                    raise KeyError(f'KittiMetric: kitti_annos of image '
                                   f'{img_id} lacks {missing}; expected '
                                   f'{list(_GT_KEYS)}')
                gt = {k: np.asarray(annos[k]) for k in _GT_KEYS}
            elif not self.format_only:
                raise KeyError(
                    f'KittiMetric: data sample of image {img_id} has no '
                    "'kitti_annos'. The test pipeline's PackDetInputs must "
                    "keep it: meta_keys=(..., 'kitti_annos'), and the "
                    'dataset must be KittiDataset (or provide the same '
                    'arrays)')
            self.results.append(dict(img_id=img_id, det=det, gt=gt))

    @staticmethod
    def _img_id(sample: Mapping) -> str:
        if 'img_id' not in sample:
            raise KeyError("KittiMetric: a data sample has no 'img_id'; "
                           'expected the KITTI frame id (e.g. 000123) in '
                           'the meta keys of PackDetInputs')
        img_id = sample['img_id']
        if isinstance(img_id, (int, np.integer)):
            img_id = f'{int(img_id):06d}'
        img_id = str(img_id)
        if not img_id or '/' in img_id or '\\' in img_id:
            raise ValueError(f'KittiMetric: img_id {img_id!r} cannot name a '
                             'result file; expected a frame id like 000123')
        return img_id

    # ------------------------------------------------------------------
    def _write_results(self, results: List[dict], logger: MMLogger) -> None:
        ids = [r['img_id'] for r in results]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f'KittiMetric: img_id(s) {dup} occur more than '
                             'once; one result file per frame cannot hold '
                             'them')
        os.makedirs(self.outfile_prefix, exist_ok=True)
        for r in results:
            write_kitti_result_file(
                osp.join(self.outfile_prefix, r['img_id'] + '.txt'), r['det'])
        logger.info(f'KittiMetric: wrote {len(results)} KITTI result files '
                    f'to {osp.abspath(self.outfile_prefix)}')

    def _eval_classes(self) -> List[str]:
        dataset = self._dataset_classes()
        lowered = [c.lower() for c in dataset]
        if self.classes is None:
            kitti = {c.lower() for c in KITTI_IOU_THRESHOLDS}
            chosen = [c for c in dataset if c.lower() in kitti]
            if not chosen:
                raise ValueError(
                    f'KittiMetric: none of the dataset classes {dataset} is '
                    f'evaluated by KITTI {tuple(KITTI_IOU_THRESHOLDS)}; set '
                    'classes and iou_thresholds')
            return chosen
        absent = [c for c in self.classes if c.lower() not in lowered]
        if absent:
            raise ValueError(f'KittiMetric: classes {absent} are not in the '
                             f'dataset classes {dataset}; the model cannot '
                             'predict them')
        return list(self.classes)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Write result files and/or compute AP from the collected results.

        Returns ``{}`` with ``format_only``, else ``Car_AP40_moderate`` and
        friends in percent (BaseMetric adds the prefix).
        """
        logger: MMLogger = MMLogger.get_current_instance()
        if self.outfile_prefix:
            self._write_results(results, logger)
        if self.format_only:
            return {}
        classes = self._eval_classes()
        ap = kitti_eval_2d([r['gt'] for r in results],
                           [r['det'] for r in results], classes=classes,
                           iou_thresholds=self.iou_thresholds)
        header = ['class'] + [f'AP{k} {d}' for k in (40, 11)
                              for d in DIFFICULTIES]
        rows = [header]
        for name in classes + ['Overall']:
            rows.append([name] + [f'{ap[f"{name}_AP{k}_{d}"]:.2f}'
                                  for k in (40, 11) for d in DIFFICULTIES])
        gts = [r['gt'] for r in results]
        capped = capped_levels(gts, classes)
        if capped:
            # The devkit's threshold sampling caps AP40 below 40 boxes
            # (kitti_caps); say so rather than report it as detector quality.
            logger.warning(
                f'KITTI AP on {len(results)} images is capped by the devkit '
                'rule (fewer than 41 valid boxes: even perfect detections '
                'score at most 100 * (n - 1) / 40 AP40): ' +
                '; '.join(capped) + '. Test on more images for AP that '
                'can reach 100.')
        thrs = resolve_iou_thresholds(classes, self.iou_thresholds)
        logger.info(f'KITTI 2D AP on {len(results)} images (devkit rules, '
                    'IoU > ' + ', '.join(
                        f'{c} {t}' for c, t in zip(classes, thrs)) +
                    '):\n' + AsciiTable(rows).table)
        return ap
