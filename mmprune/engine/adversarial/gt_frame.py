"""Ground truth of a *test* batch, moved into the network-input frame.

The attacked loss compares the detector's output on the input tensor with
the ground truth, so the boxes must be in the input frame. Training
pipelines load annotations first and every geometric transform moves them
along. mmdet's test pipelines instead load annotations *after* the resize /
pad (so metrics compare predictions and labels in the original image), and
``RandomCenterCropPad`` in test mode (CenterNet's centre pad, used by the
KITTI config) never moves boxes at all.

The map used here is the exact inverse of the one the detectors use to send
predictions back to the original image (mmdet's ``bboxes / scale_factor``,
and CenterNetHead's ``- border`` before it):
``box_input = box * scale_factor + (border_left, border_top)``.
Which of the two terms applies is read from the dataset's pipeline
(``gt_frame='auto'``) or given explicitly.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from mmdet.structures.bbox import BaseBoxes

__all__ = ['resolve_gt_frame', 'gt_to_input_frame', 'check_gt_present',
           'GT_FRAMES']

#: gt_frame values: 'auto' reads the pipeline; 'input' means the boxes are
#: already in the input frame; 'original' means scale_factor then border;
#: 'label' is a classifier's: the ground truth is ``gt_label``, no boxes.
GT_FRAMES = ('auto', 'input', 'original', 'label')

# Transforms that change neither pixel positions nor boxes (Pad only adds
# rows / columns at the bottom / right).
_BOX_NEUTRAL = {
    'LoadImageFromFile', 'LoadImageFromNDArray', 'LoadImageFromWebcam',
    'LoadMultiChannelImageFromFiles', 'LoadAnnotations', 'LoadProposals',
    'PackDetInputs', 'Pad', 'BorderPad', 'PhotoMetricDistortion',
    'ColorTransform',
    'Brightness', 'Contrast', 'Sharpness', 'Equalize', 'AutoContrast',
    'YOLOXHSVRandomAug', 'Normalize', 'ImageToTensor', 'ToTensor',
    'FilterAnnotations'
}
# Transforms whose whole geometric effect is recorded in `scale_factor`.
_SCALE_ONLY = {'Resize', 'FixShapeResize', 'RandomResize',
               'RandomChoiceResize', 'FixScaleResize'}


def resolve_gt_frame(dataset, gt_frame: str, key: str
                     ) -> Optional[Tuple[bool, bool]]:
    """Decide how gt boxes reach the input frame: (apply_scale, apply_border).

    ``None`` for ``gt_frame='label'`` (a classifier: nothing to move).

    Args:
        dataset: the built test / val dataset (its ``pipeline.transforms``
            are read when ``gt_frame='auto'``).
        gt_frame: one of `GT_FRAMES`.
        key: config key of the dataloader, for messages (e.g.
            ``'test_dataloader'``).

    Raises a ValueError naming ``{key}.dataset.pipeline`` when the pipeline
    loads no boxes, or when it cannot tell the frame of the boxes.
    """
    if gt_frame not in GT_FRAMES:
        raise ValueError(f'gt_frame={gt_frame!r}: expected one of '
                         f'{GT_FRAMES}')
    if gt_frame == 'label':
        return None
    if gt_frame == 'input':
        return False, False
    if gt_frame == 'original':
        return True, True
    transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms',
                         None)
    if transforms is None:
        raise ValueError(
            f'{type(dataset).__name__} has no pipeline.transforms to read '
            'the frame of its gt boxes from; set gt_frame="input" or '
            '"original" in the adversarial loop config')
    names = [type(t).__name__ for t in transforms]
    load = [i for i, t in enumerate(transforms)
            if type(t).__name__ == 'LoadAnnotations' and
            getattr(t, 'with_bbox', False)]
    if not load:
        raise ValueError(
            'the adversarial attack needs ground-truth boxes (it attacks '
            "the detector's training loss), but "
            f'{key}.dataset.pipeline {names} has no '
            "dict(type='LoadAnnotations', with_bbox=True); add it before "
            'PackDetInputs')
    idx = load[0]
    before, after = transforms[:idx], transforms[idx + 1:]
    apply_scale = False
    apply_border = False
    for t in before:
        name = type(t).__name__
        if name in _BOX_NEUTRAL:
            continue
        if name in _SCALE_ONLY and not apply_border:
            apply_scale = True
        elif name == 'RandomCenterCropPad' and getattr(t, 'test_mode',
                                                       False):
            apply_border = True
        else:
            raise ValueError(
                f'{key}.dataset.pipeline {names}: {name} runs before '
                'LoadAnnotations, so the gt boxes miss its geometric change '
                'and only Resize-type transforms followed by '
                'RandomCenterCropPad(test_mode=True) can be undone from the '
                'metainfo. Load annotations earlier, or set gt_frame '
                '("input" / "original") in the adversarial loop config')
    for t in after:
        # The test-mode centre pad moves the image but never the boxes.
        if type(t).__name__ == 'RandomCenterCropPad' and \
                getattr(t, 'test_mode', False):
            apply_border = True
    return apply_scale, apply_border


def check_gt_present(data_samples: Sequence, key: str,
                     label: bool = False) -> None:
    """Raise a clear error when a test batch carries no gt boxes (or, with
    ``label``, no ``gt_label``)."""
    for sample in data_samples:
        if label:
            if 'gt_label' not in sample:
                raise ValueError(
                    'the adversarial attack needs the ground-truth label of '
                    'every data sample (gt_label); the pipeline of '
                    f'{key}.dataset must pack it (PackInputs)')
            continue
        gt = sample.get('gt_instances', None)
        if gt is None or 'bboxes' not in gt or 'labels' not in gt:
            raise ValueError(
                'the adversarial attack needs ground-truth boxes and labels '
                "in every data sample (gt_instances.bboxes / .labels); add "
                "dict(type='LoadAnnotations', with_bbox=True) to "
                f'{key}.dataset.pipeline before PackDetInputs')


def _map_boxes(boxes, scale, offset):
    tensor = boxes.tensor if isinstance(boxes, BaseBoxes) else boxes
    mapped = tensor * tensor.new_tensor(scale) + tensor.new_tensor(offset)
    return type(boxes)(mapped) if isinstance(boxes, BaseBoxes) else mapped


def gt_to_input_frame(data_samples: Sequence, apply_scale: bool = False,
                      apply_border: bool = False) -> List:
    """Copies of ``data_samples`` with gt boxes moved into the input frame.

    ``gt_instances`` and ``ignored_instances`` boxes [K, 4] (x1, y1, x2, y2)
    become ``box * (sx, sy, sx, sy) + (left, top, left, top)`` with
    ``scale_factor = (sx, sy)`` and ``border = [top, bottom, left, right]``
    when the flags say so. The inputs are not modified (metrics still read
    the original-frame boxes).
    """
    out = []
    for sample in data_samples:
        meta = sample.metainfo
        scale = (1.0, 1.0, 1.0, 1.0)
        offset = (0.0, 0.0, 0.0, 0.0)
        if apply_scale:
            if 'scale_factor' not in meta:
                raise KeyError(
                    'gt_to_input_frame: the pipeline resizes before '
                    'LoadAnnotations but the data sample has no '
                    '"scale_factor" meta; keep it in PackDetInputs.meta_keys')
            sx, sy = (float(v) for v in meta['scale_factor'][:2])
            scale = (sx, sy, sx, sy)
        if apply_border:
            if 'border' not in meta:
                raise KeyError(
                    'gt_to_input_frame: the pipeline centre-pads '
                    '(RandomCenterCropPad test mode) but the data sample has '
                    'no "border" meta; add "border" to '
                    'PackDetInputs.meta_keys')
            top, _, left, _ = (float(v) for v in meta['border'])
            offset = (left, top, left, top)
        new = sample.clone()
        for field in ('gt_instances', 'ignored_instances'):
            inst = sample.get(field, None)
            if inst is None or 'bboxes' not in inst:
                continue
            inst = inst.clone()
            inst.bboxes = _map_boxes(inst.bboxes, scale, offset)
            setattr(new, field, inst)
        out.append(new)
    return out

