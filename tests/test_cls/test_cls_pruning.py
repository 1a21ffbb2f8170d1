"""In-train pruning of ResNet-20, a classifier rather than a detector: psi
reaches the target by training alone, and the exported classifier's MACs,
counted by mmengine's FlopAnalyzer, equal psi."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mmprune  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG = osp.join(ROOT, 'configs', 'cls', 'resnet20_mnist5k_prune.py')


def _cfg(tmp_path, psi):
    cfg = Config.fromfile(CFG)
    # scikit-learn's 8 x 8 digits: 1,437 training images, 23 steps a epoch.
    for key in ('train_dataloader', 'test_dataloader', 'val_dataloader'):
        cfg[key].dataset.source = 'sklearn8x8'
        cfg[key].dataset.pipeline = [dict(type='PackClsInputs')]
    cfg.train_cfg.max_epochs = 6
    cfg.param_scheduler.milestones = [5]
    cfg.custom_hooks = [dict(
        type='InTrainPruningHook', psi_target=psi, b='auto', prune_start=0,
        prune_end=5, by_epoch=True, enforce_target_at_freeze=False)]
    cfg.work_dir = str(tmp_path)
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.logger.interval = 10
    cfg.visualizer.name = f'vis_{tmp_path.name}'
    return cfg


@pytest.mark.slow
def test_resnet20_reaches_target_by_training_and_exports(tmp_path):
    from mmprune.engine.export import export_pruned
    from mmprune.engine.report import complexity
    cfg = _cfg(tmp_path, 0.5)
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks
                if type(h).__name__ == 'InTrainPruningHook')
    # No projection: psi is what the loss reached.
    assert hook.freeze_report is None or \
        hook.freeze_report.dropped + hook.freeze_report.restored == 0
    psi = hook.current_psi()
    assert abs(psi - 0.5) <= 0.05, psi
    acc = runner.test()['accuracy/top1']
    assert acc > 50, acc  # 10 classes: chance is 10 %
    ckpt = open(osp.join(str(tmp_path), 'last_checkpoint')).read().strip()
    res = export_pruned(cfg, ckpt, str(tmp_path / 'export'), log=None)
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-3
    # The independent count: FlopAnalyzer on the dense and the small model.
    from mmdet.registry import MODELS
    dense = MODELS.build(cfg.model).eval()
    small_cfg = Config.fromfile(str(tmp_path / 'export' / 'config.py'))
    small = MODELS.build(small_cfg.model).eval()
    x = torch.zeros(1, 1, 8, 8)
    ratio = complexity(small, x, None)['macs'] / \
        complexity(dense, x, None)['macs']
    assert ratio == pytest.approx(psi, abs=1e-6)
