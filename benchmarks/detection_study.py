"""In-train pruning against post-train pruning, on synthetic KITTI.

The comparison a user would make before adopting in-train pruning, on the
CPU demo's CenterNet DLA-34 (plain-conv neck, 128 x 416, 180 training and
60 validation frames). For every seed:

* ``dense``: the demo baseline, ``E`` epochs;
* ``intrain``: the demo prune config (target 0.5): masks train in its
  window and freeze at epoch ``F``, then fine-tune to ``E``;
* ``post_l1`` / ``post_bn``: the dense run's checkpoint at epoch ``F`` (the
  in-train run's pre-freeze part), pruned by Torch-Pruning with
  ``MagnitudeImportance`` (L1) or ``BNScaleImportance`` to the MACs the
  in-train model ended at, through Torch-Pruning's own surgery
  (`mmprune.engine.posttrain`, exact channel counts), then fine-tuned
  ``E - F`` epochs with the in-train run's optimizer and lr from epoch ``F``
  on. Total epochs match.
* ``post_l1_floor`` / ``post_bn_floor`` (opt-in, ``--arms``): the same with
  the in-train config's per-layer floor (Torch-Pruning's
  ``max_pruning_ratio = 1 - min_channels``), so no layer is cut deeper
  than the in-train run could cut it.

With ``--fastat`` every arm trains on FastAT batches (eps 2/255, alpha
2.5/255) and is tested clean and under PGD (eps 2/255, alpha 0.5/255,
``--pgd-steps``), the seed's Table 2 setting.

Reported per arm: Car / Pedestrian / Cyclist AP40 moderate (and PGD AP),
MACs ratio, wall seconds, and for ``intrain`` psi by training alone and the
channels the projection moved; mean and std over seeds.

``--input-size H W`` trains and tests the net on frames resized to H x W
while the labels stay in the ``--shape`` frame: boxes are scored back in
that frame, so KITTI's height limits (25 px at moderate) still apply to the
same boxes. This is how a real KITTI config runs at a reduced resolution
(the README's FastAT study at 64 x 208 uses it to fit its time budget).

``--out`` is rewritten after every arm (``"partial": true`` until the last
one), and ``--resume`` keeps the arms that file already holds, so a long
study survives an interrupted session; the dense checkpoint a post-train arm
starts from must still be in ``--work-dir``.

    python benchmarks/detection_study.py [--seeds 0 1 2] [--fastat] \\
        [--arms ...] [--test-images N] [--input-size H W] [--resume] \\
        [--quick] [--out work_dirs/detection_study/study.json]

Prints one JSON object and a summary line; writes it to ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import os.path as osp
import sys
import time

import torch
from mmengine.config import Config
from mmengine.runner import Runner, load_checkpoint

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from robustness_study import _ADV_LOOPS, _shorten  # noqa: E402
from study_common import (  # noqa: E402
    CLASSES,
    drop_val_loop,
    finetune_cfg,
    heldout_test_set,
    load_resume,
    set_input_size,
    summarise,
    train_data_root,
    use_test_set,
    write_report,
)

import mmprune  # noqa: E402,F401
import mmprune.engine.adversarial  # noqa: E402,F401
from mmprune.datasets import make_synthetic_kitti  # noqa: E402
from mmprune.engine.adversarial import apply_attack_option  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'demo')
ARMS = ('dense', 'intrain', 'post_l1', 'post_bn', 'post_l1_floor',
        'post_bn_floor')
#: The arms a plain run compares (the floor arms are opt-in: --arms).
DEFAULT_ARMS = ARMS[:4]


def _metric(cls):
    return f'kitti/{cls}_AP40_moderate'


def _prepare(path, args, seed, work_dir, epochs=None):
    """Config of one arm: data, schedule, seed, FastAT and PGD test."""
    cfg = Config.fromfile(path)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = args.data_root
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    set_input_size(cfg, args.input_size)
    if epochs is not None:
        _shorten(cfg, epochs)
    if args.heldout:
        use_test_set(cfg, *heldout_test_set(args.work_dir, args.heldout,
                                            args.shape))
    if args.test_images is not None:
        cfg.test_dataloader.dataset.indices = args.test_images
    if args.fastat:
        loop = cfg.train_cfg.get('type', 'EpochBasedTrainLoop')
        cfg.train_cfg.type = _ADV_LOOPS.get(loop, loop)
        cfg.train_cfg.attack = dict(type='FastAT', eps=2 / 255,
                                    alpha=2.5 / 255)
        cfg.test_cfg = dict(type='TestLoop')
        apply_attack_option(cfg, 'pgd')
        cfg.test_cfg.attack.steps = args.pgd_steps
    drop_val_loop(cfg)
    cfg.default_hooks.logger.interval = 10
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = work_dir
    cfg.visualizer.name = f'visualizer_{work_dir}'
    return cfg


def _scores(metrics, args):
    out = {c: round(float(metrics[_metric(c)]), 2) for c in CLASSES}
    if args.fastat:
        out.update({f'pgd_{c}': round(float(metrics['adv/' + _metric(c)]),
                                      2) for c in CLASSES})
    return out


def _prune_hook(cfg):
    return next(h for h in cfg.custom_hooks
                if h['type'] == 'InTrainPruningHook')


def run_dense(args, seed, wd, freeze):
    cfg = _prepare(args.base_config, args, seed, wd, args.epochs)
    # Keep the checkpoint at the freeze epoch for the post-train arms.
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=freeze, max_keep_ckpts=3)
    runner = Runner.from_cfg(cfg)
    runner.train()
    res = _scores(runner.test(), args)
    res['psi'] = 1.0
    return res, osp.join(wd, f'epoch_{freeze}.pth')


def run_intrain(args, seed, wd):
    cfg = _prepare(args.prune_config, args, seed, wd, args.epochs)
    runner = Runner.from_cfg(cfg)
    runner.train()
    # A fresh runner tests the last checkpoint: the hook installs its masks
    # once per runner, and the test runner restores them frozen.
    tcfg = copy.deepcopy(cfg)
    with open(osp.join(wd, 'last_checkpoint')) as f:
        tcfg.load_from = f.read().strip()
    tcfg.work_dir = osp.join(wd, 'test')
    tcfg.visualizer.name = f'visualizer_{tcfg.work_dir}'
    res = _scores(Runner.from_cfg(tcfg).test(), args)
    hook = next(h for h in runner.hooks
                if type(h).__name__ == 'InTrainPruningHook')
    rep = hook.freeze_report
    channels = sum(g.size for g in hook.plan.groups.values())
    res.update(psi=round(hook.current_psi(), 4),
               psi_trained=round(rep.psi_before, 4),
               projection_moved=rep.dropped + rep.restored,
               projection_moved_pct=round(100.0 * (rep.dropped +
                                                   rep.restored) / channels,
                                          2),
               b=hook.b_value)
    return res, cfg


def trace_input(cfg, h, w):
    """A zero batch ``(1, 3, H', W')`` and its sample for an h x w frame.

    H', W' are h, w padded up to the data preprocessor's
    ``pad_size_divisor``, as every batch the net sees is (DLA needs
    multiples of 32: 64 x 208 runs as 64 x 224).
    """
    from mmdet.structures import DetDataSample
    div = int(cfg.model.get('data_preprocessor', {}).get(
        'pad_size_divisor', 1))
    ph, pw = -(-h // div) * div, -(-w // div) * div
    sample = DetDataSample(metainfo=dict(
        img_shape=(h, w), pad_shape=(ph, pw), batch_input_shape=(ph, pw),
        ori_shape=(h, w), scale_factor=(1.0, 1.0)))
    return torch.zeros(1, 3, ph, pw), sample


def run_post(args, seed, wd, dense_ckpt, prune_cfg, psi, importance,
             freeze, max_layer_ratio=1.0, length=None):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from mmprune.engine.posttrain import prune_post_train
    cfg = finetune_cfg(prune_cfg, freeze, length)
    cfg.work_dir = wd
    cfg.visualizer.name = f'visualizer_{wd}'
    # A resumed study may reach here before any Runner set the scope.
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    load_checkpoint(model, dense_ckpt, map_location='cpu')
    inputs, sample = trace_input(cfg, *args.input_size)
    model.eval()
    # Exact channel counts: Torch-Pruning's global ranking with round_to=16
    # jumps over the MACs band on this model, and exact counts can only
    # help the baseline at equal MACs.
    info = prune_post_train(model, inputs, [sample], psi,
                            importance=importance, channel_multiple=1,
                            max_layer_ratio=max_layer_ratio)
    model.train()
    kwargs = {k: cfg.get(k) for k in (
        'train_dataloader', 'test_dataloader', 'train_cfg', 'test_cfg',
        'optim_wrapper', 'param_scheduler', 'test_evaluator',
        'default_hooks', 'custom_hooks', 'env_cfg', 'log_processor',
        'visualizer', 'default_scope', 'randomness')}
    kwargs['randomness'] = dict(seed=seed)
    runner = Runner(model=model, work_dir=wd, cfg=cfg, **kwargs)
    runner.train()
    res = _scores(runner.test(), args)
    res.update(psi=round(float(info['psi']), 4), importance=importance,
               max_layer_ratio=max_layer_ratio,
               finetune_epochs=int(cfg.train_cfg.max_epochs))
    return res, runner.model


#: Settings a resumed study must share with the file it resumes.
_RESUME_KEYS = ('setting', 'epochs', 'freeze', 'num_images', 'pgd_steps',
                'test_images', 'heldout', 'shape', 'input_size')


def _timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    res = out[0] if isinstance(out, tuple) else out
    res['wall_s'] = round(time.perf_counter() - t0, 1)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--base-config', default=osp.join(
        DEMO, 'centernet_dla34_kitti_demo.py'))
    p.add_argument('--prune-config', default=osp.join(
        DEMO, 'centernet_dla34_prune50_demo.py'))
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--arms', nargs='+', default=list(DEFAULT_ARMS),
                   choices=ARMS,
                   help='dense always runs (the post-train arms start from '
                   'it); without intrain, --psi gives the MACs target')
    p.add_argument('--psi', type=float, default=None,
                   help='MACs ratio of the post-train arms when intrain '
                   'does not run (e.g. 0.4994, its earlier result)')
    p.add_argument('--epochs', type=int, default=None,
                   help='shorten every schedule to this many epochs')
    p.add_argument('--fastat', action='store_true')
    p.add_argument('--pgd-steps', type=int, default=20)
    p.add_argument('--num-images', type=int, default=240)
    p.add_argument('--shape', type=int, nargs=2, default=(128, 416),
                   metavar=('H', 'W'),
                   help='frame size (px) of the generated data and its '
                   'labels; the KITTI height limits apply in this frame')
    p.add_argument('--input-size', type=int, nargs=2, default=None,
                   metavar=('H', 'W'),
                   help='frame (px) every pipeline resizes and pads to, and '
                   'the post-train trace\'s; boxes are scored back in the '
                   '--shape frame (default: --shape)')
    p.add_argument('--test-images', type=int, default=None,
                   help='test on the first N validation frames (all: 60)')
    p.add_argument('--heldout', type=int, default=None,
                   help='test on N frames of a held-out synthetic set '
                   '(generator seed 1) instead of the 60 validation frames, '
                   'whose Pedestrian and Cyclist AP40 the devkit caps')
    p.add_argument('--resume', action='store_true',
                   help='keep the arms --out already holds')
    p.add_argument('--quick', action='store_true',
                   help='1 seed, 24 frames, 2 epochs: checks the pipeline')
    p.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs',
                                                  'detection_study'))
    p.add_argument('--data-root', default=None)
    p.add_argument('--out', default=None)
    args = p.parse_args()
    if 'intrain' not in args.arms and args.psi is None:
        p.error('--psi is required when --arms leaves out intrain')
    if args.quick:
        args.seeds, args.epochs, args.num_images = args.seeds[:1], 2, 24
        args.pgd_steps = min(args.pgd_steps, 2)
    h, w = args.shape
    args.input_size = tuple(args.input_size or args.shape)
    args.data_root = args.data_root or train_data_root(
        args.work_dir, args.num_images, args.shape)
    if not osp.isdir(osp.join(args.data_root, 'training')):
        os.makedirs(args.data_root, exist_ok=True)
        make_synthetic_kitti(args.data_root, num_images=args.num_images,
                             img_size=tuple(args.shape), seed=0)
    probe = _prepare(args.prune_config, args, 0, args.work_dir, args.epochs)
    freeze = int(_prune_hook(probe).prune_end)
    tag = 'fastat' if args.fastat else 'clean'
    out = args.out or osp.join(args.work_dir, f'study_{tag}.json')
    head = dict(setting=tag, seeds=args.seeds, quick=args.quick,
                epochs=int(probe.train_cfg.max_epochs), freeze=freeze,
                num_images=args.num_images, pgd_steps=args.pgd_steps,
                test_images=args.test_images, heldout=args.heldout,
                shape=[h, w], input_size=list(args.input_size))
    done = load_resume(out, head, _RESUME_KEYS) if args.resume else {}
    t0 = time.perf_counter()
    runs = []

    def write(partial):
        return write_report(out, dict(
            head, partial=partial, wall_s=round(time.perf_counter() - t0, 1),
            runs=runs, summary=summarise(runs, ARMS)))

    for seed in args.seeds:
        wd = osp.join(args.work_dir, tag, f'seed{seed}')
        run = dict(done.get(seed, {'seed': seed}))
        runs.append(run)
        ckpt = osp.join(wd, 'dense', f'epoch_{freeze}.pth')
        if 'dense' not in run:
            run['dense'], ckpt = _timed(run_dense, args, seed,
                                        osp.join(wd, 'dense'), freeze)
            write(True)
        if 'intrain' in args.arms and 'intrain' not in run:
            run['intrain'], prune_cfg = _timed(run_intrain, args, seed,
                                               osp.join(wd, 'intrain'))
            write(True)
        else:
            prune_cfg = _prepare(args.prune_config, args, seed,
                                 osp.join(wd, 'intrain'), args.epochs)
        psi = run['intrain']['psi'] if 'intrain' in run else args.psi
        # The floor arms give Torch-Pruning the in-train run's per-layer
        # floor: no layer loses more than 1 - min_channels of its channels.
        mc = _prune_hook(prune_cfg).get('min_channels', 1)
        floor = 1.0 - mc if isinstance(mc, float) and mc < 1 else 1.0
        for imp in ('l1', 'bn'):
            for arm, cap in ((f'post_{imp}', 1.0),
                             (f'post_{imp}_floor', floor)):
                if arm in args.arms and arm not in run:
                    if not osp.isfile(ckpt):
                        raise SystemExit(
                            f'{arm}, seed {seed}: the dense checkpoint '
                            f'{ckpt} is missing (--work-dir changed?)')
                    run[arm], _ = _timed(run_post, args, seed,
                                         osp.join(wd, arm), ckpt, prune_cfg,
                                         psi, imp, freeze, cap)
                    write(True)
    report = write(False)
    print(json.dumps(report, indent=1))
    s = report['summary']
    print('SUMMARY Car AP40 moderate ' + tag + ': ' + '; '.join(
        f'{a} {s[a]["Car"]["mean"]:.1f} +- {s[a]["Car"]["std"]:.1f}'
        for a in ARMS if a in s))


if __name__ == '__main__':
    main()
