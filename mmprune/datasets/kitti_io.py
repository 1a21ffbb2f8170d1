"""Reading and writing the KITTI object label format.

A label line has 15 whitespace-separated fields::

    type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y

Boxes are 0-based pixel coordinates of the original image. The functions here
hold no registry and no mmdet import, so tools and tests can reuse them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

#: Every object type the KITTI devkit writes into ``label_2``.
KITTI_TYPES = ('Car', 'Van', 'Truck', 'Pedestrian', 'Person_sitting',
               'Cyclist', 'Tram', 'Misc', 'DontCare')

_FIELDS = ('type', 'truncated', 'occluded', 'alpha', 'x1', 'y1', 'x2', 'y2',
           'h', 'w', 'l', 'x', 'y', 'z', 'rotation_y')


class KittiLabelError(ValueError):
    """A label file that does not follow the KITTI format."""


@dataclass
class KittiObject:
    """One object of a KITTI label file.

    ``bbox`` is ``(x1, y1, x2, y2)`` in pixels; ``dimensions`` is
    ``(h, w, l)`` and ``location`` ``(x, y, z)``, both in metres (camera frame).
    """

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple
    dimensions: tuple = (-1.0, -1.0, -1.0)
    location: tuple = (-1000.0, -1000.0, -1000.0)
    rotation_y: float = -10.0

    def to_line(self) -> str:
        """Format the object as one 15-field label line (no newline)."""
        vals = [self.type, f'{self.truncated:.2f}', str(int(self.occluded)),
                f'{self.alpha:.2f}']
        vals += [f'{v:.2f}' for v in self.bbox]
        vals += [f'{v:.2f}' for v in self.dimensions]
        vals += [f'{v:.2f}' for v in self.location]
        vals.append(f'{self.rotation_y:.2f}')
        return ' '.join(vals)


def _bad(path, lineno, field, value, expected):
    return KittiLabelError(
        f'{path}:{lineno}: field {field!r} is {value!r}; expected {expected}')


def parse_label_line(line: str, path: str = '<string>',
                     lineno: int = 1) -> KittiObject:
    """Parse one KITTI label line; errors name ``path:lineno`` and the field."""
    parts = line.split()
    if len(parts) not in (15, 16):
        raise KittiLabelError(
            f'{path}:{lineno}: has {len(parts)} fields; expected 15 '
            f'({" ".join(_FIELDS)}) or 16 with a trailing score')
    name = parts[0]
    if name not in KITTI_TYPES:
        raise _bad(path, lineno, 'type', name, f'one of {KITTI_TYPES}')
    nums = []
    for field, raw in zip(_FIELDS[1:], parts[1:15]):
        try:
            val = float(raw)
        except ValueError:
            raise _bad(path, lineno, field, raw, 'a number') from None
        if not math.isfinite(val):
            raise _bad(path, lineno, field, raw, 'a finite number')
        nums.append(val)
    trunc, occ, alpha = nums[0], nums[1], nums[2]
    if occ != int(occ) or int(occ) not in (-1, 0, 1, 2, 3):
        raise _bad(path, lineno, 'occluded', parts[2],
                   'an integer in {0, 1, 2, 3} (-1 for DontCare)')
    if not (trunc == -1 or 0.0 <= trunc <= 1.0):
        raise _bad(path, lineno, 'truncated', parts[1],
                   'a fraction in [0, 1] (-1 for DontCare)')
    x1, y1, x2, y2 = nums[3:7]
    if x2 < x1 or y2 < y1:
        raise _bad(path, lineno, 'bbox', ' '.join(parts[4:8]),
                   'x1 <= x2 and y1 <= y2')
    return KittiObject(name, trunc, int(occ), alpha, (x1, y1, x2, y2),
                       tuple(nums[7:10]), tuple(nums[10:13]), nums[13])


def read_label_file(path: str) -> List[KittiObject]:
    """Read every object of a label file; an empty file means no objects."""
    objs = []
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                objs.append(parse_label_line(line, path, lineno))
    return objs


def write_label_file(path: str, objects: Sequence[KittiObject]) -> None:
    """Write objects as a KITTI label file (one line each)."""
    with open(path, 'w', encoding='utf-8') as f:
        for obj in objects:
            f.write(obj.to_line() + '\n')


def objects_to_annos(objects: Sequence[KittiObject]) -> dict:
    """Pack objects into the devkit-port annotation dict of numpy arrays.

    Returns ``name`` str [N], ``truncated`` float [N], ``occluded`` int [N],
    ``alpha`` float [N] and ``bbox`` float [N, 4] (x1 y1 x2 y2 pixels).
    """
    return dict(
        name=np.array([o.type for o in objects], dtype='<U16'),
        truncated=np.array([o.truncated for o in objects], dtype=np.float64),
        occluded=np.array([o.occluded for o in objects], dtype=np.int64),
        alpha=np.array([o.alpha for o in objects], dtype=np.float64),
        bbox=np.array([o.bbox for o in objects],
                      dtype=np.float64).reshape(-1, 4))
