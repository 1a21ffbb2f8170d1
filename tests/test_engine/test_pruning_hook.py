"""InTrainPruningHook + PruneOptimWrapper: logging, checkpoints and resume."""
import json
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmprune.engine.hooks import MASKS_ATTR, InTrainPruningHook
from tests.dropin import make_tiny_coco, tiny_config
from tests.test_engine.test_pruning_dropin import MaskRecorder, add_pruning


def _run(data_root, work_dir, max_iters, resume_from=None, **hook):
    cfg = tiny_config('retinanet_r50_fpn', data_root, work_dir,
                      max_iters=max_iters)
    cfg = add_pruning(cfg, **hook)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=3,
                                        by_epoch=False)
    if resume_from is not None:
        cfg.resume, cfg.load_from = True, resume_from
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('coco'))
    make_tiny_coco(root, num_images=4)
    return root


@pytest.mark.slow
def test_resume_restores_masks_optimizer_and_schedule(coco, tmp_path):
    window = dict(prune_start=1, prune_end=5, b=300)
    straight = _run(coco, str(tmp_path / 'a'), 6, **window)
    ckpt = str(tmp_path / 'a' / 'iter_3.pth')
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    # The masks are part of the model's state dict; the mask optimizer is
    # inside the optim wrapper's state; the schedule is in meta.
    assert any(k.startswith(MASKS_ATTR + '.') for k in state['state_dict'])
    assert 'mask_optimizer' in state['optimizer']
    assert state['meta']['prune']['started'] is True
    assert state['meta']['prune']['frozen'] is False

    resumed = _run(coco, str(tmp_path / 'b'), 6, resume_from=ckpt, **window)
    assert resumed.iter == 6
    a = getattr(straight.model, MASKS_ATTR).state_dict()
    b = getattr(resumed.model, MASKS_ATTR).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key
    assert getattr(resumed.model, MASKS_ATTR).frozen
    hook = next(h for h in resumed.hooks
                if isinstance(h, InTrainPruningHook))
    assert hook.current_psi() == pytest.approx(
        next(h for h in straight.hooks
             if isinstance(h, InTrainPruningHook)).current_psi())


@pytest.mark.slow
def test_psi_and_loss_hw_logged_and_saved(coco, tmp_path):
    runner = _run(coco, str(tmp_path / 'w'), 6, prune_start=1, prune_end=4,
                  b=300)
    scalars = []
    vis = [osp.join(runner.log_dir, 'vis_data', 'scalars.json')]
    with open(vis[0]) as f:
        scalars = [json.loads(line) for line in f]
    train = [s for s in scalars if 'psi' in s]
    assert [s['iter'] for s in train] == [1, 2, 3, 4, 5, 6]
    assert all('loss_hw' in s and 'pruned_channels' in s for s in train)
    assert train[0]['psi'] == 1.0 and train[0]['loss_hw'] == 0.0
    assert train[-1]['psi'] <= 0.5
    final = torch.load(osp.join(str(tmp_path / 'w'), 'iter_6.pth'),
                       map_location='cpu', weights_only=True)
    assert final['meta']['prune']['frozen'] is True
    assert final['meta']['prune']['psi'] == pytest.approx(train[-1]['psi'])


def test_hook_rejects_bad_settings_and_plain_wrapper(coco, tmp_path):
    with pytest.raises(ValueError, match='psi_target must lie in'):
        InTrainPruningHook(psi_target=1.5)
    with pytest.raises(ValueError, match='prune_start < prune_end'):
        InTrainPruningHook(psi_target=0.5, prune_start=5, prune_end=5)
    with pytest.raises(ValueError, match="b must be a number >= 0 or 'auto'"):
        InTrainPruningHook(psi_target=0.5, b='big')
    with pytest.raises(ValueError, match='loss_form must be one of'):
        InTrainPruningHook(psi_target=0.5, loss_form='cube')
    for key, bad in (('threshold', 0.0), ('threshold', 1.5),
                     ('mask_init', -0.1), ('mask_init', 2.0)):
        with pytest.raises(ValueError, match=rf'InTrainPruningHook\.{key} '
                           r'must lie in \(0, 1\]'):
            InTrainPruningHook(psi_target=0.5, **{key: bad})
    with pytest.raises(ValueError, match='tolerance must be >= 0'):
        InTrainPruningHook(psi_target=0.5, tolerance=-0.01)
    for shape in ((64,), (0, 64), (64.5, 64), (-1, 8)):
        with pytest.raises(ValueError, match='input_shape must be'):
            InTrainPruningHook(psi_target=0.5, input_shape=shape)
    with pytest.raises(ValueError, match='lag_integral must lie in'):
        InTrainPruningHook(psi_target=0.5, lag_integral=1.5)
    cfg = tiny_config('retinanet_r50_fpn', coco, str(tmp_path / 'w'),
                      max_iters=1)
    cfg.custom_hooks = [dict(type='InTrainPruningHook', psi_target=0.5)]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(TypeError, match="optim_wrapper.type='PruneOptimWr"):
        runner.train()


