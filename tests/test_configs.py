"""Every config in configs/ loads and builds its model, hooks and optim
wrapper, and the pruning configs keep room to fine-tune after the freeze."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

import mmprune  # noqa: F401  (registers our modules)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                         recursive=True)
    if '_base_' not in p)


def _prune_hook(cfg):
    return next((h for h in cfg.get('custom_hooks', [])
                 if h['type'] == 'InTrainPruningHook'), None)


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.relpath(p, ROOT) for p in CONFIGS])
def test_config_builds(path):
    cfg = Config.fromfile(path)
    if cfg.get('default_scope') == 'mmpretrain':
        pytest.importorskip('mmpretrain')
        from mmpretrain.registry import HOOKS, MODELS
        from mmpretrain.utils import register_all_modules

        import mmprune.cls  # noqa: F401
    else:
        from mmdet.registry import HOOKS, MODELS
        from mmdet.utils import register_all_modules
    register_all_modules()
    model = MODELS.build(cfg.model)
    for h in cfg.get('custom_hooks', []):
        HOOKS.build(dict(h))
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    if _prune_hook(cfg) is not None:
        assert hasattr(wrapper, 'attach_pruning'), path


def _lr_at(cfg, epoch):
    """Relative lr at an epoch under the config's MultiStepLR."""
    lr = 1.0
    scheds = cfg.param_scheduler
    for s in (scheds if isinstance(scheds, list) else [scheds]):
        if s['type'] == 'MultiStepLR':
            lr *= s['gamma'] ** sum(epoch >= m for m in s['milestones'])
    return lr


def _is_seed(path):
    """Configs that reproduce the seed exactly (its late freeze included)."""
    return '_seed' in path or path.endswith(('_b10.py', '_b50.py'))


@pytest.mark.parametrize('path', [
    p for p in CONFIGS if 'prune' in osp.basename(p) and not _is_seed(p)])
def test_freeze_leaves_a_fifth_of_the_schedule_at_a_useful_lr(path):
    cfg = Config.fromfile(path)
    hook = _prune_hook(cfg)
    end = cfg.train_cfg.max_epochs
    freeze = hook.get('prune_end') or end
    # "Useful": at least 1/10 of the base lr (one step of a 10x schedule).
    useful = [e for e in range(freeze, end) if _lr_at(cfg, e) >= 0.1 - 1e-12]
    assert len(useful) >= 0.2 * end, (path, freeze, len(useful))
