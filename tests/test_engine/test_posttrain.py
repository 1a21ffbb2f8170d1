"""Post-train Torch-Pruning baseline (engine/posttrain) on CenterNet DLA-34.

The demo model (plain-conv DLA-Up neck) has concatenations, residual adds
and depthwise transposed-conv upsamplers, so the dependency graph is really
exercised. BatchNorms get random "trained" statistics so that BN-scale
importance has something to rank. Each case prunes at 64 x 160 in a few
seconds on 2 cores.
"""
import copy
import math
import os.path as osp

import pytest
import torch
from mmcv.ops import ModulatedDeformConv2dPack
from mmdet.structures import DetDataSample
from mmengine.analysis import FlopAnalyzer
from mmengine.config import Config
from mmengine.structures import InstanceData
from torch import nn

from mmprune.engine.export import flatten_outputs
from mmprune.engine.posttrain import (
    DeformConvPruner,
    prediction_layers,
    prune_post_train,
    search_ratio,
)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'centernet_dla34_kitti_demo.py')
SHAPE = (64, 160)


def build(use_dcn=False, seed=0):
    """The demo CenterNet DLA-34 in eval mode, with "trained" BatchNorms."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    import mmprune  # noqa: F401
    cfg = Config.fromfile(DEMO)
    cfg.model.neck.use_dcn = use_dcn
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.2 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model.eval()


def sample():
    return DetDataSample(metainfo=dict(
        img_shape=SHAPE, pad_shape=SHAPE, batch_input_shape=SHAPE,
        ori_shape=SHAPE, scale_factor=(1., 1.)))


@pytest.fixture(scope='module')
def dense():
    return build()


@pytest.fixture(scope='module')
def batch():
    torch.manual_seed(1)
    return torch.rand(1, 3, *SHAPE), [sample()]


class Raw(nn.Module):
    """``det._forward(x, samples)`` flattened, for FlopAnalyzer's jit."""

    def __init__(self, det, samples):
        super().__init__()
        self.det, self.samples = det, samples

    def forward(self, x):
        return tuple(flatten_outputs(self.det._forward(x, self.samples)))


def conv_macs(model, x, samples):
    """Conv MACs of the raw forward, by mmengine's FlopAnalyzer directly."""
    fa = FlopAnalyzer(Raw(model, samples).eval(), (x, ))
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    with torch.no_grad():
        return fa.by_operator()['conv']


def out_shapes(model, x, samples):
    with torch.no_grad():
        return [t.shape for t in flatten_outputs(model._forward(x, samples))]


def widths(model):
    return {n: m.out_channels for n, m in model.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd)}


def test_prediction_layers_are_the_head_output_convs(dense, batch):
    assert prediction_layers(dense, *batch) == [
        'bbox_head.heatmap_head.2', 'bbox_head.offset_head.2',
        'bbox_head.wh_head.2']


@pytest.mark.parametrize('importance', ['l1', 'bn'])
def test_reaches_psi_target(dense, batch, importance):
    x, samples = batch
    model = copy.deepcopy(dense)
    before = out_shapes(model, x, samples)
    res = prune_post_train(model, x, samples, 0.5, importance=importance)
    assert 0.48 <= res['psi'] <= 0.5
    assert res['importance'] == importance and 0 < res['ratio'] < 1
    assert res['params'] < res['params_dense']
    # An independent count, against a fresh dense model of the same config.
    fresh = conv_macs(build(), x, samples)
    assert fresh == res['macs_dense']
    assert conv_macs(model, x, samples) / fresh == pytest.approx(
        res['psi'], abs=1e-12)
    # It still runs, its raw outputs (prediction convs) keep their shapes,
    # and real convs lost channels.
    assert out_shapes(model, x, samples) == before
    old, new = widths(dense), widths(model)
    assert any(new[n] < old[n] for n in old)
    for name in res['ignored']:
        assert new[name] == old[name]
    assert not model.training


def test_channel_multiple(dense, batch):
    x, samples = batch
    model = copy.deepcopy(dense)
    res = prune_post_train(model, x, samples, 0.5, channel_multiple=16)
    assert 0.48 <= res['psi'] <= 0.5
    old, new = widths(dense), widths(model)
    changed = [n for n in old if new[n] != old[n]]
    assert changed
    assert all(new[n] % 16 == 0 for n in changed), \
        {n: new[n] for n in changed if new[n] % 16}


