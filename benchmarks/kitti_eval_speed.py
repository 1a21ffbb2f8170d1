"""Time ``kitti_eval_2d`` on a KITTI-val-sized synthetic workload.

3,769 images (the 3DOP val split), about 15 ground-truth objects and 50
detections each, 3 classes x 3 difficulties. The data are random but seeded
and KITTI-like: 1242 x 375 frames, all nine object types, DontCare regions,
truncation and occlusion levels, box heights from 10 to 300 px, detections
that jitter the true boxes plus low-scoring false positives.

Run with one thread to compare with the goal (< 3 s on one core)::

    OMP_NUM_THREADS=1 python benchmarks/kitti_eval_speed.py

Prints one JSON object and a one-line summary.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mmprune.evaluation.functional import kitti_eval_2d

IMG_W, IMG_H = 1242.0, 375.0
TYPES = ('Car', 'Pedestrian', 'Cyclist', 'Van', 'Truck', 'Person_sitting',
         'Tram', 'Misc', 'DontCare')
TYPE_P = (0.52, 0.12, 0.05, 0.06, 0.03, 0.01, 0.01, 0.02, 0.18)
ASPECT = {'Car': 1.7, 'Pedestrian': 0.4, 'Cyclist': 0.9, 'Van': 1.5,
          'Truck': 1.6, 'Person_sitting': 0.7, 'Tram': 2.5, 'Misc': 1.0,
          'DontCare': 1.5}
# What a detector trained on Car/Pedestrian/Cyclist calls each type.
DETECTED_AS = {'Car': 'Car', 'Pedestrian': 'Pedestrian', 'Cyclist': 'Cyclist',
               'Van': 'Car', 'Truck': 'Car', 'Person_sitting': 'Pedestrian',
               'Tram': 'Car', 'Misc': 'Car'}
DET_CLASSES = np.array(['Car', 'Pedestrian', 'Cyclist'])


def _boxes(rng, heights, aspects):
    w = heights * aspects * rng.uniform(0.8, 1.25, len(heights))
    x1 = rng.uniform(-0.1 * w, IMG_W - 0.9 * w)
    y2 = rng.uniform(150.0, IMG_H, len(heights))
    box = np.stack([x1, y2 - heights, x1 + w, y2], 1)
    box[:, [0, 2]] = box[:, [0, 2]].clip(0, IMG_W - 1)
    box[:, [1, 3]] = box[:, [1, 3]].clip(0, IMG_H - 1)
    return box


def make_workload(n_images: int = 3769, gt_per_image: int = 15,
                  dt_per_image: int = 50, seed: int = 0):
    """Seeded synthetic KITTI annotations and detections (lists of dicts)."""
    rng = np.random.default_rng(seed)
    gt_annos, dt_annos = [], []
    for _ in range(n_images):
        n = int(rng.integers(gt_per_image - 7, gt_per_image + 8))
        names = rng.choice(TYPES, n, p=TYPE_P)
        heights = np.exp(rng.normal(np.log(45.0), 0.6, n)).clip(10, 300)
        box = _boxes(rng, heights, np.array([ASPECT[t] for t in names]))
        trunc = np.where(rng.random(n) < 0.8, 0.0,
                         rng.uniform(0, 0.9, n)).round(2)
        occ = rng.choice(4, n, p=(0.55, 0.25, 0.15, 0.05))
        dc = names == 'DontCare'
        trunc[dc], occ[dc] = -1.0, -1
        gt_annos.append(dict(name=names, truncated=trunc, occluded=occ,
                             bbox=box.round(2)))

        # True detections: most real objects, jittered by a few percent.
        obj = np.flatnonzero(~dc)
        obj = obj[rng.random(len(obj)) < 0.85]
        size = np.stack([box[obj, 2] - box[obj, 0], box[obj, 3] - box[obj, 1],
                         box[obj, 2] - box[obj, 0],
                         box[obj, 3] - box[obj, 1]], 1)
        tp_box = box[obj] + rng.normal(0, 0.05, (len(obj), 4)) * size
        tp_name = np.array([DETECTED_AS[t] for t in names[obj]], dtype='<U10')
        tp_score = rng.beta(5, 2, len(obj))
        # False positives fill the rest, mostly low scores.
        n_fp = max(dt_per_image - len(obj), 0)
        fp_box = _boxes(rng, np.exp(rng.normal(np.log(35.0), 0.6,
                                               n_fp)).clip(8, 250),
                        rng.uniform(0.4, 1.8, n_fp))
        fp_name = rng.choice(DET_CLASSES, n_fp, p=(0.6, 0.25, 0.15))
        fp_score = rng.beta(1, 5, n_fp)
        dt_box = np.concatenate([tp_box, fp_box])
        dt_box = np.concatenate([np.minimum(dt_box[:, :2], dt_box[:, 2:]),
                                 np.maximum(dt_box[:, :2], dt_box[:, 2:])], 1)
        dt_annos.append(dict(name=np.concatenate([tp_name, fp_name]),
                             bbox=dt_box.astype(np.float32),
                             score=np.concatenate([tp_score, fp_score])))
    return gt_annos, dt_annos


def main() -> None:
    """Parse arguments, time the evaluation, print JSON and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=3769)
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed runs; the median is reported')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    gt_annos, dt_annos = make_workload(args.images, seed=args.seed)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = kitti_eval_2d(gt_annos, dt_annos)
        times.append(time.perf_counter() - t0)
    # The goal is judged on the median run, not the luckiest one.
    seconds = float(np.median(times))
    goal = 3.0
    report = {
        'images': args.images,
        'gt_boxes': int(sum(len(a['name']) for a in gt_annos)),
        'detections': int(sum(len(a['name']) for a in dt_annos)),
        'seconds': round(seconds, 3),
        'best_seconds': round(min(times), 3),
        'all_runs_seconds': [round(t, 3) for t in times],
        'goal_seconds': goal,
        'meets_goal': seconds < goal,
        'Car_AP40_moderate': round(result['Car_AP40_moderate'], 2),
        'Overall_AP40_moderate': round(result['Overall_AP40_moderate'], 2),
    }
    print(json.dumps(report))
    verdict = 'met' if report['meets_goal'] else 'MISSED'
    print(f'kitti_eval_2d: {args.images} images in {seconds:.2f} s '
          f'(goal < {goal:.1f} s: {verdict})')


if __name__ == '__main__':
    main()
