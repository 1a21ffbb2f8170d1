"""Helpers shared by the in-train vs post-train studies.

* `finetune_cfg`: the in-train run's optimizer and lr schedule from its
  freeze epoch on, without the pruning hook: what a post-train pruned model
  fine-tunes with, so that both arms train the same total epochs.
* `summarise`: mean and sample std over seeds of every numeric field.
"""
from __future__ import annotations

import copy
import statistics
from typing import Dict, List, Sequence


def finetune_cfg(prune_cfg, freeze: int):
    """Copy of ``prune_cfg`` that trains epochs ``freeze..E`` without masks.

    ``MultiStepLR`` milestones shift by ``-freeze`` (those at or before the
    freeze are applied to the starting lr); other schedulers (warm-ups,
    which end before any freeze) are dropped.
    """
    cfg = copy.deepcopy(prune_cfg)
    epochs = int(cfg.train_cfg.max_epochs)
    cfg.train_cfg.max_epochs = epochs - freeze
    cfg.train_cfg.val_interval = epochs - freeze + 1
    scheds = cfg.param_scheduler
    if isinstance(scheds, dict):
        scheds = [scheds]
    lr = cfg.optim_wrapper.optimizer.lr
    out = []
    for s in scheds:
        if s['type'] != 'MultiStepLR':
            continue
        s = copy.deepcopy(s)
        gamma = s.get('gamma', 0.1)
        lr *= gamma ** sum(m <= freeze for m in s.milestones)
        s.milestones = [m - freeze for m in s.milestones if m > freeze]
        s.pop('begin', None)
        s.end = epochs - freeze
        out.append(s)
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.param_scheduler = out
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', [])
                        if h['type'] != 'InTrainPruningHook']
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.optim_wrapper.pop('mask_optimizer', None)
    cfg.optim_wrapper.pop('mask_weight_decay', None)
    return cfg


def summarise(runs: List[dict], arms: Sequence[str]) -> Dict[str, dict]:
    """mean and sample std (n - 1) over seeds of every numeric field."""
    out = {}
    for arm in arms:
        rows = [r[arm] for r in runs if arm in r]
        if not rows:
            continue
        keys = [k for k, v in rows[0].items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]
        out[arm] = {k: dict(mean=round(statistics.fmean(r[k] for r in rows),
                                       3),
                            std=round(statistics.stdev(r[k] for r in rows)
                                      if len(rows) > 1 else 0.0, 3))
                    for k in keys}
    return out
