"""Simulate the mask dynamics of a prune config on its real traced model.

Traces the config's detector at the hook's ``input_shape`` (or ``--shape``),
installs the masks with the hook's settings, and runs the masks' own SGD
(lr, decay, b, loss form, target schedule, normalisation, revive) for the
real number of window iterations, with ``L_HW``'s real gradients. The task
loss is not run (a full KITTI schedule is days of GPU time); it enters as a
model of its gradient on the binary masks: channel ``c`` is pushed up by a
persistent ``importance_c ~ |N(0, 1)| * --task-grad`` plus per-iteration
noise ``N(0, --task-noise)``, and a pruned channel behind a ReLU gets none.
``--task-grad 0`` is ``L_HW`` alone.

    python benchmarks/prune_dynamics.py configs/centernet_dla34_prune50.py \\
        --iters-per-epoch 44 [--task-grad 1e-3] [--out dyn.json]

44 iterations per epoch is KITTI's 75 % train split (5,610 images) at
8 GPUs x 16. Prints one JSON object (psi curve, psi at the freeze, channels
the projection moves) and a summary line.
"""
import argparse
import json
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmprune.core import (  # noqa: E402
    CostModel,
    MaskSet,
    auto_b,
    hw_loss,
    hw_scale,
    integrate_lag,
    project_to_target,
    scheduled_target,
)


def hook_cfg(cfg):
    """The InTrainPruningHook dict of a config."""
    for h in cfg.get('custom_hooks', []):
        if h.get('type') == 'InTrainPruningHook':
            return dict(h)
    raise KeyError(f'{cfg.filename}: custom_hooks has no InTrainPruningHook')


def trace_config(cfg, shape):
    """PrunePlan of the config's detector at ``shape`` = (H, W)."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules

    import mmprune  # noqa: F401  (registers our modules)
    from mmprune.engine.hooks.in_train_pruning_hook import trace_detector
    register_all_modules()
    model = MODELS.build(cfg.model).eval()
    h, w = shape
    sample = DetDataSample(metainfo=dict(
        img_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
        ori_shape=(h, w), scale_factor=(1.0, 1.0)))
    return trace_detector(model, torch.zeros(1, 3, h, w), [sample],
                          cfg_skip(cfg))


def cfg_skip(cfg):
    return hook_cfg(cfg).get('skip', ())


def simulate(plan, hook, lr, decay, iters, task_grad=0.0, task_noise=0.0,
             seed=0, log_every=None):
    """Run the masks' SGD on ``L_HW`` (+ the task-gradient model).

    Returns a dict: the psi curve, psi at the freeze, and the projection's
    channel moves. ``hook`` holds the InTrainPruningHook arguments.
    """
    from mmprune.engine.hooks import InTrainPruningHook

    # The hook itself holds the defaults and validates the arguments.
    h = InTrainPruningHook(**{k: v for k, v in hook.items() if k != 'type'})
    g = torch.Generator().manual_seed(seed)
    target, form, q = h.psi_target, h.loss_form, h.channel_multiple
    ms = MaskSet(plan, h.mask_init, h.threshold, h.min_channels,
                 q if h.multiple_in_train else 1, h.revive, h.binarize)
    cm = CostModel(plan, cost=h.cost)
    scale = hw_scale(cm) if h.normalize else 1.0
    b = auto_b(cm, lr, iters, h.threshold, form, target, h.normalize,
               h.binarize) if h.b == 'auto' else float(h.b)
    opt = torch.optim.SGD(ms.parameters(), lr=lr, weight_decay=decay)
    names = ms.group_names
    imp = {n: torch.randn(plan.groups[n].size, generator=g).abs() * task_grad
           for n in names}
    every = log_every or max(iters // 50, 1)
    curve = []
    integral = 0.0
    for it in range(iters):
        psi_t = scheduled_target(it / iters, target, h.target_schedule,
                                 h.target_ramp)
        bins = ms.binaries()
        psi = cm.psi(bins)
        loss = b * scale * hw_loss(psi, psi_t, form, h.tolerance, integral)
        if task_grad or task_noise:
            # d L_task / d B: negative (keeping helps), zero where pruned.
            for n in names:
                t = -imp[n] + task_noise * torch.randn(
                    plan.groups[n].size, generator=g)
                loss = loss + (bins[n] * (t * bins[n].detach())).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ms.clamp_()
        if it / iters >= h.target_ramp:
            with torch.no_grad():
                integral = integrate_lag(
                    integral, float(cm.psi(ms.binaries())), psi_t,
                    h.tolerance, h.lag_integral)
        if it % every == 0 or it == iters - 1:
            curve.append(dict(iter=it, psi=round(float(psi.detach()), 4),
                              psi_target=round(psi_t, 4)))
    with torch.no_grad():
        psi_end = float(cm.psi(ms.binaries()))
    rep = project_to_target(ms, cm, target, h.tolerance,
                            channel_multiple=q)
    total = sum(gr.size for gr in plan.groups.values())
    moved = rep.dropped + rep.restored
    return dict(iters=iters, b=b, hw_scale=scale, psi_at_freeze=psi_end,
                psi_after_projection=rep.psi_after,
                projection_moved=moved, channels=total,
                projection_moved_pct=100.0 * moved / total,
                within_003=abs(psi_end - target) <= 0.03, curve=curve)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--iters-per-epoch', type=int, default=44)
    p.add_argument('--iters', type=int, default=None,
                   help='window length in iterations (default: from the '
                   "hook's window and --iters-per-epoch)")
    p.add_argument('--shape', type=int, nargs=2, default=None,
                   metavar=('H', 'W'))
    p.add_argument('--task-grad', type=float, default=0.0)
    p.add_argument('--task-noise', type=float, default=0.0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE',
                   help='override hook arguments, e.g. target_schedule='
                   "'constant' normalize=False")
    p.add_argument('--out', default=None)
    args = p.parse_args()
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    hook = hook_cfg(cfg)
    for kv in args.set:
        k, v = kv.split('=', 1)
        hook[k] = eval(v, {}, {})  # noqa: S307  (a CLI of literals)
    shape = args.shape or hook.get('input_shape')
    if shape is None:
        raise SystemExit(f'{args.config}: the hook has no input_shape; '
                         'pass --shape H W')
    iters = args.iters
    if iters is None:
        end = hook.get('prune_end') or cfg.train_cfg.max_epochs
        n = end - hook.get('prune_start', 0)
        iters = n * args.iters_per_epoch if hook.get('by_epoch', True) else n
    mopt = cfg.optim_wrapper.get('mask_optimizer', {}) or {}
    lr = mopt.get('lr', 0.01)
    decay = mopt.get('weight_decay',
                     cfg.optim_wrapper.get('mask_weight_decay', 5e-4))
    plan = trace_config(cfg, shape)
    res = simulate(plan, hook, lr, decay, iters, args.task_grad,
                   args.task_noise, args.seed)
    res.update(config=args.config, shape=list(shape),
               task_grad=args.task_grad, task_noise=args.task_noise,
               overrides=args.set)
    text = json.dumps(res)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)
    print(f'SUMMARY {osp.basename(args.config)}: psi {res["psi_at_freeze"]:.3f}'
          f' at the freeze (target {hook["psi_target"]}), projection moves '
          f'{res["projection_moved_pct"]:.1f} % of {res["channels"]} channels')


if __name__ == '__main__':
    main()
