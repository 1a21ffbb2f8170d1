"""Hooks for the subprocess tests: every rank's masks, and a crash.

Imported by the tests' configs (``custom_imports``). ``MaskProbeHook``: each
rank writes ``work_dir/probe_rank{r}.pt`` at the end of training.
``KillAtIterHook``: SIGKILL mid-run, for the fault-injection test.
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

    def _row(self, runner):
        hook = self._prune_hook(runner)
        ms = hook.maskset
        return dict(
            iter=runner.iter, psi=hook.current_psi(),
            binaries={k: v.detach().clone()
                      for k, v in ms.binaries().items()},
            masks={k: v.detach().clone()
                   for k, v in ms.continuous().items()})

    def before_train(self, runner):
        self.start = self._row(runner)  # after any resume

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.rows.append(self._row(runner))

    def after_train(self, runner):
        hook = self._prune_hook(runner)
        torch.save(dict(rows=self.rows, start=self.start,
                        dense=float(hook.cost_model.dense),
                        shape=list(hook.trace_inputs[0].shape),
                        frozen=bool(hook.maskset.frozen)),
                   osp.join(runner.work_dir, f'probe_rank{get_rank()}.pt'))


@HOOKS.register_module()
class KillAtIterHook(Hook):
    """SIGKILL this process after iteration ``at`` (1-based), when the
    environment variable ``MMPRUNE_KILL`` is set: a crash with no clean-up,
    for the fault-injection test."""

    def __init__(self, at: int):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        import os
        import signal
        if os.environ.get('MMPRUNE_KILL') and runner.iter + 1 == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
