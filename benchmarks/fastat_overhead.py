"""Time one FastAT train step against one clean train step.

FastAT (random-start FGSM, the seed's eps = 2/255, alpha = 2.5/255) adds one
forward and one input-gradient backward to every step, so its ideal cost is
2x a clean step; the goal is <= 2.1x. The model is the CPU demo's CenterNet
DLA-34 (``configs/demo/centernet_dla34_kitti_demo.py``: plain-conv neck),
the batch is the demo's (8 images of 128 x 416 from the real KITTI train
pipeline on generated frames), the optimizer is the config's. Batches are
loaded before timing; clean and FastAT steps alternate so that machine load
hits both alike, and the medians are compared. Both wall time and process
CPU time are reported: on a shared machine the CPU time is the steadier
measure of the work, and the goal is judged on it.

    OMP_NUM_THREADS=1 python benchmarks/fastat_overhead.py

Prints one JSON object and a one-line summary.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import statistics
import tempfile
import time

import torch
from mmdet.registry import DATASETS, MODELS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

import mmprune  # noqa: F401
import mmprune.engine.adversarial  # noqa: F401
from mmprune.datasets import make_synthetic_kitti
from mmprune.engine.adversarial import FastAT, adversarial_train_step

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'demo', 'centernet_dla34_kitti_demo.py')


def _batches(cfg, data_root, batch_size, count):
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = data_root
    ds_cfg.split = 'trainval'
    dataset = DATASETS.build(ds_cfg)
    if len(dataset) < batch_size:
        raise ValueError(f'{data_root} has {len(dataset)} images; need at '
                         f'least --batch-size={batch_size}')
    out = []
    for b in range(count):
        idx = [(b * batch_size + i) % len(dataset) for i in range(batch_size)]
        out.append(pseudo_collate([dataset[i] for i in idx]))
    return out


def main() -> None:
    """Parse arguments, time both steps, print JSON and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEMO)
    parser.add_argument('--data-root', default=None,
                        help='KITTI-layout data; default: generate 16 '
                        'frames of --height x --width in a temp folder')
    parser.add_argument('--height', type=int, default=128)
    parser.add_argument('--width', type=int, default=416)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--steps', type=int, default=4,
                        help='timed steps of each kind (after 1 warm-up)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    init_default_scope('mmdet')
    cfg = Config.fromfile(args.config)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        data_root = args.data_root
        if data_root is None:
            data_root = tmp
            make_synthetic_kitti(tmp, num_images=16,
                                 img_size=(args.height, args.width),
                                 seed=args.seed)
        batches = _batches(cfg, data_root, args.batch_size, args.steps + 1)
    model = MODELS.build(cfg.model).train()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    attack = FastAT(eps=2 / 255, alpha=2.5 / 255)

    clean_t, adv_t, clean_cpu, adv_cpu = [], [], [], []
    for i, batch in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train_step(batch, wrapper)
        t1, c1 = time.perf_counter(), time.process_time()
        adversarial_train_step(model, batch, wrapper, attack)
        t2, c2 = time.perf_counter(), time.process_time()
        if i > 0:  # the first pair warms up allocators and caches
            clean_t.append(t1 - t0)
            adv_t.append(t2 - t1)
            clean_cpu.append(c1 - c0)
            adv_cpu.append(c2 - c1)
    clean, adv = statistics.median(clean_t), statistics.median(adv_t)
    cpu_clean = statistics.median(clean_cpu)
    cpu_adv = statistics.median(adv_cpu)
    ratio = cpu_adv / cpu_clean
    inputs = batches[0]['inputs'][0].shape
    report = {
        'config': osp.relpath(args.config, ROOT),
        'batch_size': args.batch_size,
        'input_hw': [int(inputs[1]), int(inputs[2])],
        'threads': torch.get_num_threads(),
        'steps': args.steps,
        'clean_step_wall_s': round(clean, 3),
        'fastat_step_wall_s': round(adv, 3),
        'wall_ratio': round(adv / clean, 3),
        'clean_step_cpu_s': round(cpu_clean, 3),
        'fastat_step_cpu_s': round(cpu_adv, 3),
        'clean_runs_cpu_s': [round(t, 3) for t in clean_cpu],
        'fastat_runs_cpu_s': [round(t, 3) for t in adv_cpu],
        'ratio': round(ratio, 3),
        'goal_ratio': 2.1,
        'meets_goal': ratio <= 2.1,
    }
    print(json.dumps(report, indent=2))
    print(f'FastAT step {cpu_adv:.2f} s vs clean {cpu_clean:.2f} s CPU = '
          f'{ratio:.2f}x (wall {adv / clean:.2f}x; goal <= 2.1x, ideal 2x; '
          f'batch {args.batch_size} at {inputs[1]}x{inputs[2]}, '
          f'{torch.get_num_threads()} threads)')


if __name__ == '__main__':
    main()