def test_max_layer_ratio_is_a_per_layer_floor(dense, batch):
    x, samples = batch
    old = widths(dense)
    free = copy.deepcopy(dense)
    prune_post_train(free, x, samples, 0.5)
    cut = {n: 1 - m / old[n] for n, m in widths(free).items()}
    # Without a floor, the global ranking cuts some layer by more than 40 %.
    assert max(cut.values()) > 0.4
    model = copy.deepcopy(dense)
    res = prune_post_train(model, x, samples, 0.5, max_layer_ratio=0.4)
    assert 0.48 <= res['psi'] <= 0.5
    new = widths(model)
    # Every conv keeps at least 60 % of its width, by a hand count.
    assert all(new[n] >= math.ceil(0.6 * old[n]) for n in old), \
        {n: (new[n], old[n]) for n in old if new[n] < 0.6 * old[n]}
    assert any(new[n] < old[n] for n in old)
    with pytest.raises(ValueError, match='max_layer_ratio must be in'):
        prune_post_train(copy.deepcopy(dense), x, samples, 0.5,
                         max_layer_ratio=0.0)


def test_ignore_keeps_modules_whole(dense, batch):
    x, samples = batch
    model = copy.deepcopy(dense).train()
    res = prune_post_train(model, x, samples, 0.6, ignore=['bbox_head.*'])
    assert 0.58 <= res['psi'] <= 0.6
    assert model.training
    old, new = widths(dense), widths(model)
    head = [n for n in old if n.startswith('bbox_head.')]
    assert all(new[n] == old[n] for n in head)
    assert any(new[n] < old[n] for n in old)


def test_taylor_importance(dense, batch):
    x, samples = batch
    gt = sample()
    gt.gt_instances = InstanceData(
        bboxes=torch.tensor([[20., 10., 60., 40.], [90., 20., 150., 60.]]),
        labels=torch.tensor([0, 2]))
    model = copy.deepcopy(dense)
    res = prune_post_train(
        model, x, samples, 0.5, importance='taylor',
        loss_fn=lambda m: sum(m.loss(x, [gt]).values()))
    assert 0.48 <= res['psi'] <= 0.5
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match='loss_fn'):
        prune_post_train(copy.deepcopy(dense), x, samples, 0.5,
                         importance='taylor')


def test_dcn_neck(batch):
    """mmcv deformable convs go through `DeformConvPruner`; the pruned model
    runs both on the torch path and on mmcv's op (FlopAnalyzer's jit)."""
    x, samples = batch
    model = build(use_dcn=True)
    before = out_shapes(model, x, samples)
    res = prune_post_train(model, x, samples, 0.5)
    assert 0.48 <= res['psi'] <= 0.5
    assert out_shapes(model, x, samples) == before
    dcns = [m for m in model.modules()
            if isinstance(m, ModulatedDeformConv2dPack)]
    assert dcns and any(m.out_channels < 64 for m in dcns)
    for m in dcns:
        assert m.weight.shape[:2] == (m.out_channels, m.in_channels)
        assert m.conv_offset.in_channels == m.in_channels
        assert m.conv_offset.weight.shape[:2] == (27, m.in_channels)


def test_deform_conv_pruner_slices_like_the_dense_layer():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2dPack(6, 5, 3, padding=1).eval()
    with torch.no_grad():
        dcn.conv_offset.weight.normal_(0, 0.1)
    x = torch.rand(1, 6, 8, 8)
    x[:, [1, 4]] = 0
    with torch.no_grad():
        ref = dcn(x)
    pruner = DeformConvPruner()
    pruner(dcn, [1, 4], to_output=False)
    pruner(dcn, [0, 3], to_output=True)
    with torch.no_grad():
        out = dcn(x[:, [0, 2, 3, 5]])
    assert torch.allclose(out, ref[:, [1, 2, 4]], atol=1e-5)


def test_errors(dense, batch):
    x, samples = batch
    with pytest.raises(ValueError, match=r"'l1', 'bn', 'taylor'"):
        prune_post_train(copy.deepcopy(dense), x, samples, 0.5,
                         importance='l2')
    with pytest.raises(ValueError, match='matches no module'):
        prune_post_train(copy.deepcopy(dense), x, samples, 0.5,
                         ignore=['neck.nothing*'])
    with pytest.raises(ValueError, match='lowest MACs ratio reached'):
        prune_post_train(copy.deepcopy(dense), x, samples, 0.001)


def test_search_ratio_bisects_to_just_below_the_target():
    calls = []

    def measure(r):
        calls.append(r)
        return (1 - r)**2

    ratio, psi = search_ratio(measure, 0.4)
    assert 0.399 <= psi <= 0.4 and psi == (1 - ratio)**2
    assert len(calls) < 20
    assert search_ratio(measure, 1.0) == (0.0, 1.0)


def test_search_ratio_errors():
    with pytest.raises(ValueError, match='jumps from 0.6000'):
        search_ratio(lambda r: 0.6 if r < 0.3 else 0.2, 0.5)
    with pytest.raises(ValueError, match='lowest MACs ratio reached is 1.0000'
                       r'.*importance scores all equal'):
        search_ratio(lambda r: 1.0, 0.5)
