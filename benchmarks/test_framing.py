"""Test-time framing: the same checkpoints tested centred and top-left.

CenterNet's KITTI training here resizes, scales / shifts and pads at the
bottom / right, so every training image sits at the canvas' top-left. mmdet's
CenterNet test pipeline instead centres the image on a canvas padded to
``(size | 31) + 1`` (``RandomCenterCropPad``, test mode). This script tests
each checkpoint both ways on the same data:

* ``centred``: the old test pipeline (RandomCenterCropPad, test mode);
* ``top_left``: the current one (Resize to the input size + ``BorderPad``).

    python benchmarks/test_framing.py CONFIG CKPT [CKPT ...] \\
        --data-root DIR [--out FILE]

Prints one JSON object: per checkpoint, Car / Pedestrian / Cyclist AP40
moderate both ways, and their mean and sample std.
"""
from __future__ import annotations

import argparse
import copy
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config  # noqa: E402
from study_common import CLASSES, mean_std, score_checkpoint  # noqa: E402

import mmprune  # noqa: E402,F401

CENTRED = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='RandomCenterCropPad', ratios=None, border=None,
         mean=[0, 0, 0], std=[1, 1, 1], to_rgb=True, test_mode=True,
         test_pad_mode=['logical_or', 31], test_pad_add_pix=1),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'border',
                    'scale_factor', 'kitti_annos')),
]


def score(cfg_path, ckpt, data_root, pipeline, work_dir):
    cfg = Config.fromfile(cfg_path)
    cfg.test_dataloader.dataset.data_root = data_root
    cfg.train_dataloader.dataset.data_root = data_root
    cfg.val_dataloader.dataset.data_root = data_root
    if pipeline is not None:
        cfg.test_dataloader.dataset.pipeline = copy.deepcopy(pipeline)
    return score_checkpoint(cfg, ckpt, work_dir)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('ckpts', nargs='+')
    p.add_argument('--data-root', required=True)
    p.add_argument('--work-dir', default='work_dirs/test_framing')
    p.add_argument('--out', default=None)
    args = p.parse_args()
    rows = []
    for i, ckpt in enumerate(args.ckpts):
        row = dict(ckpt=ckpt)
        for name, pipe in (('centred', CENTRED), ('top_left', None)):
            row[name] = score(args.config, ckpt, args.data_root, pipe,
                              osp.join(args.work_dir, f'{i}_{name}'))
        rows.append(row)
    summary = {name: {c: mean_std(r[name][c] for r in rows)
                      for c in CLASSES}
               for name in ('centred', 'top_left')}
    report = dict(config=args.config, data_root=args.data_root, runs=rows,
                  summary=summary)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)
    print('SUMMARY Car AP40 moderate: ' + '; '.join(
        f'{n} {summary[n]["Car"]["mean"]:.1f} +- {summary[n]["Car"]["std"]:.1f}'
        for n in ('centred', 'top_left')))


if __name__ == '__main__':
    main()
