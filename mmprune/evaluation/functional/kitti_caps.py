"""How far the devkit's AP can go on a small test set.

The devkit samples its score thresholds (``getThresholds``) by advancing a
recall counter 1/40 per kept threshold. With ``n`` valid ground-truth boxes
of a class and ``n <= 40``, every true-positive score is kept and the counter
never passes ``n / 40``, so only the first ``n`` of the 41 precision samples
can be non-zero. Even perfect detections then score

    AP40 = 100 * (n - 1) / 40,   AP11 = 100 * (#{0, 4, ..., 40} < n) / 11,

e.g. 47.5 and 45.45 with 20 boxes. This is the devkit's behaviour (the
leaderboard's thousands of boxes never meet it), so ``kitti_eval_2d`` keeps
it; these helpers let the metric say so instead of reporting a capped AP as
if it measured the detector.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .kitti_eval import (
    DIFFICULTIES,
    MAX_OCCLUSION,
    MAX_TRUNCATION,
    MIN_HEIGHT,
    N_SAMPLE_PTS,
)

__all__ = ['valid_gt_counts', 'ap40_cap', 'capped_levels']


def valid_gt_counts(gt_annos: Sequence[Mapping],
                    classes: Sequence[str]) -> Dict[Tuple[str, str], int]:
    """Boxes that count (neither ignored nor neighbour class), per level.

    Args:
        gt_annos: ``kitti_eval_2d``'s ground truth, one dict per image.
        classes: class names, compared case-insensitively.

    Returns:
        ``{(class, difficulty): n}`` for every class and difficulty.
    """
    out = {}
    for cls in classes:
        for di, diff in enumerate(DIFFICULTIES):
            n = 0
            for g in gt_annos:
                names = np.char.lower(np.asarray(g['name'], dtype=str))
                box = np.asarray(g['bbox'], dtype=np.float64).reshape(-1, 4)
                ok = ((names == cls.lower())
                      & (np.asarray(g['occluded']) <= MAX_OCCLUSION[di])
                      & (np.asarray(g['truncated']) <= MAX_TRUNCATION[di])
                      & (box[:, 3] - box[:, 1] >= MIN_HEIGHT[di]))
                n += int(ok.sum())
            out[(cls, diff)] = n
    return out


def ap40_cap(n_gt: int) -> float:
    """Highest AP40 (percent) the devkit can give with ``n_gt`` boxes."""
    if n_gt <= 0:
        return 0.0
    return 100.0 * (min(n_gt, N_SAMPLE_PTS) - 1) / (N_SAMPLE_PTS - 1)


def capped_levels(gt_annos: Sequence[Mapping],
                  classes: Sequence[str]) -> List[str]:
    """One line per class and difficulty whose AP40 cannot reach 100.

    Each line names the level, its box count and the cap, e.g.
    ``'Pedestrian moderate: 29 boxes, AP40 <= 70.0'``.
    """
    lines = []
    for (cls, diff), n in valid_gt_counts(gt_annos, classes).items():
        if n < N_SAMPLE_PTS:
            lines.append(f'{cls} {diff}: {n} boxes, AP40 <= {ap40_cap(n):.1f}')
    return lines
