"""Tracing an mmdet detector for the pruning hook and the export.

Both trace the same way, so the hook's psi and the export's agree: the raw
head outputs (`raw_forward`, ``model._forward`` for mmdet) are the trace
outputs, and RoI-head layers count once per RoI of a fixed budget
(`roi_budgets`).

The hook traces at `first_sample` of a dataloader, read without touching
the loader's sampler or any random state.
"""
import random
from typing import Sequence

import numpy as np
import torch

from mmprune.core import discover_groups

from ..raw import raw_forward


def roi_budgets(model, roi_budget='auto') -> dict:
    """RoIs per image at which RoI-head layers are counted, by prefix.

    ``'auto'``: the detector's test-time budget, ``test_cfg.rpn.max_per_img``
    proposals for ``roi_head`` (every cascade stage) and
    ``test_cfg.rcnn.max_per_img`` detections (at most the proposals) for
    ``roi_head.mask_head`` (mmdet runs the mask head on the final boxes;
    ``_forward`` on the first 100 RoIs); a dict maps prefixes to
    counts; ``None`` keeps the trace's own counts (which depend on the trace
    image and the weights).
    """
    if roi_budget is None:
        return {}
    if isinstance(roi_budget, dict):
        return {str(k): int(v) for k, v in roi_budget.items()}
    if roi_budget != 'auto':
        raise ValueError("custom_hooks.InTrainPruningHook.roi_budget must be "
                         f"'auto', None or a dict, got {roi_budget!r}")
    cfg = getattr(model, 'test_cfg', None) or {}
    if getattr(model, 'roi_head', None) is None or not hasattr(cfg, 'get'):
        return {}
    out = {}
    rpn, rcnn = cfg.get('rpn') or {}, cfg.get('rcnn') or {}
    if rpn.get('max_per_img'):
        out['roi_head'] = int(rpn['max_per_img'])
    if rcnn.get('max_per_img'):
        # Never more masks than proposals.
        out['roi_head.mask_head'] = min(int(rcnn['max_per_img']),
                                        out.get('roi_head', 1 << 30))
    return out


def trace_detector(model, inputs, data_samples, skip: Sequence[str] = (),
                   roi_budget='auto'):
    """Channel groups of an mmdet detector, traced at ``inputs``' shape.

    Args:
        model: an mmdet ``BaseDetector`` (not wrapped).
        inputs: preprocessed batch ``[1, 3, H, W]``.
        data_samples: the matching ``DetDataSample`` list (two-stage
            detectors need the metainfo to propose boxes).
        skip: module-name globs never to prune.
        roi_budget: RoIs per image for RoI-head layers (`roi_budgets`).

    Returns:
        The :class:`mmprune.core.PrunePlan`. The detector's raw head outputs
        (``model._forward``) are the trace outputs, so every prediction conv
        keeps its width without being named. RoI-head layers count once per
        RoI of the budget.
    """
    plan = discover_groups(
        model, (inputs, data_samples),
        forward_fn=lambda m, x: raw_forward(m, x[0], x[1]), skip=skip)
    plan.with_rows(roi_budgets(model, roi_budget))
    return plan


def first_sample(loader) -> dict:
    """A batch of one: ``loader``'s dataset item 0, through its collate_fn.

    Side-effect free, unlike ``next(iter(loader))``: mmengine's
    ``InfiniteSampler`` keeps one index generator per sampler, and a peek
    iterator that is dropped closes it, so the training loop would stop at
    its first step with ``StopIteration``; and the pipeline's random
    augmentations would draw from the RNGs, so a run with the hook would
    train on other augmentations than the same run without it. Python's,
    NumPy's and torch's generators are restored afterwards.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():
            return loader.collate_fn([loader.dataset[0]])
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


__all__ = ['first_sample', 'roi_budgets', 'trace_detector']
