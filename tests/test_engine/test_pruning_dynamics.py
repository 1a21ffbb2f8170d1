"""The hook's dynamics on a real detector: psi reaches the target by
training, the schedule is checked up front, and what is saved is final."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

from mmprune.core import CostModel
from mmprune.engine.hooks import MASKS_ATTR, InTrainPruningHook
from tests.dropin import empty_dir, make_tiny_coco, tiny_config
from tests.test_engine.test_pruning_dropin import add_pruning


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('coco'))
    make_tiny_coco(root, num_images=4)
    return root


def _cfg(coco, work_dir, max_iters, ckpt_interval=None, **hook):
    cfg = tiny_config('retinanet_r50_fpn', coco, work_dir,
                      max_iters=max_iters)
    cfg = add_pruning(cfg, **hook)
    cfg.optim_wrapper.mask_optimizer = dict(type='SGD', lr=0.01)
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', by_epoch=False,
        interval=ckpt_interval or max_iters)
    return cfg


def _hook(runner):
    return next(h for h in runner.hooks if isinstance(h, InTrainPruningHook))


@pytest.mark.slow
def test_training_alone_reaches_the_target(coco, tmp_path):
    cfg = _cfg(coco, str(tmp_path / 'w'), 24, prune_start=2, prune_end=22,
               b='auto', enforce_target_at_freeze=False)
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = _hook(runner)
    masks = getattr(runner.model, MASKS_ATTR)
    assert masks.frozen
    # psi counted afresh from the frozen binaries, with a new cost model.
    cm = CostModel(hook.plan)
    psi = float(cm.psi({k: v.detach() for k, v in masks.binaries().items()}))
    assert abs(psi - 0.5) <= 0.05, psi


@pytest.mark.slow
def test_checkpoint_at_the_end_holds_frozen_projected_masks(coco, tmp_path):
    # prune_end=None: the window closes with training.
    cfg = _cfg(coco, str(tmp_path / 'w'), 8, prune_start=2, prune_end=None,
               b=1000)
    runner = Runner.from_cfg(cfg)
    runner.train()
    state = torch.load(osp.join(str(tmp_path / 'w'), 'iter_8.pth'),
                       map_location='cpu', weights_only=True)
    meta = state['meta']['prune']
    assert meta['frozen'] is True
    sd = state['state_dict']
    flags = [v for k, v in sd.items()
             if k.startswith(MASKS_ATTR) and k.endswith('.frozen')]
    assert flags and all(bool(f) for f in flags)
    # The saved binaries meet the target band.
    hook = _hook(runner)
    binaries = {}
    for name in hook.maskset.group_names:
        key = name.replace('.', '-') if name else '-'
        binaries[name] = sd[f'{MASKS_ATTR}.masks.{key}.frozen_binary']
    psi = float(CostModel(hook.plan).psi(binaries))
    assert 0.5 - 0.02 - 1e-9 <= psi <= 0.5 + 1e-9
    assert meta['psi'] == pytest.approx(psi)


def test_schedule_refused_before_training(coco, tmp_path):
    cfg = _cfg(coco, str(tmp_path / 'a'), 4, prune_start=1, prune_end=3,
               by_epoch=True)
    with pytest.raises(ValueError, match='by_epoch=True needs an '
                       'EpochBasedTrainLoop.*IterBasedTrainLoop'):
        Runner.from_cfg(cfg).train()
    cfg = _cfg(coco, str(tmp_path / 'b'), 4, prune_start=6, prune_end=9)
    with pytest.raises(ValueError, match=r'prune_start=6 must be below the '
                       r'end of training \(train_cfg.max_iters=4\)'):
        Runner.from_cfg(cfg).train()
    cfg = _cfg(coco, str(tmp_path / 'c'), 4, prune_start=1, prune_end=9)
    with pytest.raises(ValueError, match='prune_end=9 lies beyond'):
        Runner.from_cfg(cfg).train()


@pytest.mark.slow
def test_auto_b_chosen_logged_saved_and_restored(coco, tmp_path):
    window = dict(prune_start=1, prune_end=7, b='auto')
    cfg = _cfg(coco, str(tmp_path / 'a'), 8, ckpt_interval=3, **window)
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = _hook(runner)
    # b = 0.3 / (2 * lr * s * sum_c g_c^2), s = 1 / mean g, with each
    # group's marginal g measured as the psi its first channel saves (psi
    # is linear in one group's channels at the dense model; channels of a
    # group that feed different slices differ slightly, hence rel=1e-4).
    cm = CostModel(hook.plan)
    ones = cm.ones()
    g = []
    for name, grp in hook.plan.groups.items():
        off = dict(ones)
        off[name] = ones[name].clone()
        off[name][0] = 0.0
        g += [1.0 - float(cm.psi(off))] * grp.size
    g = torch.tensor(g, dtype=torch.float64)
    g = g[g > 0]
    s = 1.0 / float(g.mean())
    expect = 0.3 / (2 * 0.01 * s * float((g * g).sum()))
    assert hook.b_value == pytest.approx(expect, rel=1e-4)
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        assert f'with b={hook.b_value:g}' in f.read()
    ckpt = osp.join(str(tmp_path / 'a'), 'iter_3.pth')
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    chosen = hook.b_value
    assert state['meta']['prune']['b'] == chosen
    # Resumed with another mask lr, the run keeps the b it started with.
    cfg = _cfg(coco, str(tmp_path / 'b'), 8, **window)
    cfg.optim_wrapper.mask_optimizer = dict(type='SGD', lr=0.05)
    cfg.resume, cfg.load_from = True, ckpt
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    assert _hook(resumed).b_value == chosen
    assert resumed.optim_wrapper.b == chosen


@pytest.mark.slow
def test_channel_multiple_and_latency_cost_through_the_hook(coco, tmp_path):
    # One run checks two things: channel_multiple=16 keeps multiples of 16,
    # and cost='latency' prunes to a latency target from a table the tool
    # built for this config.
    from mmprune.core import LatencyTable
    from mmprune.engine.latency import build_latency_table
    cfg = _cfg(coco, str(tmp_path / 'w'), 12, prune_start=1, prune_end=10,
               b='auto', channel_multiple=16, cost='latency',
               input_shape=(64, 64),
               latency_table=str(tmp_path / 'lut.json'))
    build_latency_table(copy.deepcopy(cfg), shape=(64, 64), max_points=4,
                        warmup=0, runs=1).save(str(tmp_path / 'lut.json'))
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = _hook(runner)
    masks = getattr(runner.model, MASKS_ATTR)
    counted = 0
    binaries = {k: v.detach() for k, v in masks.binaries().items()}
    for name, b in binaries.items():
        size = hook.plan.groups[name].size
        kept = int(b.sum())
        if size >= 16 and kept < size:
            assert kept % 16 == 0, (name, kept, size)
            counted += 1
    assert counted > 0
    assert 0.5 - 0.02 - 1e-9 <= hook.current_psi() <= 0.5 + 1e-9
    # psi is the table's predicted latency ratio, recomputed afresh ...
    table = LatencyTable.load(str(tmp_path / 'lut.json'))
    lat = CostModel(hook.plan, 'latency', latency_table=table)
    assert float(lat.psi(binaries)) == pytest.approx(hook.current_psi())
    # ... and not the MACs ratio.
    macs = float(CostModel(hook.plan).psi(binaries))
    assert abs(macs - hook.current_psi()) > 1e-3
    with open(osp.join(runner.log_dir, osp.basename(runner.log_dir) +
                       '.log')) as f:
        assert 'ms predicted' in f.read()


@pytest.mark.slow
def test_integral_action_follows_the_lag_and_survives_resume(coco, tmp_path):
    window = dict(prune_start=1, prune_end=7, b='auto', lag_integral=0.1,
                  target_ramp=0.25)
    cfg = _cfg(coco, str(tmp_path / 'a'), 8, ckpt_interval=6, **window)
    runner = Runner.from_cfg(cfg)
    runner.train()
    hub = runner.message_hub
    psi = list(hub.get_scalar('train/psi').data[0])
    target = list(hub.get_scalar('train/psi_target').data[0])
    integral = list(hub.get_scalar('train/hw_integral').data[0])
    # Iterations 0..7; the window is [1, 7) and the target holds still from
    # 1 + 0.25 * 6 = 2.5 on, so iterations 3, 4, 5 and 6 integrate:
    # I <- max(0, I + 0.1 * (psi - (psi_t - 0.02 / 2))), by hand.
    assert len(integral) == 4
    expect = 0.0
    for k, it in enumerate(range(3, 7)):
        expect = max(0.0, expect + 0.1 * (psi[it] - (target[it] - 0.01)))
        assert integral[k] == pytest.approx(expect, abs=1e-9)
    # The checkpoint after iteration 5 holds the integral of that moment,
    # and a resumed run integrates on from it.
    state = torch.load(osp.join(str(tmp_path / 'a'), 'iter_6.pth'),
                       map_location='cpu', weights_only=True)
    assert state['meta']['prune']['integral'] == pytest.approx(integral[2])
    # The traced (H, W) travels in meta, so a config without test data
    # still exports at the shape psi was counted at.
    traced = [int(v) for v in _hook(runner).trace_inputs[0].shape[-2:]]
    assert state['meta']['prune']['input_shape'] == traced
    from mmprune.engine.export import load_masked_detector
    bare = copy.deepcopy(cfg)
    for key in ('test_dataloader', 'test_cfg', 'test_evaluator',
                'val_dataloader', 'val_cfg', 'val_evaluator'):
        bare[key] = None
    md = load_masked_detector(bare, osp.join(str(tmp_path / 'a'),
                                             'iter_6.pth'))
    assert list(md.inputs.shape[-2:]) == traced
    cfg = _cfg(coco, str(tmp_path / 'b'), 8, **window)
    cfg.resume = True
    cfg.load_from = osp.join(str(tmp_path / 'a'), 'iter_6.pth')
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    hub = resumed.message_hub
    psi6 = hub.get_scalar('train/psi').data[0][-2]
    t6 = hub.get_scalar('train/psi_target').data[0][-2]
    after = hub.get_scalar('train/hw_integral').data[0][-1]
    assert after == pytest.approx(
        max(0.0, integral[2] + 0.1 * (psi6 - (t6 - 0.01))), abs=1e-9)


def test_unreachable_target_is_refused_at_start(coco, tmp_path):
    import math
    import re

    from tests.macs import count_macs, make_positive, zero_pruned_rows
    cfg = _cfg(coco, str(tmp_path / 'w'), 4, prune_start=1, prune_end=3,
               psi_target=0.05, min_channels=0.5)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match='psi_target=0.05 is below the '
                       r'lowest psi') as err:
        runner.train()
    assert runner.iter == 0  # refused before any training
    msg = str(err.value)
    assert 'min_channels=0.5' in msg and 'allow_unreachable_target' in msg
    low = float(re.search(r'lowest psi ([0-9.]+)', msg).group(1))
    # The floor counted independently: each group keeps its first
    # ceil(C / 2) channels, the rest are zeroed, and the MAC counter of
    # tests/macs.py runs the model.
    hook = _hook(runner)
    bins = {}
    for name, g in hook.plan.groups.items():
        b = torch.zeros(g.size)
        b[:math.ceil(0.5 * g.size)] = 1.0
        bins[name] = b
    dense_model = copy.deepcopy(runner.model).eval()
    hook.maskset.freeze(bins)
    hook.maskset.attach(runner.model)
    masked = copy.deepcopy(runner.model).eval()
    batch, samples = hook.trace_inputs
    batch = batch.abs() + 1.0
    for m in (dense_model, masked):
        make_positive(m)
    zero_pruned_rows(masked, hook.plan, bins)
    dense = count_macs(dense_model, lambda: dense_model._forward(batch,
                                                                samples))
    floor = count_macs(masked, lambda: masked._forward(batch, samples))
    assert low == pytest.approx(floor / dense, rel=0.01)

    # allow_unreachable_target=True: a warning, and the run goes on.
    cfg = _cfg(coco, str(tmp_path / 'v'), 4, prune_start=1, prune_end=3,
               psi_target=0.05, min_channels=0.5,
               allow_unreachable_target=True)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 4
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        assert 'is below the lowest psi' in f.read()


#: Window [2, 5): iteration 2 is before it, 4 inside, 6 after the freeze.
RESUME_WINDOW = dict(prune_start=2, prune_end=5, b='auto', lag_integral=0.1,
                     target_ramp=0.5)


def _resume_cfg(coco, work):
    cfg = _cfg(coco, work, 8, ckpt_interval=2, **RESUME_WINDOW)
    cfg.optim_wrapper.mask_optimizer = dict(type='SGD', lr=0.01,
                                            momentum=0.9)
    cfg.default_hooks.checkpoint.max_keep_ckpts = -1
    return cfg


@pytest.fixture(scope='module')
def uninterrupted(coco, tmp_path_factory):
    """One 8-iteration run with checkpoints every 2 iterations."""
    work = str(tmp_path_factory.mktemp('full'))
    runner = Runner.from_cfg(_resume_cfg(coco, work))
    runner.train()
    yield work, runner
    empty_dir(work)  # ~1 GB of checkpoints


@pytest.mark.slow
@pytest.mark.parametrize('resume_at', [2, 4, 6])
def test_resume_is_exact_before_inside_and_after_the_window(
        coco, tmp_path, uninterrupted, resume_at):
    work, full = uninterrupted
    cfg = _resume_cfg(coco, str(tmp_path / 'resumed'))
    cfg.resume = True
    cfg.load_from = osp.join(work, f'iter_{resume_at}.pth')
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    a = full.model.state_dict()
    b = resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The mask optimizer's momentum buffers, and the schedule state.
    sa = full.optim_wrapper.mask_optimizer.state_dict()['state']
    sb = resumed.optim_wrapper.mask_optimizer.state_dict()['state']
    assert sa.keys() == sb.keys() and sa
    for k in sa:
        assert torch.equal(sa[k]['momentum_buffer'],
                           sb[k]['momentum_buffer'])
    ha, hb = _hook(full), _hook(resumed)
    assert ha.current_psi() == hb.current_psi() < 0.9
    assert ha.b_value == hb.b_value and ha.integral == hb.integral
    assert hb.maskset.frozen
