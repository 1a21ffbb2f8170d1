"""Measure a per-layer latency table for ``cost='latency'`` pruning.

    python tools/analysis_tools/build_latency_table.py CONFIG \
        --device cpu --threads 1 --out work_dirs/lut/model.json

Traces the config's model as the pruning hook does, times every prunable
layer kind at the widths it can take (multiples of the hook's
``channel_multiple``, thinned to ``--max-points`` per axis) on the device at
hand, in this process, with warm-up and medians, and writes the table with
the device, torch version, thread count and input shape. Point the hook's
``latency_table`` at the file; it is reused as long as the model, input
shape and machine stay the same.
"""
import argparse
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))


def parse_args(argv=None):
    """Parse the builder's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('--out', required=True, help='where to write the JSON')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda[:i]'")
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (default: torch\'s current)')
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                   help="trace input (default: the hook's input_shape, "
                   'else the first test batch)')
    p.add_argument('--step', type=int, default=None,
                   help="width step (default: the hook's channel_multiple, "
                   '8 when that is 1)')
    p.add_argument('--max-points', type=int, default=32,
                   help='most widths timed per layer axis')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--runs', type=int, default=5)
    return p.parse_args(argv)


def main(argv=None):
    """Build, write and summarise the table; returns it."""
    args = parse_args(argv)
    from mmengine.utils import ProgressBar

    import mmprune  # noqa: F401
    from mmprune.engine.latency import build_latency_table

    bar = {}

    def progress(done, total):
        if 'bar' not in bar:
            bar['bar'] = ProgressBar(total)
        bar['bar'].update()

    t0 = time.perf_counter()
    table = build_latency_table(
        args.config, device=args.device, threads=args.threads,
        shape=args.shape, step=args.step, max_points=args.max_points,
        warmup=args.warmup, runs=args.runs, progress=progress)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    table.save(args.out)
    m = table.meta
    print(f"\nlatency table: {m['entries']} layer shapes, {m['timings']} "
          f"timed widths in {time.perf_counter() - t0:.0f} s; dense "
          f"{m['dense_ms']:.1f} ms measured, layers {m['layers_ms']:.1f} ms, "
          f"other {m['other_ms']:.1f} ms ({m['device']}, "
          f"{m['threads']} thread(s), input {m['input_shape']}) -> {args.out}")
    return table


if __name__ == '__main__':
    main()
