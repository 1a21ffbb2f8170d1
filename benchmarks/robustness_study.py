"""Clean and PGD KITTI AP of baseline, FastAT, pruned and pruned + FastAT.

The seed's robustness study (its Table 2, ImageNet) at the CPU demo's
scale: each setting is trained with ``tools/train.py``'s runner from its
config, its last checkpoint is tested with ``AdversarialTestLoop`` (the
seed's PGD: eps 2/255, alpha 0.5/255, 20 steps; the same thing as
``tools/test.py --attack pgd``), and the clean and attacked AP are reported
side by side. Settings:

* ``baseline``: ``--baseline-config`` (the demo CenterNet DLA-34);
* ``fastat``: ``--fastat-config`` (the demo trained with FastAT,
  eps 2/255, alpha 2.5/255);
* ``prune50``: ``--prune-config`` (in-train pruning to 50 % MACs);
* ``prune50_fastat``: the prune config with its train loop made adversarial
  (FastAT, same attack as ``fastat``).

A setting whose config file does not exist is skipped with a message. The
full demo schedule (12 epochs on 180 frames, four settings) takes about an
hour on two CPU cores; ``--epochs`` shortens every schedule (LR milestones
and a pruning hook's ``prune_start`` / ``prune_end`` scale with it) and
``--test-images`` evaluates on the first N validation frames.

    python benchmarks/robustness_study.py --epochs 2 --test-images 16

Prints one JSON object and a one-line summary.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import os.path as osp
import sys
import time

from mmengine.config import Config
from mmengine.runner import Runner

import mmprune  # noqa: F401
import mmprune.engine.adversarial  # noqa: F401
from mmprune.datasets import make_synthetic_kitti
from mmprune.engine.adversarial import apply_attack_option

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from study_common import drop_val_loop  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'demo')
SETTINGS = ('baseline', 'fastat', 'prune50', 'prune50_fastat')
_ADV_LOOPS = {'EpochBasedTrainLoop': 'AdversarialEpochBasedTrainLoop',
              'IterBasedTrainLoop': 'AdversarialIterBasedTrainLoop'}


def _scale_epoch(value, factor, epochs):
    return min(max(int(round(value * factor)), 0), epochs)


def _shorten(cfg: Config, epochs: int) -> None:
    """Run ``epochs`` epochs; scale epoch milestones and prune windows."""
    old = int(cfg.train_cfg.max_epochs)
    factor = epochs / old
    cfg.train_cfg.max_epochs = epochs
    for sched in cfg.get('param_scheduler') or []:
        if sched.get('by_epoch', True) and 'milestones' in sched:
            sched.milestones = [_scale_epoch(m, factor, epochs)
                                for m in sched.milestones]
        if sched.get('by_epoch', True) and sched.get('end', 0) == old:
            sched.end = epochs
    for hook in cfg.get('custom_hooks') or []:
        if hook.get('by_epoch', True):
            for key in ('prune_start', 'prune_end'):
                if key in hook:
                    hook[key] = _scale_epoch(hook[key], factor, epochs)


def build_setting(name: str, args) -> Config:
    """The runner config of one setting; FileNotFoundError if missing."""
    path = {'baseline': args.baseline_config,
            'fastat': args.fastat_config,
            'prune50': args.prune_config,
            'prune50_fastat': args.prune_config}[name]
    if not osp.isfile(path):
        raise FileNotFoundError(f'{name}: config {path} does not exist yet')
    cfg = Config.fromfile(path)
    if name == 'prune50_fastat':
        loop = cfg.train_cfg.get('type', 'EpochBasedTrainLoop')
        if loop not in _ADV_LOOPS:
            raise ValueError(f'{path}: train_cfg.type={loop!r} has no '
                             f'adversarial form; expected one of '
                             f'{sorted(_ADV_LOOPS)}')
        cfg.train_cfg.type = _ADV_LOOPS[loop]
        cfg.train_cfg.attack = dict(type='FastAT', eps=2 / 255,
                                    alpha=2.5 / 255)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = args.data_root
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    if args.epochs is not None:
        _shorten(cfg, args.epochs)
    epochs = int(cfg.train_cfg.max_epochs)
    drop_val_loop(cfg)  # test once, at the end
    cfg.default_hooks.checkpoint.interval = epochs
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    cfg.default_hooks.logger.interval = 10
    cfg.randomness = dict(seed=args.seed)
    cfg.work_dir = osp.join(args.work_dir, name)
    return cfg


def run_setting(name: str, args) -> dict:
    """Train one setting, then test its checkpoint clean and under PGD."""
    cfg = build_setting(name, args)
    t0 = time.perf_counter()
    runner = Runner.from_cfg(copy.deepcopy(cfg))
    runner.train()
    train_s = time.perf_counter() - t0
    ckpt = osp.join(cfg.work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')

    test_cfg = copy.deepcopy(cfg)
    test_cfg.load_from = ckpt
    test_cfg.test_cfg = dict(type='TestLoop')
    apply_attack_option(test_cfg, 'pgd')
    test_cfg.test_cfg.attack.steps = args.pgd_steps
    if args.test_images is not None:
        test_cfg.test_dataloader.dataset.indices = args.test_images
    test_cfg.work_dir = osp.join(cfg.work_dir, 'test')
    t0 = time.perf_counter()
    metrics = Runner.from_cfg(test_cfg).test()
    test_s = time.perf_counter() - t0
    key = args.metric
    return {
        'config': osp.relpath(cfg.filename, ROOT) if cfg.filename else None,
        'epochs': int(cfg.train_cfg.max_epochs),
        'train_iters': runner.iter,
        'train_s': round(train_s, 1),
        'test_s': round(test_s, 1),
        'clean': round(float(metrics[key]), 2),
        'pgd': round(float(metrics['adv/' + key]), 2),
        'task_loss_clean': round(float(metrics['adv/task_loss_clean']), 4),
        'task_loss_pgd': round(float(metrics['adv/task_loss']), 4),
    }


def main() -> None:
    """Parse arguments, run the settings, print JSON and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--baseline-config', default=osp.join(
        DEMO, 'centernet_dla34_kitti_demo.py'))
    parser.add_argument('--fastat-config', default=osp.join(
        DEMO, 'centernet_dla34_kitti_fastat_demo.py'))
    parser.add_argument('--prune-config', default=osp.join(
        DEMO, 'centernet_dla34_prune50_demo.py'))
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS),
                        choices=SETTINGS)
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data',
                                                        'kitti_synth'),
                        help='KITTI-layout data; generated (240 frames of '
                        '128 x 416) when the folder does not exist')
    parser.add_argument('--work-dir', default=osp.join(
        ROOT, 'work_dirs', 'robustness_study'))
    parser.add_argument('--epochs', type=int, default=None,
                        help='shorten every schedule to this many epochs')
    parser.add_argument('--test-images', type=int, default=None,
                        help='evaluate on the first N validation frames')
    parser.add_argument('--pgd-steps', type=int, default=20)
    parser.add_argument('--metric', default='kitti/Car_AP40_moderate')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    if not osp.isdir(osp.join(args.data_root, 'training')):
        os.makedirs(args.data_root, exist_ok=True)
        make_synthetic_kitti(args.data_root, num_images=240,
                             img_size=(128, 416), seed=0)
    results = {}
    for name in args.settings:
        try:
            results[name] = run_setting(name, args)
        except FileNotFoundError as err:
            print(f'skipping {err}')
            results[name] = {'skipped': str(err)}
    report = {'metric': args.metric, 'pgd': dict(eps='2/255',
                                                 alpha='0.5/255',
                                                 steps=args.pgd_steps),
              'epochs': args.epochs, 'test_images': args.test_images,
              'settings': results}
    print(json.dumps(report, indent=2))
    parts = [f'{n}: clean {r["clean"]:.2f} / PGD {r["pgd"]:.2f}'
             if 'clean' in r else f'{n}: skipped'
             for n, r in results.items()]
    print(f'{args.metric} (clean / PGD-{args.pgd_steps}): ' +
          '; '.join(parts))


if __name__ == '__main__':
    main()
