"""CPU latency of the unpruned detector vs its physically pruned export.

For each neck setting and each ``psi`` target: build the config's detector,
trace it at the test shape, make masks, project them onto the target with
the hook's ``project_to_target`` (and ``--channel-multiple``, default 16 as
the flagship prune configs), remove the pruned channels (the export's
surgery) and time the raw forward (``model._forward``: backbone, neck and
head convs; the top-k decoding is the same for both) at batch 1 after a
warm-up, dense and pruned in turns::

    OMP_NUM_THREADS=1 python benchmarks/latency.py   # DLA-34, 384 x 1280
    python benchmarks/latency.py --psi 0.5 --neck plain --runs 3 --shape 128 416
    python benchmarks/latency.py --masks work_dirs/demo/epoch_12.pth

The masks are untrained by default (the weights never matter for latency):
seeded random values, all above the threshold (``--mask-values kept``), so
the projection drops channels least ``M`` per unit of cost first, the order
in which the HW loss (whose gradient on a mask is its channel's marginal
cost) pushes them over; ``--mask-values uniform`` starts with a random half
of every layer pruned instead. ``--masks CKPT`` starts from a pruning run's
trained masks (the groups do not depend on the input size or on DCN vs
plain neck, so the CPU demo's checkpoint fits the flagship config).

Neck settings (``--neck``, several allowed): ``config`` as the config builds
it (CenterNet DLA-34: DCNv2 as ``DCNv2Torch``, mmcv's layer with a torch CPU
forward), ``dcn-mmcv`` (the same layers on mmcv's CPU kernel, which does not
shrink with the channels), ``plain`` (``use_dcn=False``). Default: config and
plain.
Goals (CenterNet DLA-34): speedup >= 1.6x at psi 0.5, >= 2.5x at psi 0.3.
Prints one JSON object and a one-line summary per setting.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import os.path as osp
import platform
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

GOALS = {0.5: 1.6, 0.3: 2.5}


def parse_args(argv=None):
    """Parse the benchmark flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', default='configs/centernet_dla34_kitti.py')
    p.add_argument('--psi', type=float, nargs='+', default=[0.5, 0.3])
    p.add_argument('--shape', type=int, nargs=2, default=[384, 1280],
                   metavar=('H', 'W'))
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads (default 1: a quiet, comparable '
                   'number on a shared machine)')
    p.add_argument('--neck', choices=sorted(NECKS), nargs='+',
                   default=['config', 'plain'],
                   help='neck settings to time (default: config plain)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--mask-values', choices=sorted(MASK_VALUES),
                   default='kept',
                   help="random mask values before the projection: 'kept' "
                   'U(0.5, 1) (default: all start kept, as with mask_init '
                   '1.0, and the projection drops channels least M per unit '
                   "of cost first, the order the HW loss's gradient "
                   "favours) or 'uniform' U(0, 1) (about half the channels "
                   'of every layer start pruned at random)')
    p.add_argument('--masks', metavar='CKPT',
                   help='start from the masks of a pruning checkpoint '
                   '(e.g. work_dirs/demo/epoch_12.pth) instead of random '
                   'values; groups must match the traced config')
    p.add_argument('--channel-multiple', type=int, default=16,
                   help='round kept channels per group to this multiple '
                   '(the hook\'s channel_multiple; default 16, as the '
                   'flagship prune configs)')
    p.add_argument('--out', help='also write the JSON here')
    return p.parse_args(argv)


NECKS = {
    'config': {},  # as the config builds it
    'dcn-mmcv': dict(use_dcn=True, dcn_cfg=dict(type='DCNv2')),
    'plain': dict(use_dcn=False),
}

MASK_VALUES = {
    'uniform': (0.0, 1.0),  # about half the channels start pruned
    'kept': (0.5, 1.0),  # all start kept; the projection drops by M / cost
}


@functools.lru_cache(maxsize=None)
def checkpoint_masks(path: str) -> dict:
    """The ``prune_masks.*`` state of a pruning checkpoint (read once)."""
    from mmprune.engine.export import split_checkpoint
    return split_checkpoint(path)[1]


def start_masks(plan, args):
    """The `MaskSet` the projection starts from: a pruning checkpoint's
    masks (``--masks``), or seeded random mask values (`MASK_VALUES`)."""
    from mmprune.core import MaskSet
    ms = MaskSet(plan)
    if args.masks:
        from mmprune.engine.export import mask_mismatches
        masks = checkpoint_masks(args.masks)
        missing, extra, sizes = mask_mismatches(ms, masks)
        if missing or extra or sizes:
            raise ValueError(
                f'--masks {args.masks}: its masks do not match the channel '
                f'groups traced from {args.config} (a checkpoint of a pruning '
                f'run of this model family is expected): groups without a '
                f'mask {missing}, unknown {extra}, size mismatch {sizes}')
        ms.load_state_dict(masks)
        return ms
    lo, hi = MASK_VALUES[args.mask_values]
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name in ms.group_names:
            m = ms.mask(name).mask
            m.copy_(lo + (hi - lo) * torch.rand(m.shape, generator=g))
    return ms


