"""Latency cost: how well the table predicts, and what pruning for it buys.

One run, one process, on CenterNet DLA-34 (the flagship's model) at
384 x 1280, batch 1, CPU::

    OMP_NUM_THREADS=1 python benchmarks/latency_cost.py --repeats 3 \
        --runs 9 --masks work_dirs/demo/epoch_12.pth \
        --table work_dirs/lut/centernet_dla34_384x1280_cpu1.json
    python benchmarks/latency_cost.py --quick        # seconds, for tests

1. The table: loaded from ``--table``, or built there first (as
   ``tools/analysis_tools/build_latency_table.py`` does) when the file does
   not exist, with the build time reported.
2. **Predictor accuracy.** Masks at psi 0.7, 0.5 and 0.3 (MACs), projected
   with the hook's ``project_to_target`` and ``--channel-multiple`` from
   three starts: cost-ordered (every channel kept with ``M ~ U(0.5, 1)``,
   dropped least ``M`` per unit of cost first), uniform (``M ~ U(0, 1)``:
   half of every layer starts pruned) and, with ``--masks CKPT``, a pruning
   run's trained masks. Each is physically pruned (the export's surgery) and
   its raw forward timed; the table's prediction is compared with the
   measurement (goal within 10 %): in ms (``error_pct``, which includes any
   drift of the machine since the table was built) and as a fraction of
   the dense model, both measured in this run (``ratio_error_pct``, what
   psi and the projection use).
3. **Payoff.** From the cost-ordered start, prune to each ``--targets``
   value with the MACs cost and with the latency cost (the same projection,
   the latency table's marginals), and measure both exports' speed-ups
   over the dense model. Goals: 1.9x at a latency target of 0.5, 3.0x at
   0.3.

Every model is timed in turns in one loop (`time_interleaved`),
``--repeats`` times. Prints one JSON object and a summary.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

GOALS = {0.5: 1.9, 0.3: 3.0}
ERROR_GOAL = 10.0  # percent


def parse_args(argv=None):
    """Parse the benchmark flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', default='configs/centernet_dla34_kitti.py')
    p.add_argument('--table', help='latency table (built here if missing)')
    p.add_argument('--shape', type=int, nargs=2, default=[384, 1280],
                   metavar=('H', 'W'))
    p.add_argument('--psi', type=float, nargs='+', default=[0.7, 0.5, 0.3],
                   help='MACs targets of the predictor check')
    p.add_argument('--targets', type=float, nargs='+', default=[0.5, 0.3],
                   help='targets of the MACs vs latency comparison')
    p.add_argument('--masks', metavar='CKPT',
                   help="also check a pruning run's trained masks")
    p.add_argument('--channel-multiple', type=int, default=16)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--repeats', type=int, default=1,
                   help='time every model this many passes; speed-ups are '
                   'the mean (and std) over passes, latencies the median')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--quick', action='store_true',
                   help='64 x 128 input, a coarse table, 1 run: checks the '
                   'path, not the numbers')
    p.add_argument('--out', help='also write the JSON here')
    args = p.parse_args(argv)
    if args.quick:
        args.shape, args.runs, args.warmup = [64, 128], 1, 0
        args.psi, args.targets = [0.5], [0.5]
    return args


def _masks(plan, cm, psi, kind, args):
    from latency import projected_masks
    a = copy.copy(args)
    a.mask_values = {'trained': 'kept'}.get(kind, kind)
    a.masks = args.masks if kind == 'trained' else None
    return projected_masks(plan, cm, psi, a)


