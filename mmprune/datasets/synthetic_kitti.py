"""A synthetic dataset in the KITTI object layout, for demos and tests.

It renders cars, pedestrians and cyclists as simple shapes on textured road
scenes and writes real KITTI label files: truncation is the fraction of a box
cut off by the image border, occlusion comes from the boxes of nearer objects
drawn over it, and far clutter is labelled ``DontCare``. Vans and sitting
persons appear now and then so that the ignore rules are exercised.

Layout written under ``root``::

    training/image_2/000000.png ...
    training/label_2/000000.txt ...

No split files are written: KittiDataset then makes its seeded ratio split.
"""
from __future__ import annotations

import math
import os
import os.path as osp
from typing import List, Tuple

import cv2
import numpy as np

from .kitti_io import KittiObject, write_label_file

# Share of each type among the drawn objects (DontCare is drawn separately).
_TYPE_P = (('Car', 0.55), ('Pedestrian', 0.2), ('Cyclist', 0.15),
           ('Van', 0.06), ('Person_sitting', 0.04))
# Height / width aspect of each type's full box.
_ASPECT = {'Car': 0.55, 'Van': 0.8, 'Pedestrian': 2.4, 'Person_sitting': 1.3,
           'Cyclist': 1.5}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Sky, horizon and a textured road: uint8 BGR image [h, w, 3]."""
    img = np.empty((h, w, 3), np.float32)
    horizon = int(h * rng.uniform(0.35, 0.5))
    sky = rng.uniform(150, 230, 3)
    road = rng.uniform(60, 120)
    img[:horizon] = sky
    img[horizon:] = road
    ramp = np.linspace(0, 1, h - horizon, dtype=np.float32)[:, None, None]
    img[horizon:] += ramp * rng.uniform(-25, 25)
    # Low-frequency texture: upsampled noise, so the model cannot rely on
    # flat colour to find objects.
    coarse = rng.normal(0, 18, (max(h // 8, 2), max(w // 8, 2), 3))
    img += cv2.resize(coarse.astype(np.float32), (w, h))
    img += rng.normal(0, 6, img.shape)
    # Lane markings.
    for _ in range(rng.integers(1, 4)):
        x0 = rng.uniform(0, w)
        cv2.line(img, (int(x0), h - 1),
                 (int(w / 2 + (x0 - w / 2) * 0.1), horizon),
                 (235, 235, 235), 1)
    return np.clip(img, 0, 255).astype(np.uint8), horizon


def _draw(img: np.ndarray, kind: str, box: Tuple[float, float, float, float],
          rng: np.random.Generator) -> None:
    """Draw one object of type ``kind`` filling the full box (may overflow)."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    col = tuple(float(c) for c in rng.uniform(20, 240, 3))

    def rect(a, b, c, d, colour):
        cv2.rectangle(img, (int(round(a)), int(round(b))),
                      (int(round(c)), int(round(d))), colour, -1)

    def circle(cx, cy, r, colour):
        cv2.circle(img, (int(round(cx)), int(round(cy))),
                   max(int(round(r)), 1), colour, -1)

    if kind in ('Car', 'Van'):
        roof = 0.45 if kind == 'Car' else 0.1
        rect(x1, y1 + bh * 0.35, x2, y2 - bh * 0.15, col)
        rect(x1 + bw * roof / 2, y1, x2 - bw * roof / 2, y1 + bh * 0.4, col)
        rect(x1 + bw * (roof / 2 + 0.05), y1 + bh * 0.08,
             x2 - bw * (roof / 2 + 0.05), y1 + bh * 0.33, (40, 40, 40))
        for cx in (x1 + bw * 0.2, x2 - bw * 0.2):
            circle(cx, y2 - bh * 0.15, bh * 0.15, (15, 15, 15))
    elif kind in ('Pedestrian', 'Person_sitting'):
        skin = (90, 140, 200)
        circle((x1 + x2) / 2, y1 + bh * 0.1, min(bw * 0.3, bh * 0.1), skin)
        rect(x1 + bw * 0.15, y1 + bh * 0.2, x2 - bw * 0.15, y1 + bh * 0.6,
             col)
        leg = tuple(float(c) for c in rng.uniform(20, 120, 3))
        rect(x1 + bw * 0.2, y1 + bh * 0.6, x1 + bw * 0.45, y2, leg)
        rect(x2 - bw * 0.45, y1 + bh * 0.6, x2 - bw * 0.2, y2, leg)
    elif kind == 'Cyclist':
        r = bw * 0.22
        for cx in (x1 + r, x2 - r):
            cv2.circle(img, (int(round(cx)), int(round(y2 - r))),
                       max(int(round(r)), 1), (20, 20, 20),
                       max(int(round(r * 0.3)), 1))
        circle((x1 + x2) / 2, y1 + bh * 0.08, min(bw * 0.14, bh * 0.08),
               (90, 140, 200))
        rect(x1 + bw * 0.38, y1 + bh * 0.15, x2 - bw * 0.38, y1 + bh * 0.55,
             col)
        cv2.line(img, (int(x1 + r), int(y2 - r)), (int(x2 - r), int(y2 - r)),
                 col, max(int(round(bh * 0.04)), 1))
    else:  # pragma: no cover - types come from _TYPE_P only
        raise ValueError(f'cannot draw {kind!r}')


