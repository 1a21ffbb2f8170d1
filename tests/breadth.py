"""One detector family through the whole path: train with the snippet, export,
compare (shared by tests/test_engine/test_breadth.py and benchmarks/breadth.py).

`run_family` trains mmdet's shipped config for 4 iterations on a generated
COCO set with the README's snippet (target 0.5, window [1, 3), so the
freeze lands inside the run), exports the last checkpoint with
``tools/export_pruned.py``'s function, and measures, independently of the
cost model, what the small model computes and costs.
"""
import copy
import os.path as osp
from collections import Counter

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.runner.checkpoint import load_checkpoint

from mmprune.core import lowest_psi
from mmprune.engine.export import export_pruned, flatten_outputs
from mmprune.engine.hooks import MASKS_ATTR, InTrainPruningHook
from tests.dropin import add_pruning, make_tiny_coco, tiny_config
from tests.test_core.nets import count_macs

#: Input side (px) per family; others use 64. FCOS-style heads put
#: GroupNorm on a 1x1 P7 level, which mmdet refuses below 128 px.
SIZES = {'fcos_hrnetv2p_w18': 128, 'fcos_r50': 128}


def _kept_reasons(plan, top=3):
    """The most common reasons channels are kept, e.g. 'reach a model
    output' x 12 (the layer names stripped)."""
    words = Counter()
    for _, why in plan.kept:
        words[why.split(': ', 1)[-1].split(' in ')[0][:70]] += 1
    return [f'{w} (x{n})' for w, n in words.most_common(top)]


def run_family(name, root, iters=4):
    """Train, export and compare family ``name`` under folder ``root``.

    Returns a dict: the hook's psi, the export's per-output diffs, the max
    abs difference of every raw output on a fresh random input (exported
    vs. masked model), the exported model's MACs counted by forward hooks
    (``macs_counted``) against psi times the dense count
    (``macs_expected``), the plan's group / tied-group counts, the prunable
    share (1 - lowest reachable psi), and the kept and unsupported
    summaries. Also ``small`` and ``masked`` (the two models).
    """
    size = SIZES.get(name, 64)
    data = osp.join(root, 'coco')
    make_tiny_coco(data, size=size)
    cfg = add_pruning(tiny_config(name, data, osp.join(root, 'work'),
                                  size=size, max_iters=iters),
                      prune_start=1, prune_end=iters - 1,
                      input_shape=(size, size))
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks
                if isinstance(h, InTrainPruningHook))
    masked = runner.model.eval()
    plan, cm = hook.plan, hook.cost_model
    ms = getattr(masked, MASKS_ATTR)
    low, _ = lowest_psi(ms, cm)
    ckpt = osp.join(root, 'work', f'iter_{iters}.pth')
    res = export_pruned(cfg, ckpt, osp.join(root, 'out'), log=None)

    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    small = MODELS.build(Config.fromfile(res.config).model)
    load_checkpoint(small, res.checkpoint, map_location='cpu', strict=True,
                    logger='silent')
    small.eval()
    x0, samples = hook.trace_inputs
    x = torch.rand(x0.shape, generator=torch.Generator().manual_seed(5))
    x = x * 2 - 1
    with torch.no_grad():
        ref = flatten_outputs(masked._forward(x, copy.deepcopy(samples)))
        got = flatten_outputs(small._forward(x, copy.deepcopy(samples)))
    diffs = [dict(shape=list(r.shape),
                  max_abs=float((g - r).abs().max()) if r.numel() else 0.0,
                  scale=float(r.abs().max()) if r.numel() else 0.0)
             for g, r in zip(got, ref)]
    fwd = lambda net, inp: net._forward(inp, copy.deepcopy(samples))  # noqa
    counted = count_macs(small, x0, fwd)
    psi = hook.current_psi()
    return dict(
        name=name, size=size, psi=psi, psi_target=0.5,
        groups=len(plan.groups),
        tied_groups=sum(1 for g in plan.groups.values() if g.tie),
        channels=sum(g.size for g in plan.groups.values()),
        prunable_share=round(1 - low, 4),
        export_psi=res.psi, export_output_diffs=res.output_diffs,
        fresh_input_diffs=diffs,
        same_shapes=[list(t.shape) for t in got] == [d['shape']
                                                     for d in diffs],
        macs_counted=counted, macs_expected=psi * cm.dense_macs,
        params_ratio=res.params_after / res.params_before,
        kept=_kept_reasons(plan), kept_layers=len(plan.kept),
        kept_all=[f'{n}: {why}' for n, why in plan.kept],
        unsupported_all=[f'{n}: {why}' for n, why in plan.unsupported],
        unsupported=sorted({why.split(' is not')[0].split(': ', 1)[-1]
                            for _, why in plan.unsupported}),
        small=small, masked=masked)