def test_no_mask_update_outside_window_and_hinge_is_zero_below_target(
        coco, tmp_path):
    from mmprune.core import hw_loss
    assert float(hw_loss(torch.tensor(0.4), 0.5, 'hinge')) == 0.0
    assert float(hw_loss(torch.tensor(0.5), 0.5, 'hinge')) == 0.0
    cfg = tiny_config('retinanet_r50_fpn', coco, str(tmp_path / 'w'),
                      max_iters=4)
    cfg = add_pruning(cfg, prune_start=3, prune_end=4)
    runner = Runner.from_cfg(cfg)
    recorder = MaskRecorder()
    runner.register_hook(recorder)
    runner.train()
    # Before the window opened the masks were never attached, and they are
    # exactly their initial value (the task loss reaches them through the
    # estimator, and the wrapper drops that gradient).
    for it, attached, binaries in recorder.history[:3]:
        assert not attached, it
    masks = getattr(runner.model, MASKS_ATTR)
    assert recorder.history[3][1]
    assert masks.frozen


def test_skip_matching_nothing_and_nothing_prunable_are_refused(coco,
                                                                tmp_path):
    cfg = tiny_config('retinanet_r50_fpn', coco, str(tmp_path / 'a'),
                      max_iters=1)
    cfg = add_pruning(cfg, skip=['backbone.layer9*'])
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r"InTrainPruningHook\.skip: .*"
                       r"'backbone\.layer9\*' matches no module"):
        runner.train()
    cfg = tiny_config('retinanet_r50_fpn', coco, str(tmp_path / 'b'),
                      max_iters=1)
    cfg = add_pruning(cfg, skip=['backbone*', 'neck*', 'bbox_head*'])
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match='has no prunable channel group'):
        runner.train()
    assert runner.iter == 0


class BatchRecorder(Hook):
    """Records (image path, flipped) of every training sample, in order."""

    def __init__(self):
        self.seen = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.seen.append([(s.img_path, s.flip)
                          for s in data_batch['data_samples']])


def _seen_batches(coco, work_dir, sampler, prune):
    cfg = tiny_config('retinanet_r50_fpn', coco, work_dir, max_iters=3)
    cfg.model.backbone.depth = 18
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    cfg.train_dataloader.sampler = dict(type=sampler, shuffle=True, seed=0)
    cfg.train_dataloader.dataset.pipeline.insert(
        -1, dict(type='RandomFlip', prob=0.5))
    if prune:
        cfg = add_pruning(cfg, prune_start=1, prune_end=3)
    runner = Runner.from_cfg(cfg)
    recorder = BatchRecorder()
    runner.register_hook(recorder)
    runner.train()
    assert runner.iter == 3
    return recorder.seen


@pytest.mark.parametrize('sampler', ['InfiniteSampler', 'DefaultSampler'])
def test_hook_set_up_leaves_data_order_and_augmentation_alone(
        coco, tmp_path, sampler):
    # The hook traces the model at one sample before training. Taking it
    # with next(iter(loader)) closed an InfiniteSampler's index stream
    # (training stopped at once with StopIteration) and drew the flips of
    # that peek from the RNG, so every later flip differed from the same
    # run without the hook.
    plain = _seen_batches(coco, str(tmp_path / 'plain'), sampler, False)
    pruned = _seen_batches(coco, str(tmp_path / 'pruned'), sampler, True)
    assert pruned == plain
    flips = [f for batch in plain for _, f in batch]
    assert True in flips and False in flips  # the flips are really random