def main(argv=None):
    """Run both parts; print and return the JSON-able results."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmprune  # noqa: F401
    from mmprune.core import CostModel, LatencyTable
    from mmprune.core.surgery import prune_model
    from mmprune.engine.export import _build_model, example_batch
    from mmprune.engine.hooks.trace import trace_detector
    from mmprune.engine.latency import build_latency_table
    from mmprune.engine.raw import raw_forward
    from mmprune.engine.report import time_interleaved

    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dense = _build_model(cfg).eval()
    x, samples = example_batch(cfg, dense, args.shape)
    plan = trace_detector(dense, x, samples)
    build_s = None
    if args.table and osp.exists(args.table):
        table = LatencyTable.load(args.table)
    else:
        t0 = time.perf_counter()
        table = build_latency_table(
            args.config, threads=args.threads, shape=args.shape,
            step=args.channel_multiple, max_points=4 if args.quick else 32,
            warmup=args.warmup, runs=max(args.runs, 3))
        build_s = round(time.perf_counter() - t0, 1)
        if args.table:
            os.makedirs(osp.dirname(osp.abspath(args.table)), exist_ok=True)
            table.save(args.table)
    cm_mac = CostModel(plan, 'macs')
    cm_lat = CostModel(plan, 'latency', latency_table=table)
    kinds = ['kept', 'uniform'] + (['trained'] if args.masks else [])
    arms = []  # (part, cost, kind, target, binaries)
    for kind in kinds:
        for psi in args.psi:
            arms.append(('predictor', 'macs', kind, psi,
                         _masks(plan, cm_mac, psi, kind, args)[0]))
    for psi in args.targets:
        for cost, cm in (('macs', cm_mac), ('latency', cm_lat)):
            arms.append(('payoff', cost, 'kept', psi,
                         _masks(plan, cm, psi, 'kept', args)[0]))
    models = [dense]
    for *_, b in arms:
        small = copy.deepcopy(dense)
        prune_model(small, plan, b)
        models.append(small)
    fns = [lambda m=m: raw_forward(m, x, samples) for m in models]
    passes = [[t['median_ms'] for t in time_interleaved(fns, args.runs,
                                                         args.warmup)]
              for _ in range(args.repeats)]
    med = [statistics.median(p[i] for p in passes)
           for i in range(len(models))]
    dense_ms = med[0]
    pred_dense = float(cm_lat.dense)
    rows = [dict(part='dense', measured_ms=dense_ms, predicted_ms=pred_dense,
                 error_pct=round(100 * (pred_dense / dense_ms - 1), 2))]
    for i, (part, cost, kind, psi, b) in enumerate(arms, 1):
        pred = float(cm_lat.latency(b))
        meas = med[i]
        goal = GOALS.get(round(psi, 3)) if part == 'payoff' else None
        ups = [p[0] / p[i] for p in passes]
        speedup = statistics.mean(ups)
        rows.append(dict(
            part=part, cost=cost, masks=kind, target=psi,
            psi_macs=round(float(cm_mac.psi(b)), 4),
            psi_latency=round(float(cm_lat.psi(b)), 4),
            predicted_ms=round(pred, 2), measured_ms=meas,
            error_pct=round(100 * (pred / meas - 1), 2),
            ratio_error_pct=round(
                100 * ((pred / pred_dense) / (meas / dense_ms) - 1), 2),
            speedup=round(speedup, 3),
            speedup_std=round(statistics.stdev(ups), 3) if len(ups) > 1
            else 0.0,
            speedups=[round(u, 3) for u in ups],
            predicted_speedup=round(pred_dense / pred, 3),
            goal=goal if cost == 'latency' else None,
            goal_met=(speedup >= goal) if goal and cost == 'latency'
            else None))
    # Arms that ended on the same masks were timed twice: their spread is
    # this run's timing noise, the floor under any predictor error.
    repeats = []
    for i in range(len(arms)):
        for j in range(i + 1, len(arms)):
            if all(torch.equal(arms[i][4][k], arms[j][4][k])
                   for k in arms[i][4]):
                a, b = rows[i + 1]['measured_ms'], rows[j + 1]['measured_ms']
                repeats.append(round(100 * abs(a - b) / min(a, b), 2))
    errs = [abs(r['error_pct']) for r in rows]
    ratio_errs = [abs(r['ratio_error_pct']) for r in rows[1:]]
    out = dict(
        benchmark='latency_cost', config=args.config, quick=args.quick,
        input_shape=list(x.shape), batch=1, threads=args.threads,
        runs=args.runs, warmup=args.warmup, repeats=args.repeats,
        channel_multiple=args.channel_multiple, torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
        table=dict(path=args.table, built_here_s=build_s, **{
            k: table.meta.get(k) for k in ('device', 'threads', 'input_shape',
                                           'dense_ms', 'other_ms', 'entries',
                                           'timings', 'step')}),
        table_foreign=table.foreign(
            dict(device='cpu', threads=args.threads), tuple(x.shape)),
        max_abs_error_pct=max(errs), error_goal_pct=ERROR_GOAL,
        error_goal_met=max(errs) <= ERROR_GOAL,
        max_abs_ratio_error_pct=max(ratio_errs),
        same_model_timed_twice_diff_pct=repeats,
        ratio_error_goal_met=max(ratio_errs) <= ERROR_GOAL,
        results=rows)
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump(out, f, indent=1)
    print(f"latency_cost: predictor max |error| {out['max_abs_error_pct']:.1f}"
          f" % in ms, {out['max_abs_ratio_error_pct']:.1f} % in latency "
          f'relative to the dense model, over {len(rows)} models (goal '
          f'{ERROR_GOAL:.0f} %); dense {dense_ms:.0f} ms measured, '
          f'{pred_dense:.0f} ms in the table; the same model timed twice '
          f'differs by {repeats} %')
    for r in rows:
        if r['part'] == 'payoff':
            goal = '' if r['goal'] is None else (
                f"; goal {r['goal']}x {'met' if r['goal_met'] else 'MISSED'}")
            print(f"  {r['cost']:>7} cost, target {r['target']}: "
                  f"{r['speedup']:.2f}x +- {r['speedup_std']:.2f} measured "
                  f"({r['measured_ms']:.0f} ms, "
                  f"MACs psi {r['psi_macs']:.3f}, latency psi "
                  f"{r['psi_latency']:.3f}){goal}")
    return out


if __name__ == '__main__':
    main()
