"""Build a `LatencyTable` for an mmdet config (the tool's logic).

``tools/analysis_tools/build_latency_table.py`` is the CLI. The model is the
config's, traced exactly as `InTrainPruningHook` traces it (its ``skip``,
``roi_budget`` and ``input_shape``), in eval mode with random weights
(latency does not depend on them), on one device, in this process.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from mmengine.config import Config

from mmprune.core import LatencyTable, measure_latency_table

from .export import (
    _build_model,
    example_batch,
    load_config,
    prune_hook_args,
    prune_hook_cfg,
)
from .hooks.trace import trace_detector
from .raw import raw_forward


def build_latency_table(
        config: Union[str, Config], *, device: str = 'cpu',
        threads: Optional[int] = None,
        shape: Optional[Sequence[int]] = None, step: Optional[int] = None,
        max_points: int = 32, warmup: int = 2, runs: int = 5,
        progress: Optional[Callable[[int, int], None]] = None
) -> LatencyTable:
    """Trace ``config``'s model and time its layers (`measure_latency_table`).

    Args:
        config: a config path or `Config`.
        device: ``'cpu'`` or ``'cuda[:i]'``.
        threads: torch CPU threads (default: torch's current number).
        shape: ``(H, W)`` of the trace input; default the hook's
            ``input_shape``, else the config's first test batch.
        step: width grid step; default the hook's ``channel_multiple``, and
            8 when that is 1.
        max_points / warmup / runs / progress: as `measure_latency_table`.
    """
    cfg = load_config(config)
    if threads is not None:
        torch.set_num_threads(int(threads))
    args = prune_hook_args(cfg)
    hook = prune_hook_cfg(cfg) or {}
    if step is None:
        step = int(hook.get('channel_multiple', 1))
        step = 8 if step == 1 else step
    model = _build_model(cfg).eval().to(device)
    shape = shape if shape is not None else args['input_shape']
    x, samples = example_batch(cfg, model, shape)
    x = x.to(device)
    plan = trace_detector(model, x, samples, args['skip'], args['roi_budget'])
    table = measure_latency_table(
        model, plan, lambda: raw_forward(model, x, samples),
        input_shape=tuple(x.shape), device=device, step=step,
        max_points=max_points, warmup=warmup, runs=runs, progress=progress)
    table.meta['config'] = str(cfg.filename)
    return table


__all__ = ['build_latency_table']
