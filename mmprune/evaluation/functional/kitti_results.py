"""Detections as KITTI result files, the devkit's input format.

One text file per frame, 16 columns per detection; the 2D metric reads only
the type, the box and the score, so the 3D columns carry the devkit's
"not estimated" values.
"""
from __future__ import annotations

import os
from typing import List, Mapping

from .kitti_eval import _check_dt

__all__ = ['kitti_result_lines', 'write_kitti_result_file']


def kitti_result_lines(dt_anno: Mapping) -> List[str]:
    """Format one image's detections as KITTI result lines (16 columns).

    Args:
        dt_anno: ``name`` str [M], ``bbox`` float [M, 4] (x1 y1 x2 y2,
            pixels of the original image), ``score`` float [M].

    Returns:
        M strings without newline, each
        ``type -1 -1 -10 x1 y1 x2 y2 -1 -1 -1 -1000 -1000 -1000 -10 score``.
        The alpha of -10 tells the devkit that no orientation was estimated.
    """
    names, bbox, score = _check_dt(dt_anno, 0, 'dt_anno')
    lines = []
    for name, (x1, y1, x2, y2), s in zip(names, bbox, score):
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f'dt_anno name {name!r} cannot be written to a '
                             'KITTI result line; expected a type without '
                             'whitespace such as Car')
        lines.append(f'{name} -1 -1 -10 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} '
                     f'-1 -1 -1 -1000 -1000 -1000 -10 {s:.6f}')
    return lines


def write_kitti_result_file(path: str, dt_anno: Mapping) -> None:
    """Write one image's detections to ``path`` in KITTI result format.

    An image without detections gets an empty file, which the devkit expects
    for every frame of the split.
    """
    lines = kitti_result_lines(dt_anno)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(''.join(line + '\n' for line in lines))
