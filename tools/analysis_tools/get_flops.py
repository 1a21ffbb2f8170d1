"""Count parameters and MACs of a detector with mmengine.analysis.

``python tools/analysis_tools/get_flops.py CONFIG [CKPT] [--shape H W]``
works for an original config and for an exported one (``DIR/config.py``).
MACs are the multiply-accumulates of conv, transposed conv, deformable conv
and linear layers per image (the scope of mmprune's cost model), counted by
a jit trace of the detector's raw forward; the total that mmengine also
counts (norms, upsampling) is printed beside it.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    """Parse the get_flops flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config', help='config file (original or exported)')
    p.add_argument('checkpoint', nargs='?', help='optional weights (masks in'
                   ' it are ignored: export to count a pruned model)')
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                   help='input size (default: the first test batch)')
    p.add_argument('--json', help='also write the numbers to this file')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys')
    return p.parse_args(argv)


def main(argv=None):
    """Count and print; returns `mmprune.engine.report.complexity` output."""
    import torch

    import mmprune  # noqa: F401
    from mmprune.engine.export import (
        MASK_PREFIX,
        _build_model,
        example_batch,
        load_config,
        split_checkpoint,
    )
    from mmprune.engine.report import complexity
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    model = _build_model(cfg)
    note = ''
    if args.checkpoint:
        weights, masks, _ = split_checkpoint(args.checkpoint)
        model.load_state_dict(weights, strict=True)
        if masks:
            note = (f'note: {args.checkpoint} holds masks ({MASK_PREFIX}*);'
                    ' they are not applied here: these are the dense '
                    "model's numbers. Count the export for the pruned ones.")
    model.eval()
    inputs, samples = example_batch(cfg, model, args.shape)
    with torch.no_grad():
        res = complexity(model, inputs, samples)
    res['config'] = args.config
    print(f'config: {args.config}')
    print(f'input shape: {res["input_shape"]}')
    print(f'params: {res["params"] / 1e6:.3f} M')
    print(f'MACs (conv/deconv/DCN/linear): {res["macs"] / 1e9:.4f} G')
    print(f'all counted ops (mmengine FlopAnalyzer): '
          f'{res["flops_total"] / 1e9:.4f} G')
    if res['unsupported']:
        print(f'not counted (no MACs of the cost model\'s kind): '
              f'{res["unsupported"]}')
    if note:
        print(note)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == '__main__':
    main()
