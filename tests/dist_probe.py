"""A hook that records every rank's masks, for the distributed test.

Imported by the test's config (``custom_imports``); each rank writes
``work_dir/probe_rank{r}.pt`` at the end of training.
"""
import os.path as osp

import torch
from mmdet.registry import HOOKS
from mmengine.dist import get_rank
from mmengine.hooks import Hook


@HOOKS.register_module()
class MaskProbeHook(Hook):
    """Per iteration: psi, the binary and the continuous masks."""

    priority = 'LOWEST'

    def __init__(self):
        self.rows = []

    def _prune_hook(self, runner):
        return next(h for h in runner.hooks
                    if type(h).__name__ == 'InTrainPruningHook')

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        hook = self._prune_hook(runner)
        ms = hook.maskset
        self.rows.append(dict(
            iter=runner.iter, psi=hook.current_psi(),
            binaries={k: v.detach().clone()
                      for k, v in ms.binaries().items()},
            masks={k: v.detach().clone()
                   for k, v in ms.continuous().items()}))

    def after_train(self, runner):
        hook = self._prune_hook(runner)
        torch.save(dict(rows=self.rows, dense=float(hook.cost_model.dense),
                        shape=list(hook.trace_inputs[0].shape),
                        frozen=bool(hook.maskset.frozen)),
                   osp.join(runner.work_dir, f'probe_rank{get_rank()}.pt'))