def _sample_objects(rng: np.random.Generator, h: int, w: int, horizon: int,
                    max_objects: int) -> List[Tuple[str, tuple]]:
    """Sample (type, full box) pairs; boxes can overflow the image."""
    names = [t for t, _ in _TYPE_P]
    probs = np.array([p for _, p in _TYPE_P])
    out = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = str(rng.choice(names, p=probs / probs.sum()))
        # The bottom edge decides the distance and so the size.
        bottom = rng.uniform(horizon + 0.1 * (h - horizon), h * 1.05)
        depth = (bottom - horizon) / (h - horizon)
        bh = (0.12 + 0.5 * depth) * h * (1.0 if kind in ('Car', 'Van') else
                                         1.4)
        bw = bh / _ASPECT[kind]
        cx = rng.uniform(-0.1 * w, 1.1 * w)
        out.append((kind, (cx - bw / 2, bottom - bh, cx + bw / 2, bottom)))
    return out


def _occlusion_level(frac: float) -> int:
    """KITTI's occlusion code from the covered fraction of a box."""
    return 0 if frac < 0.1 else (1 if frac < 0.5 else 2)


def _render_image(rng, h, w, max_objects):
    """One image [h, w, 3] uint8 and its KittiObjects."""
    img, horizon = _background(rng, h, w)
    objs = _sample_objects(rng, h, w, horizon, max_objects)
    # Far (higher bottom edge) first, so nearer ones are drawn over them.
    objs.sort(key=lambda o: o[1][3])
    for kind, box in objs:
        _draw(img, kind, box, rng)
    labels = []
    for i, (kind, box) in enumerate(objs):
        x1, y1, x2, y2 = box
        cx1, cy1 = max(x1, 0.0), max(y1, 0.0)
        cx2, cy2 = min(x2, w - 1.0), min(y2, h - 1.0)
        if cx2 - cx1 < 2 or cy2 - cy1 < 2:
            continue
        full = (x2 - x1) * (y2 - y1)
        vis = (cx2 - cx1) * (cy2 - cy1)
        covered = np.zeros((int(cy2) - int(cy1) + 1, int(cx2) - int(cx1) + 1),
                           bool)
        for _, nb in objs[i + 1:]:
            ox1 = int(max(nb[0], cx1)) - int(cx1)
            oy1 = int(max(nb[1], cy1)) - int(cy1)
            ox2 = int(min(nb[2], cx2)) - int(cx1)
            oy2 = int(min(nb[3], cy2)) - int(cy1)
            if ox2 > ox1 and oy2 > oy1:
                covered[oy1:oy2, ox1:ox2] = True
        trunc = float(np.clip(1.0 - vis / full, 0.0, 1.0))
        alpha = float(rng.uniform(-math.pi, math.pi))
        dims = {'Car': (1.5, 1.6, 3.9), 'Van': (2.2, 1.9, 5.0),
                'Pedestrian': (1.75, 0.6, 0.8),
                'Person_sitting': (1.2, 0.6, 0.8),
                'Cyclist': (1.7, 0.6, 1.8)}[kind]
        z = float(np.clip(1200.0 / max(y2 - y1, 1.0), 2.0, 80.0))
        labels.append(KittiObject(
            kind, round(trunc, 2), _occlusion_level(float(covered.mean())),
            round(alpha, 2), (cx1, cy1, cx2, cy2), dims,
            (float(rng.uniform(-10, 10)), 1.6, z), round(alpha, 2)))
    # Far clutter near the horizon that no annotator would label.
    for _ in range(int(rng.integers(0, 3))):
        bw = rng.uniform(0.04, 0.12) * w
        bh = rng.uniform(0.06, 0.12) * h
        x1 = rng.uniform(0, w - bw)
        y1 = horizon - bh * rng.uniform(0.2, 0.8)
        patch = img[int(y1):int(y1 + bh), int(x1):int(x1 + bw)]
        if patch.size:
            noise = rng.integers(0, 255, patch.shape[:2] + (1,))
            patch[:] = cv2.GaussianBlur(
                (noise * np.ones(3)).astype(np.uint8), (3, 3), 0)
            labels.append(KittiObject(
                'DontCare', -1, -1, -10, (x1, y1, x1 + bw, y1 + bh)))
    return img, labels


def make_synthetic_kitti(root: str, num_images: int = 200,
                         img_size: Tuple[int, int] = (128, 416),
                         max_objects: int = 6, seed: int = 0) -> List[str]:
    """Write a synthetic KITTI-layout dataset under ``root``.

    Args:
        root: output folder; ``training/image_2`` and ``training/label_2``
            are created in it.
        num_images: number of frames, named ``000000.png`` onwards.
        img_size: ``(height, width)`` of every image in pixels. KITTI's own
            frames are about 375 x 1242; the default keeps that aspect at a
            size a CPU trains on in minutes.
        max_objects: most objects drawn per image (at least one).
        seed: seed of the generator; the same seed gives the same files.

    Returns:
        The frame ids written, e.g. ``['000000', '000001', ...]``.
    """
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    h, w = img_size
    if h < 32 or w < 32:
        raise ValueError(f'img_size must be at least (32, 32), got {img_size}')
    img_dir = osp.join(root, 'training', 'image_2')
    lbl_dir = osp.join(root, 'training', 'label_2')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lbl_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(num_images):
        img, labels = _render_image(rng, h, w, max_objects)
        frame = f'{i:06d}'
        cv2.imwrite(osp.join(img_dir, frame + '.png'), img)
        write_label_file(osp.join(lbl_dir, frame + '.txt'), labels)
        ids.append(frame)
    return ids
