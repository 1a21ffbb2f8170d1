"""Export a pruned detector (and its dense source) to ONNX; check and time.

``python tools/deploy/export_onnx.py EXPORT_DIR --out model.onnx`` reads
``EXPORT_DIR/config.py`` and ``model.pth`` (written by
``tools/export_pruned.py``), exports the raw network (backbone, neck, head
outputs; `mmprune.engine.deploy`), checks ONNX Runtime's outputs against
PyTorch's (max abs diff <= ``--atol`` at each output's scale) and, with
``--dense``, does the same for the dense source model named in the export's
meta, then prints file sizes and ONNX Runtime CPU latency side by side.
Prints one JSON object.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('export_dir', help='folder from tools/export_pruned.py')
    p.add_argument('--out', required=True, help='ONNX file to write')
    p.add_argument('--dense', action='store_true',
                   help='also export the dense source model (next to --out,'
                   ' as *_dense.onnx) and compare')
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                   help="input size (default: the export's input_shape)")
    p.add_argument('--atol', type=float, default=1e-4)
    p.add_argument('--runs', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=1)
    return p.parse_args(argv)


def _build(config, checkpoint=None):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner.checkpoint import load_checkpoint
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=False,
                        logger='silent')
    return model.eval()


def _one(name, model, shape, path, args):
    from mmprune.engine.deploy import compare_onnx, export_onnx, onnx_latency_ms
    ref = export_onnx(model, shape, path)
    diffs = compare_onnx(path, ref, shape, args.threads)
    bad = [d for d in diffs if d['max_abs'] > args.atol * max(1.0,
                                                               d['scale'])]
    if bad:
        raise SystemExit(f'{name}: ONNX Runtime differs from PyTorch: {bad}')
    return dict(onnx=path, size_mb=round(osp.getsize(path) / 2**20, 3),
                max_abs_diff=max(d['max_abs'] for d in diffs),
                ort_ms=round(onnx_latency_ms(path, shape, args.runs,
                                             args.warmup, args.threads), 2),
                params=sum(p.numel() for p in model.parameters()))


def main(argv=None):
    args = parse_args(argv)
    import torch

    import mmprune  # noqa: F401  (registers PrunedModel and our layers)
    config = osp.join(args.export_dir, 'config.py')
    weights = osp.join(args.export_dir, 'model.pth')
    for f in (config, weights):
        if not osp.isfile(f):
            raise SystemExit(f'{args.export_dir}: {osp.basename(f)} missing;'
                             ' expected a folder from tools/export_pruned.py')
    meta = torch.load(weights, map_location='cpu', weights_only=True).get(
        'meta', {}).get('mmprune_export', {})
    # input_shape is [1, 3, H, W] in the export's meta.
    shape = args.shape or (meta.get('input_shape') or [None])[-2:]
    shape = None if None in shape else [int(v) for v in shape]
    if not shape:
        raise SystemExit(f'{weights}: no meta input_shape; pass --shape H W')
    torch.set_num_threads(args.threads)
    report = dict(shape=list(shape), threads=args.threads,
                  pruned=_one('pruned', _build(config, weights), shape,
                              args.out, args))
    if args.dense:
        src = meta.get('source_config')
        if not src or not osp.isfile(src):
            raise SystemExit(f'--dense: the export names source config '
                             f'{src!r}, which does not exist')
        ckpt = meta.get('source_checkpoint')
        dense = _build(src, ckpt if ckpt and osp.isfile(ckpt) else None)
        root, ext = osp.splitext(args.out)
        report['dense'] = _one('dense', dense, shape, root + '_dense' + ext,
                               args)
        d, p = report['dense'], report['pruned']
        report['size_ratio'] = round(p['size_mb'] / d['size_mb'], 3)
        report['speedup'] = round(d['ort_ms'] / p['ort_ms'], 3)
    print(json.dumps(report, indent=1))
    if args.dense:
        print(f"SUMMARY ONNX: {report['dense']['size_mb']} MB -> "
              f"{report['pruned']['size_mb']} MB; ONNX Runtime "
              f"{report['dense']['ort_ms']} ms -> {report['pruned']['ort_ms']}"
              f" ms ({report['speedup']}x, {args.threads} thread(s))")
    return report


if __name__ == '__main__':
    main()
