"""Train-step time with in-train pruning vs the same model unpruned (CPU).

Goal (issue): at most 1.10x time per iteration for CenterNet DLA-34; the
seed's own figure is 32/23 = 1.39x. Both runs use the same model, batch and
optimizer; the pruned run has the masks attached, psi computed and the prune
loss and mask optimizer active every step (the most expensive phase).

    python benchmarks/prune_overhead.py [--config CFG] [--iters 10]

Prints one JSON object and a one-line summary.
"""
import argparse
import json
import os.path as osp
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmdet.registry import MODELS, OPTIM_WRAPPERS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

import mmprune  # noqa: E402,F401
from mmprune.core import CostModel, install_masks  # noqa: E402
from mmprune.engine.hooks import trace_detector  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _batch(n, h, w):
    torch.manual_seed(0)
    inputs = torch.rand(n, 3, h, w) * 255
    samples = []
    for _ in range(n):
        s = DetDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w),
                                        batch_input_shape=(h, w)))
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([[10., 20., 80., 60.], [100., 30., 160.,
                                                        90.]]),
            labels=torch.tensor([0, 1]))
        samples.append(s)
    return inputs, samples


def _time(model, wrapper, inputs, samples, iters, warmup=2):
    data = model.data_preprocessor(dict(inputs=list(inputs),
                                        data_samples=samples), True)
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        losses = model.loss(data['inputs'], data['data_samples'])
        loss, _ = model.parse_losses(losses)
        wrapper.update_params(loss)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', default=osp.join(
        ROOT, 'configs', 'demo', 'centernet_dla34_kitti_demo.py'))
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--shape', type=int, nargs=2, default=(128, 416))
    p.add_argument('--iters', type=int, default=8)
    args = p.parse_args()
    register_all_modules()
    cfg = Config.fromfile(args.config)
    h, w = args.shape
    inputs, samples = _batch(args.batch, h, w)

    torch.manual_seed(0)
    dense = MODELS.build(cfg.model)
    dense.init_weights()
    dense.train()
    plain = OPTIM_WRAPPERS.build(dict(
        type='OptimWrapper',
        optimizer=torch.optim.Adam(dense.parameters(), lr=1e-4)))
    t_dense = _time(dense, plain, inputs, samples, args.iters)

    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    pre = model.data_preprocessor(dict(inputs=list(inputs[:1]),
                                       data_samples=samples[:1]), False)
    plan = trace_detector(model, pre['inputs'], pre['data_samples'])
    cost = CostModel(plan)
    masks = install_masks(model, plan)
    wrapper = OPTIM_WRAPPERS.build(dict(
        type='PruneOptimWrapper',
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-4)))
    wrapper.attach_pruning(masks, cost, psi_target=0.5, b=10.0,
                           loss_form='square')
    wrapper.prune_active = True
    t_prune = _time(model, wrapper, inputs, samples, args.iters)

    ratio = t_prune / t_dense
    out = dict(benchmark='prune_overhead', config=osp.relpath(args.config,
                                                              ROOT),
               batch=args.batch, shape=[h, w], iters=args.iters,
               groups=len(plan.groups), seconds_dense=round(t_dense, 4),
               seconds_pruning=round(t_prune, 4), ratio=round(ratio, 3),
               goal_ratio=1.10, meets_goal=ratio <= 1.10,
               seed_ratio=round(32 / 23, 3),
               threads=torch.get_num_threads())
    print(json.dumps(out))
    print(f'prune_overhead: {ratio:.3f}x per train step '
          f'({t_prune:.3f}s vs {t_dense:.3f}s; goal <= 1.10x, seed 1.39x)')


if __name__ == '__main__':
    main()