def projected_masks(plan, cost_model, psi: float, args):
    """Frozen binaries at ``psi``: `start_masks` (threshold 0.5, or the
    checkpoint's binaries) projected onto the target with the flagship's
    ``project_to_target`` and ``--channel-multiple``."""
    from mmprune.core import project_to_target
    ms = start_masks(plan, args)
    rep = project_to_target(ms, cost_model, psi, tol=0.01,
                            channel_multiple=args.channel_multiple)
    return {k: v.detach().clone() for k, v in ms.binaries().items()}, rep


def bench_setting(cfg_path: str, neck: str, args) -> dict:
    """Dense vs pruned latency for one neck setting (a key of `NECKS`)."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmprune.core import CostModel, is_deform_conv_pack
    from mmprune.core.surgery import prune_model
    from mmprune.engine.export import example_batch
    from mmprune.engine.hooks.in_train_pruning_hook import trace_detector
    from mmprune.engine.raw import raw_forward
    from mmprune.engine.report import time_interleaved

    cfg = Config.fromfile(cfg_path)
    cfg.model.neck.update(NECKS[neck])
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dense = MODELS.build(cfg.model).eval()
    x, samples = example_batch(cfg, dense, args.shape)
    plan = trace_detector(dense, x, samples)
    cm = CostModel(plan)
    n_params = sum(p.numel() for p in dense.parameters())

    def run(model):
        return lambda: raw_forward(model, x, samples)

    models, pruned = [dense], []
    for psi in args.psi:
        b, rep = projected_masks(plan, cm, psi, args)
        small = copy.deepcopy(dense)
        prune_model(small, plan, b)
        models.append(small)
        pruned.append(dict(
            psi_target=psi, psi=float(cm.psi(b)),
            params=sum(p.numel() for p in small.parameters()),
            macs=int(round(float(cm.macs(b)))),
            projection=dict(psi_before=round(rep.psi_before, 4),
                            dropped=rep.dropped, restored=rep.restored)))
    lat = time_interleaved([run(m) for m in models], args.runs, args.warmup)
    for p, t in zip(pruned, lat[1:]):
        p['latency'] = t
        p['speedup'] = round(lat[0]['median_ms'] / t['median_ms'], 3)
        p['speedup_min'] = round(lat[0]['min_ms'] / t['min_ms'], 3)
        goal = GOALS.get(round(p['psi_target'], 3))
        p['goal'] = goal
        p['goal_met'] = None if goal is None else p['speedup'] >= goal
    dcn = [type(m).__name__ for m in dense.modules() if is_deform_conv_pack(m)]
    return dict(neck=neck, use_dcn=bool(dcn),
                dcn_layer=dcn[0] if dcn else None,
                params_dense=n_params, macs_dense=int(cm.dense_macs),
                dense=lat[0], pruned=pruned)


def main(argv=None):
    """Run every setting; print and return the JSON-able results."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import mmprune  # noqa: F401
    out = dict(
        benchmark='latency', config=args.config, input_shape=[1, 3] +
        list(args.shape), batch=1, threads=args.threads, runs=args.runs,
        warmup=args.warmup, channel_multiple=args.channel_multiple,
        torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
        masks=(f'trained: the masks of {args.masks}' if args.masks else
               'untrained: seeded random mask values M ~ U'
               f'{MASK_VALUES[args.mask_values]} (--mask-values '
               f'{args.mask_values})') + ', projected onto psi_target with '
        'mmprune.core.project_to_target (tol 0.01)',
        timed='model._forward (raw head outputs), torch.inference_mode; '
        'models timed in turns; speedup = dense median / pruned median',
        results=[])
    for neck in dict.fromkeys(args.neck):
        if neck == 'plain' and any(not r['use_dcn'] for r in out['results']):
            continue  # the config has no DCN: 'plain' is what we measured
        out['results'].append(bench_setting(args.config, neck, args))
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump(out, f, indent=1)
    for r in out['results']:
        d = r['dense']['median_ms']
        parts = []
        for p in r['pruned']:
            goal = '' if p['goal'] is None else (
                f"; goal {p['goal']}x "
                f"{'met' if p['goal_met'] else 'MISSED'}")
            parts.append(
                f"psi {p['psi']:.3f}: {p['latency']['median_ms']:.0f} ms, "
                f"{p['speedup']:.2f}x (params {p['params'] / 1e6:.1f} M, "
                f"MACs {p['macs'] / 1e9:.1f} G{goal})")
        print(f"latency neck={r['neck']} ({r['dcn_layer'] or 'no DCN'}): "
              f"dense {d:.0f} ms "
              f"(params {r['params_dense'] / 1e6:.1f} M, MACs "
              f"{r['macs_dense'] / 1e9:.1f} G); " + '; '.join(parts))
    return out


if __name__ == '__main__':
    main()
