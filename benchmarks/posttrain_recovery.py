"""Does the post-train baseline catch up when it fine-tunes longer?

The detection study gives the post-train arms the epochs the in-train run
had after its freeze (``E - F``), and they score 0.0 Pedestrian AP40 in
every seed. This probe asks why, on the study's own dense checkpoints
(``<work-dir>/<setting>/seed<s>/dense/epoch_F.pth``, so run
`detection_study.py` first with the same ``--work-dir``, ``--heldout`` and
``--num-images``). For every seed and every ``--finetune-epochs`` N:

* the dense checkpoint at the freeze epoch, pruned by Torch-Pruning L1 to
  ``--psi`` (`detection_study.run_post`), fine-tuned N epochs with the
  in-train run's post-freeze optimizer and lr schedule stretched to N
  epochs (`study_common.finetune_cfg`), then tested like the study;
* its box fit: per class, the mean over ground-truth boxes of the best IoU
  with a prediction of that class scoring at least ``--score-thr``, and the
  share of boxes whose best IoU reaches the KITTI overlap (0.7 Car, 0.5
  Pedestrian and Cyclist). AP40 can be 0 while objects are found (the
  heatmap peaks) if their boxes have the wrong size; this separates them.

The dense run's last checkpoint gets the same box fit, as the reference.

    python benchmarks/posttrain_recovery.py --psi 0.4994 --heldout 240 \\
        [--seeds 0 1 2] [--finetune-epochs 4 8] [--resume] [--quick] \\
        [--out work_dirs/detection_study/recovery.json]

Prints one JSON object; writes it to ``--out`` after every arm.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
import time

import torch
from mmengine.config import Config
from mmengine.runner import Runner, load_checkpoint

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from detection_study import _prepare, _prune_hook, run_post  # noqa: E402
from study_common import (  # noqa: E402
    CLASSES,
    load_resume,
    summarise,
    train_data_root,
    write_report,
)

import mmprune  # noqa: E402,F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'demo')
#: KITTI's 2D overlap for a true positive, per class.
KITTI_IOU = {'Car': 0.7, 'Pedestrian': 0.5, 'Cyclist': 0.5}
#: Settings a resumed probe must share with the file it resumes.
_RESUME_KEYS = ('psi', 'epochs', 'freeze', 'heldout', 'test_images',
                'score_thr', 'num_images', 'shape')


def _median(vals):
    return round(float(torch.tensor(vals).median()), 3) if vals else None


@torch.no_grad()
def box_fit(model, loader, score_thr: float) -> dict:
    """Per class: ``iou_<cls>`` mean best IoU (0..1), ``hit_<cls>`` share.

    Both over every ground-truth box of the class in ``loader`` (the test
    pipeline loads boxes in the original frame, where predictions are);
    ``n_<cls>`` counts them, and a class with none gets ``None``.
    ``w_<cls>`` / ``h_<cls>``: median width / height of the best-fitting
    prediction over the ground truth's (1.0 = right size), over the boxes
    some prediction overlaps.
    """
    from mmdet.structures.bbox import bbox_overlaps
    best = {c: [] for c in CLASSES}
    size = {c: ([], []) for c in CLASSES}
    model.eval()
    for batch in loader:
        for res in model.test_step(batch):
            gt, pred = res.gt_instances, res.pred_instances
            for k, cls in enumerate(CLASSES):
                g = gt.bboxes[gt.labels == k]
                g = getattr(g, 'tensor', g).float()
                if not len(g):
                    continue
                p = pred.bboxes[(pred.labels == k)
                                & (pred.scores >= score_thr)]
                if not len(p):
                    best[cls] += [0.0] * len(g)
                    continue
                iou, idx = bbox_overlaps(g, p.float()).max(1)
                best[cls] += iou.tolist()
                q, g = p[idx][iou > 0].float(), g[iou > 0]
                size[cls][0].extend(((q[:, 2] - q[:, 0]) /
                                     (g[:, 2] - g[:, 0])).tolist())
                size[cls][1].extend(((q[:, 3] - q[:, 1]) /
                                     (g[:, 3] - g[:, 1])).tolist())
    out = {}
    for cls, vals in best.items():
        out[f'n_{cls}'] = len(vals)
        out[f'w_{cls}'], out[f'h_{cls}'] = (_median(v) for v in size[cls])
        if not vals:  # a tiny test set; None, not a made-up 0
            out[f'iou_{cls}'] = out[f'hit_{cls}'] = None
            continue
        out[f'iou_{cls}'] = round(sum(vals) / len(vals), 3)
        out[f'hit_{cls}'] = round(
            sum(v >= KITTI_IOU[cls] for v in vals) / len(vals), 3)
    return out


def _dense_fit(args, seed, wd, epochs):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    cfg = _prepare(args.base_config, args, seed, wd)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    ckpt = osp.join(wd, f'epoch_{epochs}.pth')
    load_checkpoint(model, ckpt, map_location='cpu')
    loader = Runner.build_dataloader(cfg.test_dataloader)
    return dict(box_fit(model, loader, args.score_thr), ckpt=ckpt)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--base-config', default=osp.join(
        DEMO, 'centernet_dla34_kitti_demo.py'))
    p.add_argument('--prune-config', default=osp.join(
        DEMO, 'centernet_dla34_prune50_demo.py'))
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--psi', type=float, required=True,
                   help='MACs ratio to prune to (the in-train result)')
    p.add_argument('--finetune-epochs', type=int, nargs='+', default=None,
                   help='fine-tune lengths (default: E - F, then twice it)')
    p.add_argument('--score-thr', type=float, default=0.1)
    p.add_argument('--num-images', type=int, default=240)
    p.add_argument('--shape', type=int, nargs=2, default=(128, 416),
                   metavar=('H', 'W'))
    p.add_argument('--heldout', type=int, default=None)
    p.add_argument('--test-images', type=int, default=None)
    p.add_argument('--resume', action='store_true')
    p.add_argument('--quick', action='store_true',
                   help='seed 0 of a detection_study.py --quick work dir')
    p.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs',
                                                  'detection_study'))
    p.add_argument('--out', default=None)
    args = p.parse_args()
    if args.quick:
        args.seeds, args.num_images = args.seeds[:1], 24
    args.epochs = 2 if args.quick else None
    args.fastat, args.pgd_steps = False, 0
    args.input_size = tuple(args.shape)  # the study's default frame
    args.data_root = train_data_root(args.work_dir, args.num_images,
                                     args.shape)
    prune_cfg = _prepare(args.prune_config, args, 0, args.work_dir,
                         args.epochs)
    freeze = int(_prune_hook(prune_cfg).prune_end)
    epochs = int(prune_cfg.train_cfg.max_epochs)
    lengths = args.finetune_epochs or [epochs - freeze,
                                       2 * (epochs - freeze)]
    out = args.out or osp.join(args.work_dir, 'recovery.json')
    head = dict(seeds=args.seeds, quick=args.quick, psi=args.psi,
                epochs=epochs, freeze=freeze, heldout=args.heldout,
                test_images=args.test_images, score_thr=args.score_thr,
                num_images=args.num_images, shape=list(args.shape),
                kitti_iou=KITTI_IOU)
    done = load_resume(out, head, _RESUME_KEYS) if args.resume else {}
    arms = ['dense'] + [f'post_l1_ft{n}' for n in lengths]
    t0 = time.perf_counter()
    runs = []

    def write(partial):
        return write_report(out, dict(
            head, finetune_epochs=lengths, partial=partial,
            wall_s=round(time.perf_counter() - t0, 1), runs=runs,
            summary=summarise(runs, arms)))

    for seed in args.seeds:
        wd = osp.join(args.work_dir, 'clean', f'seed{seed}')
        ckpt = osp.join(wd, 'dense', f'epoch_{freeze}.pth')
        if not osp.isfile(ckpt):
            raise SystemExit(f'seed {seed}: {ckpt} is missing; run '
                             'detection_study.py with this --work-dir first')
        run = dict(done.get(seed, {'seed': seed}))
        runs.append(run)
        if 'dense' not in run:
            run['dense'] = _dense_fit(args, seed, osp.join(wd, 'dense'),
                                      epochs)
            write(True)
        pcfg = _prepare(args.prune_config, args, seed,
                        osp.join(wd, 'intrain'), args.epochs)
        for n, arm in zip(lengths, arms[1:]):
            if arm in run:
                continue
            t1 = time.perf_counter()
            res, model = run_post(args, seed, osp.join(wd, 'recovery', arm),
                                  ckpt, pcfg, args.psi, 'l1', freeze,
                                  length=n)
            loader = Runner.build_dataloader(
                Config(dict(pcfg.test_dataloader)))
            res.update(box_fit(model, loader, args.score_thr),
                       wall_s=round(time.perf_counter() - t1, 1))
            run[arm] = res
            write(True)
    print(json.dumps(write(False), indent=1))


if __name__ == '__main__':
    main()
