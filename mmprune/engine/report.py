"""Measure and report pruned detectors: MAC counts, per-layer tables, plots.

* `complexity` counts parameters and MACs of any detector with
  ``mmengine.analysis.FlopAnalyzer`` (an independent counter: a jit trace of
  the real forward, not the cost model). mmengine does not know mmcv's
  deformable convs; we add handles for them, so a DCN is never silently
  counted as free.
* `collect_report` gathers, for a training work dir or an export dir, the
  per-layer kept channels and MACs (`mmprune.core.CostModel.breakdown`) and
  the ``psi`` / ``loss_hw`` curves logged by the pruning hook;
  `write_report` writes them as Markdown, JSON and PNG plots.
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from .raw import flatten_outputs, raw_forward

#: FlopAnalyzer operators that are multiply-accumulates of conv, transposed
#: conv, deformable conv and linear layers: the cost model's scope.
MAC_OPERATORS = ('conv', 'linear', 'addmm', 'matmul', 'bmm', 'einsum',
                 'deform_conv')


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _deform_conv_handle(weight_index: int):
    """FlopAnalyzer handle of mmcv's (Modulated)DeformConv2dFunction.

    Counted like a conv: ``out.numel * (C_in / groups) * kh * kw``, with the
    weight ``[C_out, C_in/groups, kh, kw]`` at input ``weight_index``. The
    bilinear sampling is not counted (as a conv's im2col is not).
    """
    from mmengine.analysis.jit_handles import get_shape

    def handle(inputs, outputs) -> int:
        w = get_shape(inputs[weight_index])
        out = get_shape(outputs[0])
        if w is None or out is None or len(w) != 4:
            raise RuntimeError(
                'complexity: unexpected deformable conv signature; cannot '
                'count its MACs')
        return _numel(out) * _numel(w[1:])

    return handle


DEFORM_OPS = {
    'prim::PythonOp.ModulatedDeformConv2dFunction': _deform_conv_handle(3),
    'prim::PythonOp.DeformConv2dFunction': _deform_conv_handle(2),
}


class _RawForward(nn.Module):
    """``det._forward(x, samples)`` as a one-tensor-input module (for jit)."""

    def __init__(self, det: nn.Module, samples: list):
        super().__init__()
        self.det = det
        self.samples = samples

    def forward(self, x: Tensor):
        return tuple(flatten_outputs(raw_forward(self.det, x, self.samples)))


def complexity(model: nn.Module, inputs: Tensor, samples: list
               ) -> Dict[str, Any]:
    """Parameters and MACs of a detector's raw forward, by mmengine.analysis.

    Args:
        model: an mmdet detector in eval mode.
        inputs: ``[1, 3, H, W]`` preprocessed input.
        samples: its data samples (two-stage detectors need the metainfo).

    Returns:
        ``params`` (all parameters), ``macs`` (conv / deconv / DCN / linear
        multiply-accumulates per image: the cost model's scope),
        ``flops_total`` (everything FlopAnalyzer counts, norms and upsampling
        included, in its unit: one multiply-add = 1), ``by_operator`` and
        ``unsupported`` (operator -> calls FlopAnalyzer could not count).
    """
    from mmengine.analysis import FlopAnalyzer, parameter_count
    wrapper = _RawForward(model, samples).eval()
    fa = FlopAnalyzer(wrapper, (inputs, ))
    for op, handle in DEFORM_OPS.items():
        fa.set_op_handle(op, handle)
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    fa.tracer_warnings('none')
    with torch.no_grad():
        by_op = Counter(fa.by_operator())
    for op in DEFORM_OPS:
        # by_operator() names an op without its 'prim::' namespace.
        short = op.split('::', 1)[-1]
        if short in by_op:
            by_op['deform_conv'] += by_op.pop(short)
    unsupported = dict(fa.unsupported_ops())
    return dict(
        params=int(parameter_count(model)['']),
        macs=int(sum(by_op.get(k, 0) for k in MAC_OPERATORS)),
        flops_total=int(sum(by_op.values())),
        by_operator=dict(by_op),
        unsupported=unsupported,
        input_shape=list(inputs.shape))


# ------------------------------------------------------------------ report
@dataclass
class PruneReport:
    """Everything `write_report` writes.

    Attributes:
        source: the folder the report is about.
        kind: ``'export'`` or ``'work_dir'``.
        psi: MACs kept / dense MACs.
        input_shape: shape at which MACs are counted.
        layers: per-layer rows (`mmprune.core.LayerCost` as dicts).
        scalars: logged training records with ``psi`` or ``loss_hw``
            (``iter``, ``psi``, ``loss_hw``).
    """

    source: str
    kind: str
    psi: float
    input_shape: List[int]
    layers: List[Dict[str, Any]]
    scalars: List[Dict[str, float]] = field(default_factory=list)

    def totals(self) -> Dict[str, int]:
        """Sums of MACs and parameters over the layers."""
        keys = ('macs_dense', 'macs', 'params_dense', 'params')
        return {k: int(sum(r[k] for r in self.layers)) for k in keys}


def read_scalars(work_dir: str) -> List[Dict[str, float]]:
    """``psi`` / ``loss_hw`` records from ``work_dir/*/vis_data/scalars.json``.

    mmengine writes one JSON object per line; runs (timestamp folders) are
    read in name order, so a resumed run follows its first part. Lines
    without ``psi`` and ``loss_hw`` (validation lines) are skipped.
    """
    out = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                          'scalars.json'))):
        with open(path, encoding='utf-8') as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f'{path}:{lineno}: not a JSON object '
                                     f'({e.msg})') from None
                if 'psi' not in rec and 'loss_hw' not in rec:
                    continue
                step = rec.get('iter', rec.get('step'))
                if step is None:
                    raise ValueError(f'{path}:{lineno}: record with psi / '
                                     'loss_hw has no "iter" or "step"')
                out.append(dict(iter=int(step),
                                psi=rec.get('psi'),
                                psi_target=rec.get('psi_target'),
                                loss_hw=rec.get('loss_hw')))
    return out


def _find_work_dir_files(work_dir: str):
    cfgs = sorted(glob.glob(osp.join(work_dir, '*.py')))
    if len(cfgs) != 1:
        raise FileNotFoundError(
            f'{work_dir}: expected the one config file the runner dumps '
            f'there (*.py), found {[osp.basename(c) for c in cfgs]}')
    last = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last, encoding='utf-8') as f:
            ckpt = f.read().strip()
        if not osp.isabs(ckpt) and not osp.isfile(ckpt):
            ckpt = osp.join(work_dir, osp.basename(ckpt))
    else:
        pths = sorted(glob.glob(osp.join(work_dir, '*.pth')),
                      key=osp.getmtime)
        if not pths:
            raise FileNotFoundError(
                f'{work_dir}: no last_checkpoint file and no *.pth')
        ckpt = pths[-1]
    if not osp.isfile(ckpt):
        raise FileNotFoundError(f'{work_dir}/last_checkpoint names {ckpt}, '
                                'which does not exist')
    return cfgs[0], ckpt


def collect_report(path: str, input_shape: Optional[Sequence[int]] = None,
                   cfg_options: Optional[dict] = None) -> PruneReport:
    """Gather a `PruneReport` for an export dir or a training work dir.

    An export dir (with ``channels.json``) holds the per-layer table the
    export computed; its curves are read from the work dir of the source
    checkpoint when that still exists. A work dir's config and latest
    checkpoint (``last_checkpoint``) are loaded, traced and costed.
    """
    from mmprune.core import CostModel
    from mmprune.core.surgery import ChannelSpec
    if not osp.isdir(path):
        raise FileNotFoundError(f'{path} is not a folder')
    spec_path = osp.join(path, 'channels.json')
    if osp.isfile(spec_path):
        spec = ChannelSpec.load(spec_path)
        layers = spec.meta.get('layers')
        if not layers:
            raise ValueError(f'{spec_path}: meta.layers is missing; '
                             're-export with this version of mmprune')
        src = spec.meta.get('source_checkpoint')
        src_dir = osp.dirname(src) if src else None
        scalars = read_scalars(src_dir) if src_dir and osp.isdir(
            src_dir) else []
        return PruneReport(path, 'export', float(spec.meta['psi']),
                           list(spec.meta.get('input_shape', [])), layers,
                           scalars)
    from .export import load_masked_detector
    cfg, ckpt = _find_work_dir_files(path)
    md = load_masked_detector(cfg, ckpt, cfg_options=cfg_options,
                              input_shape=input_shape)
    cm = CostModel(md.plan)
    b = md.binaries()
    rows = [asdict(r) for r in cm.breakdown(b)]
    return PruneReport(path, 'work_dir', float(cm.psi(b)),
                       list(md.inputs.shape), rows, read_scalars(path))


def markdown_table(rep: PruneReport) -> str:
    """The per-layer table with totals, as Markdown."""
    lines = [
        f'# Pruning report: {rep.source}', '',
        f'psi = {rep.psi:.4f} (MACs kept / dense) at input '
        f'{rep.input_shape}', '',
        '| layer | type | in kept/total | out kept/total | MACs dense (M) '
        '| MACs (M) | MACs kept |',
        '|---|---|---|---|---:|---:|---:|'
    ]
    for r in rep.layers:
        ratio = r['macs'] / r['macs_dense'] if r['macs_dense'] else 1.0
        lines.append(
            f"| {r['name']} | {r['type']} | {r['in_kept']}/{r['in_total']} "
            f"| {r['out_kept']}/{r['out_total']} | "
            f"{r['macs_dense'] / 1e6:.3f} | {r['macs'] / 1e6:.3f} | "
            f'{100 * ratio:.1f} % |')
    t = rep.totals()
    lines.append(
        f"| **total** | | | | {t['macs_dense'] / 1e6:.3f} | "
        f"{t['macs'] / 1e6:.3f} | "
        f"{100 * t['macs'] / max(t['macs_dense'], 1):.1f} % |")
    lines += ['', f"conv / linear parameters: {t['params_dense']} -> "
              f"{t['params']}"]
    return '\n'.join(lines) + '\n'


def plot_kept_ratio(rep: PruneReport, path: str) -> None:
    """Bar chart: kept output-channel ratio per layer, in model order."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [r for r in rep.layers if r['out_total']]
    ratios = [r['out_kept'] / r['out_total'] for r in rows]
    fig, ax = plt.subplots(figsize=(min(4 + 0.12 * len(rows), 40), 4))
    ax.bar(range(len(rows)), ratios, color='tab:blue')
    ax.set_ylim(0, 1.05)
    ax.set_xlabel('layer (model order)')
    ax.set_ylabel('kept output channels')
    ax.set_title(f'kept ratio per layer (psi = {rep.psi:.3f})')
    step = max(1, len(rows) // 40)
    ax.set_xticks(range(0, len(rows), step))
    ax.set_xticklabels([rows[i]['name'] for i in range(0, len(rows), step)],
                       rotation=90, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(rep: PruneReport, path: str) -> None:
    """``psi`` (with the scheduled target, where logged) and ``loss_hw``
    over iterations, one panel each."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, keys in zip(axes, (('psi', 'psi_target'), ('loss_hw',))):
        for key in keys:
            pts = [(r['iter'], r[key]) for r in rep.scalars
                   if r.get(key) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1,
                        label=key, ls='-' if key != 'psi_target' else '--')
        key = keys[0]
        if len(keys) > 1:
            ax.legend()
        ax.set_xlabel('iteration')
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(rep: PruneReport, out_dir: str) -> Dict[str, str]:
    """Write ``report.md``, ``report.json``, ``kept_ratio.png`` and (when
    curves were logged) ``curves.png``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {'markdown': osp.join(out_dir, 'report.md'),
             'json': osp.join(out_dir, 'report.json'),
             'kept_ratio': osp.join(out_dir, 'kept_ratio.png')}
    with open(paths['markdown'], 'w', encoding='utf-8') as f:
        f.write(markdown_table(rep))
    with open(paths['json'], 'w', encoding='utf-8') as f:
        json.dump(dict(source=rep.source, kind=rep.kind, psi=rep.psi,
                       input_shape=rep.input_shape, totals=rep.totals(),
                       layers=rep.layers, scalars=rep.scalars), f, indent=1)
    plot_kept_ratio(rep, paths['kept_ratio'])
    if rep.scalars:
        paths['curves'] = osp.join(out_dir, 'curves.png')
        plot_curves(rep, paths['curves'])
    return paths


__all__ = ['complexity', 'MAC_OPERATORS', 'DEFORM_OPS', 'PruneReport',
           'read_scalars', 'collect_report', 'markdown_table',
           'plot_kept_ratio', 'plot_curves', 'write_report']


def _stats(times):
    """Median, mean, min and all runs of latencies in ms."""
    return dict(median_ms=round(statistics.median(times), 2),
                mean_ms=round(statistics.mean(times), 2),
                min_ms=round(min(times), 2),
                runs_ms=[round(t, 2) for t in times])


def time_interleaved(fns, runs: int, warmup: int):
    """Latencies (ms) of several callables, run in turns.

    Each round times every callable once, in a rotating order, so that load
    from other processes on a shared machine hits all of them alike
    (`mmprune.core.time_rounds`, which the latency table builder uses too).
    """
    from mmprune.core import time_rounds
    return [_stats(t) for t in time_rounds(fns, warmup, runs)]


def compare_with_export(config: str, export_dir: str, runs: int = 5,
                        warmup: int = 2) -> Dict[str, Any]:
    """Params, MACs and CPU latency: the dense detector vs its export.

    ``config`` builds the unpruned detector (random weights: latency does
    not depend on them); ``export_dir`` holds ``config.py`` + ``model.pth``
    from ``tools/export_pruned.py``. Both run ``_forward`` on the first
    batch of the export's test dataloader, batch 1, timed in turns.
    """
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    from .export import example_batch

    small_cfg = Config.fromfile(osp.join(export_dir, 'config.py'))
    dense_cfg = Config.fromfile(config)
    init_default_scope(small_cfg.get('default_scope', 'mmdet'))
    small = MODELS.build(small_cfg.model).eval()
    load_checkpoint(small, osp.join(export_dir, 'model.pth'),
                    map_location='cpu', strict=True, logger='silent')
    dense = MODELS.build(dense_cfg.model).eval()
    x, samples = example_batch(small_cfg, small)
    out = dict(input_shape=list(x.shape))
    for key, model in (('dense', dense), ('exported', small)):
        c = complexity(model, x, samples)
        out[key] = dict(params=c['params'], macs=c['macs'])
    lat = time_interleaved([lambda: raw_forward(dense, x, samples),
                            lambda: raw_forward(small, x, samples)], runs,
                           warmup)
    out['dense']['latency'] = lat[0]
    out['exported']['latency'] = lat[1]
    out['speedup'] = round(lat[0]['median_ms'] / lat[1]['median_ms'], 3)
    out['macs_ratio'] = round(out['exported']['macs'] /
                              out['dense']['macs'], 4)
    return out
