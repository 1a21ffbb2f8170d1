"""Params, MACs and CPU latency before and after export.

``python tools/analysis_tools/compare_export.py CONFIG EXPORT_DIR [--runs 5]``

CONFIG builds the unpruned detector; EXPORT_DIR is what
``tools/export_pruned.py`` wrote. Prints JSON and a one-line summary.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config', help='config of the unpruned detector')
    p.add_argument('export_dir', help='folder written by export_pruned.py')
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    args = p.parse_args()
    import mmprune  # noqa: F401
    from mmprune.engine.report import compare_with_export
    out = compare_with_export(args.config, args.export_dir, args.runs,
                              args.warmup)
    print(json.dumps(out))
    d, e = out['dense'], out['exported']
    print(f"before: {d['params'] / 1e6:.2f} M params, {d['macs'] / 1e9:.3f} "
          f"GMACs, {d['latency']['median_ms']:.1f} ms | after: "
          f"{e['params'] / 1e6:.2f} M params, {e['macs'] / 1e9:.3f} GMACs, "
          f"{e['latency']['median_ms']:.1f} ms | MACs x{out['macs_ratio']}, "
          f"speedup {out['speedup']:.2f}x (CPU, batch 1, "
          f"{out['input_shape'][2]}x{out['input_shape'][3]})")


if __name__ == '__main__':
    main()
