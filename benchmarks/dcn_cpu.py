"""CPU time of one DCNv2 layer: mmcv's kernel vs ``DCNv2Torch`` vs a conv.

For each shape (C_in, C_out, H, W; 3x3, stride 1, padding 1, one deformation
group, as every 3x3 layer of CenterNet's DLA-Up), times the forward of

* ``mmcv``: ``mmcv.ops.ModulatedDeformConv2dPack`` (mmcv's CPU kernel),
* ``torch``: ``mmprune``'s ``DCNv2Torch`` with the same weights,
* ``conv``: ``nn.Conv2d`` of the same shape (the floor: no sampling),

each including its offset conv except the plain one, under
``torch.inference_mode`` at batch 1, in turns after a warm-up. The offset
convs get random weights so offsets are fractional (with mmcv's zero init
every sample would land on a pixel). Also checks that the two DCNs agree::

    OMP_NUM_THREADS=1 python benchmarks/dcn_cpu.py
    python benchmarks/dcn_cpu.py --shape 32 32 96 320 --runs 3

The default shapes are DLA-Up's at 384 x 1280: the dense stride-4 node
(64 -> 64 at 96 x 320), a pruned one (32 -> 32), and the dense stride-8 and
stride-16 nodes. Prints one JSON object and a one-line summary per shape.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import platform
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

SHAPES = [(64, 64, 96, 320), (32, 32, 96, 320), (128, 128, 48, 160),
          (256, 256, 24, 80)]


def parse_args(argv=None):
    """Parse the benchmark flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--shape', type=int, nargs=4, action='append',
                   metavar=('C_IN', 'C_OUT', 'H', 'W'),
                   help='layer shape (repeatable; default: DLA-Up shapes)')
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', help='also write the JSON here')
    return p.parse_args(argv)


def bench_shape(c_in: int, c_out: int, h: int, w: int, args) -> dict:
    """Latencies (ms) of the three layers at one shape, and their max diff."""
    from mmcv.ops import ModulatedDeformConv2dPack

    from mmprune.engine.report import time_interleaved
    from mmprune.models.layers import ModulatedDeformConv2dPackTorch

    torch.manual_seed(args.seed)
    ref = ModulatedDeformConv2dPack(c_in, c_out, 3, padding=1).eval()
    with torch.no_grad():
        ref.conv_offset.weight.normal_(0, 0.02)
    ours = ModulatedDeformConv2dPackTorch(c_in, c_out, 3, padding=1).eval()
    ours.load_state_dict(ref.state_dict())
    conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1).eval()
    x = torch.randn(1, c_in, h, w)
    with torch.inference_mode():
        diff = float((ours(x) - ref(x)).abs().max())
    lat = time_interleaved([lambda: ref(x), lambda: ours(x), lambda: conv(x)],
                           args.runs, args.warmup)
    ms = {k: t['median_ms'] for k, t in zip(('mmcv', 'torch', 'conv'), lat)}
    return dict(shape=[c_in, c_out, h, w], median_ms=ms,
                speedup_vs_mmcv=round(ms['mmcv'] / ms['torch'], 2),
                torch_over_conv=round(ms['torch'] / ms['conv'], 2),
                max_abs_diff=diff)


def main(argv=None):
    """Time every shape; print and return the JSON-able results."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import mmprune  # noqa: F401
    out = dict(benchmark='dcn_cpu', threads=args.threads, runs=args.runs,
               warmup=args.warmup, torch=torch.__version__,
               cpu=platform.processor() or platform.machine(),
               timed='forward incl. offset conv (not for conv), batch 1, '
               'torch.inference_mode, in turns; median',
               results=[bench_shape(*s, args)
                        for s in (args.shape or SHAPES)])
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump(out, f, indent=1)
    for r in out['results']:
        m = r['median_ms']
        print(f"dcn_cpu {r['shape']}: mmcv {m['mmcv']:.1f} ms, DCNv2Torch "
              f"{m['torch']:.1f} ms ({r['speedup_vs_mmcv']}x faster), "
              f"conv {m['conv']:.1f} ms; max diff {r['max_abs_diff']:.1e}")
    return out


if __name__ == '__main__':
    main()
