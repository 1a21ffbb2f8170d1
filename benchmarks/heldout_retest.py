"""Test trained checkpoints again on a held-out synthetic KITTI set.

The detection study tests on the 60 validation frames of its 240-frame set.
They hold fewer than 41 valid moderate Pedestrians and Cyclists, where the
devkit caps AP40 (`mmprune.evaluation.functional.kitti_caps`). This script
tests existing checkpoints of one config on ``--heldout`` frames drawn with
another generator seed (every frame tested), so the AP can reach 100, and
reports each checkpoint and the mean ± sample std over them.

    python benchmarks/heldout_retest.py --config configs/demo/X.py \\
        --ckpts work_dirs/.../seed0/dense/epoch_12.pth ... [--heldout 240]

Prints one JSON object; writes it to ``--out`` when given. Checkpoints must
load into the config's model (dense or masked runs, not surgically pruned
ones).
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys

from mmengine.config import Config

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from study_common import (  # noqa: E402
    CLASSES,
    HELDOUT_SEED,
    heldout_test_set,
    mean_std,
    score_checkpoint,
    set_input_size,
    use_test_set,
)

import mmprune  # noqa: E402,F401


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', required=True)
    p.add_argument('--ckpts', nargs='+', required=True)
    p.add_argument('--heldout', type=int, default=240)
    p.add_argument('--heldout-seed', type=int, default=HELDOUT_SEED,
                   help='generator seed of the held-out set (not 0, the '
                   'training set\'s)')
    p.add_argument('--shape', type=int, nargs=2, default=(128, 416),
                   metavar=('H', 'W'),
                   help='frame size (px) of the held-out frames and of the '
                   'test pipeline (the one the checkpoints trained in)')
    p.add_argument('--work-dir', default=osp.join(
        osp.dirname(osp.dirname(osp.abspath(__file__))), 'work_dirs',
        'detection_study'))
    p.add_argument('--out', default=None)
    args = p.parse_args()
    for ck in args.ckpts:
        if not osp.isfile(ck):
            p.error(f'--ckpts: {ck} does not exist')
    if args.heldout_seed == 0:
        p.error('--heldout-seed 0 draws the training frames; pick another')
    root, ann = heldout_test_set(args.work_dir, args.heldout, args.shape,
                                 args.heldout_seed)
    runs = []
    for i, ck in enumerate(args.ckpts):
        cfg = Config.fromfile(args.config)
        use_test_set(cfg, root, ann)
        set_input_size(cfg, args.shape)
        res = score_checkpoint(cfg, ck,
                              osp.join(args.work_dir, 'retest', str(i)))
        runs.append(dict(ckpt=ck, **res))
    summary = {c: mean_std(r[c] for r in runs) for c in CLASSES}
    out = dict(config=args.config, heldout=args.heldout,
               heldout_seed=args.heldout_seed, runs=runs,
               summary=summary)
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')


if __name__ == '__main__':
    main()
