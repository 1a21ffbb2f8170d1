"""Export of masked checkpoints to small plain mmdet models (engine/export).

Every drop-in detector (mmdet's shipped configs plus our DLA-34) gets random
frozen masks; the export must compute what the masked model computes (raw
head outputs and final boxes), its MACs counted by forward hooks must be the
cost model's, and it must round-trip through ``tools/test.py``.
"""
import copy
import os.path as osp
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import load_checkpoint

import mmprune  # noqa: F401
from mmprune.core import CostModel, install_masks
from mmprune.engine.export import (
    ExportError,
    compare_outputs,
    example_batch,
    export_pruned,
    exported_config,
    flatten_outputs,
)
from mmprune.engine.hooks.in_train_pruning_hook import trace_detector
from tests.dropin import DETECTORS, ROOT, tiny_config
from tests.test_core.nets import count_macs

DEMO = osp.join(ROOT, 'configs', 'demo', 'centernet_dla34_prune50_demo.py')


def build(cfg):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    return MODELS.build(cfg.model)


def mild_bn(model, seed=0):
    """Random but moderate BN statistics and affine parameters (near the
    identity): a pruned channel's BN output is a non-zero constant, so the
    masks matter, while few ReLUs die, so scores are rarely tied."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(1 + 0.2 * torch.rand(n, generator=g))
    return model.eval()


def random_binaries(plan, seed, keep_all=False):
    """Each unit (a channel, or a run of tied channels: GroupNorm groups,
    grouped-conv positions) kept with probability 1/2, at least one per
    group."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, grp in plan.groups.items():
        if keep_all:
            out[name] = torch.ones(grp.size)
            continue
        b = (torch.rand(grp.units, generator=g) < 0.5).float()
        b[int(torch.randint(grp.units, (1, ), generator=g))] = 1.0
        out[name] = b if grp.tie is None else b[torch.tensor(grp.tie)]
    return out


def masked_checkpoint(cfg, path, shape=None, seed=0, keep_all=False,
                      skip=()):
    """Build ``cfg``'s detector with random BN statistics, give it frozen
    random masks the way the pruning hook does (``prune_masks``), save a
    runner-style checkpoint; returns (model with masks on, plan, binaries,
    trace input, samples)."""
    torch.manual_seed(seed)  # the detector's own weight init
    model = mild_bn(build(cfg), seed=seed)
    x, samples = example_batch(cfg, model, shape)
    plan = trace_detector(model, x, samples, skip)
    b = random_binaries(plan, seed, keep_all)
    ms = install_masks(model, plan)
    ms.freeze(b)
    model.add_module('prune_masks', ms)
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(prune=dict(started=True, frozen=True,
                                         psi=float(CostModel(plan).psi(b))))),
               path)
    return model, plan, b, x, samples


def with_hook(cfg, shape, **kw):
    cfg = copy.deepcopy(cfg)
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
        dict(type='InTrainPruningHook', psi_target=0.5, input_shape=shape,
             **kw)
    ]
    cfg.optim_wrapper = dict(type='PruneOptimWrapper',
                             optimizer=dict(type='SGD', lr=0.01),
                             mask_optimizer=dict(type='SGD', lr=0.01))
    return cfg


def load_small(res):
    cfg = Config.fromfile(res.config)
    small = build(cfg)
    load_checkpoint(small, res.checkpoint, map_location='cpu', strict=True,
                    logger='silent')
    return small.eval()


def isolated(scores, cut, gap=1e-5):
    """Indices of scores above ``cut`` whose nearest other score is more than
    ``gap`` away."""
    out = []
    for i, v in enumerate(scores.tolist()):
        others = torch.cat([scores[:i], scores[i + 1:]])
        if v > cut and (others.numel() == 0
                        or float((others - v).abs().min()) > gap):
            out.append(i)
    return out


def assert_same_detections(got, ref, box_tol, min_isolated=3):
    """The same detections, as far as float noise can decide them.

    Random weights give (near-)tied scores: topk orders ties by noise, and
    CenterNet's 3x3 local-max test keeps or drops a point whose neighbour
    scores the same up to noise. So every detection whose score is isolated
    (no other score within 1e-5, 50x the float noise between the two
    models' scores) and clearly above the lowest kept score
    must have a partner in the other list with the same label, a score within
    1e-4 and a box within ``box_tol``, both ways; and there must be at least
    ``min_isolated`` such detections, so the check is not empty.
    """
    assert len(ref['scores']) > 0 and len(got['scores']) == len(ref['scores'])
    cut = max(float(got['scores'].min()), float(ref['scores'].min())) + 1e-5
    for a, b in ((got, ref), (ref, got)):
        idx = isolated(a['scores'], cut)
        assert len(idx) >= min_isolated, a['scores']
        for i in idx:
            ok = ((b['labels'] == a['labels'][i])
                  & ((b['scores'] - a['scores'][i]).abs() <= 1e-4)
                  & ((b['bboxes'] - a['bboxes'][i]).abs().amax(1) <= box_tol))
            assert bool(ok.any()), (
                f'detection {a["bboxes"][i].tolist()} score '
                f'{float(a["scores"][i])} has no partner')


def predictions(model, x, samples):
    with torch.no_grad():
        out = model.predict(x, copy.deepcopy(samples))
    return [o.pred_instances for o in out]


@pytest.mark.parametrize('name', sorted(DETECTORS))
def test_export_equals_masked_model(name, tmp_path):
    # FCOS's GroupNorm on the 1x1 P7 level fails inside mmdet at 64 px.
    size = 128 if name == 'fcos_r50' else 64
    cfg = with_hook(tiny_config(name, str(tmp_path), str(tmp_path / 'w'),
                                size=size), (size, size))
    if name == 'faster_rcnn_r50_fpn':
        # A fixed number of proposals (no NMS suppression), so the RoI
        # head's MACs do not depend on the weights.
        rpn = cfg.model.test_cfg.rpn
        rpn.nms_pre, rpn.max_per_img = 40, 40
        rpn.nms = dict(type='nms', iou_threshold=1.0)
    ckpt = str(tmp_path / 'masked.pth')
    model, plan, b, x0, samples = masked_checkpoint(cfg, ckpt, (size, size))
    samples[0].set_metainfo(dict(border=(0, size, 0, size)))  # CenterNet
    x = torch.rand(1, 3, size, size,
                   generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        ref_raw = flatten_outputs(model._forward(x, samples))
    ref_pred = predictions(model, x, samples)

    res = export_pruned(cfg, ckpt, str(tmp_path / 'out'), log=None)
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
    # One row per raw output (measured on the trace input), each at its own
    # scale.
    assert [d['shape'] for d in res.output_diffs] == \
        [list(r.shape) for r in ref_raw]
    for d in res.output_diffs:
        assert d['max_abs'] <= 1e-4 * max(1.0, d['scale'])
    small = load_small(res)
    assert type(small) is type(model)
    assert not hasattr(small, 'prune_masks')
    assert not any(m._forward_hooks for m in small.modules())
    with torch.no_grad():
        raw = flatten_outputs(small._forward(x, samples))
    assert [t.shape for t in raw] == [t.shape for t in ref_raw]
    assert max(float((a - r).abs().max()) for a, r in zip(raw, ref_raw)
               if a.numel()) <= 1e-4
    pred = predictions(small, x, samples)
    for p, r in zip(pred, ref_pred):
        # Boxes in units of the image size (1e-4 of it): float32 rounding of
        # a 64 px coordinate is ~4e-6 px per operation.
        assert_same_detections(p, r, box_tol=1e-4 * size)
    # The masks really pruned something, and the export is smaller.
    cm = CostModel(plan)
    psi = float(cm.psi(b))
    assert psi < 0.8 and res.psi == pytest.approx(psi)
    assert res.params_after < 0.8 * res.params_before
    # MACs counted by forward hooks on the real module shapes.
    fwd = lambda net, inp: net._forward(inp, samples)  # noqa: E731
    counted = count_macs(small, x0, fwd)
    assert counted == pytest.approx(psi * cm.dense_macs, rel=0.01)
    assert count_macs(model, x0, fwd) == pytest.approx(cm.dense_macs,
                                                       rel=0.01)


@pytest.fixture(scope='module')
def centernet_cfg(tmp_path_factory):
    """CenterNet R18 with DCNv2 (mmdet's shipped config), 64 px."""
    tmp = tmp_path_factory.mktemp('ct')
    return with_hook(tiny_config('centernet_r18_dcnv2', str(tmp),
                                 str(tmp / 'w')), (64, 64))


def test_no_pruned_channel_gives_identical_parameters(centernet_cfg,
                                                      tmp_path):
    ckpt = str(tmp_path / 'm.pth')
    model, _, _, _, _ = masked_checkpoint(centernet_cfg, ckpt, (64, 64),
                                          keep_all=True)
    res = export_pruned(centernet_cfg, ckpt, str(tmp_path / 'out'), log=None)
    assert res.spec.modules == {} and res.psi == 1.0
    ref = {k: v for k, v in model.state_dict().items()
           if not k.startswith('prune_masks.')}
    got = load_small(res).state_dict()
    assert list(got) == list(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


def test_refuses_checkpoint_without_masks(centernet_cfg, tmp_path):
    model = build(centernet_cfg)
    ckpt = str(tmp_path / 'plain.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    with pytest.raises(ExportError,
                       match=r'plain.pth holds no masks \(no "prune_masks'):
        export_pruned(centernet_cfg, ckpt, str(tmp_path / 'out'), log=None)
    assert not osp.exists(tmp_path / 'out')


def test_refuses_mismatching_config(centernet_cfg, tmp_path):
    ckpt = str(tmp_path / 'm.pth')
    masked_checkpoint(centernet_cfg, ckpt, (64, 64))
    # Other number of classes: shape mismatch, named.
    other = copy.deepcopy(centernet_cfg)
    other.model.bbox_head.num_classes = 5
    with pytest.raises(ExportError) as e:
        export_pruned(other, ckpt, str(tmp_path / 'o1'), log=None)
    msg = str(e.value)
    assert 'does not match config' in msg and 'shape mismatch (2)' in msg
    assert 'bbox_head.heatmap_head.2.weight: checkpoint (2, 64, 1, 1), ' \
        'config (5, 64, 1, 1)' in msg
    # Plain convs instead of DCN in the neck: missing / unexpected keys.
    other = copy.deepcopy(centernet_cfg)
    other.model.neck.use_dcn = False
    with pytest.raises(ExportError) as e:
        export_pruned(other, ckpt, str(tmp_path / 'o2'), log=None)
    msg = str(e.value)
    assert 'unexpected in the checkpoint' in msg
    assert 'neck.deconv_layers.0.conv.conv_offset.weight' in msg
    # Same weights, but the config skips a layer the masks were made for.
    other = copy.deepcopy(centernet_cfg)
    other.custom_hooks[-1]['skip'] = ['backbone.layer4*']
    with pytest.raises(ExportError) as e:
        export_pruned(other, ckpt, str(tmp_path / 'o3'), log=None)
    msg = str(e.value)
    assert 'do not match the channel groups' in msg
    assert "skip=['backbone.layer4*']" in msg and 'masks of unknown' in msg


def test_exported_config_is_a_plain_config(centernet_cfg):
    cfg = exported_config(centernet_cfg)
    assert cfg.model.type == 'PrunedModel'
    assert cfg.model.channels == '{{ fileDirname }}/channels.json'
    assert cfg.model.detector.type == 'CenterNet'
    assert cfg.model.detector.backbone.init_cfg is None
    assert [h['type'] for h in cfg.custom_hooks] == [
        h['type'] for h in centernet_cfg.custom_hooks[:-1]]
    assert cfg.optim_wrapper == dict(type='OptimWrapper',
                                     optimizer=dict(type='SGD', lr=0.01))
    assert 'mmprune' in cfg.custom_imports.imports
    assert cfg.load_from == '{{ fileDirname }}/model.pth'
    # Pretrained backbones are dropped (the weights are in model.pth), other
    # init configs stay.
    c = copy.deepcopy(centernet_cfg)
    c.model.backbone.init_cfg = [
        dict(type='Pretrained', checkpoint='x.pth'),
        dict(type='Constant', val=1, layer='BatchNorm2d')]
    assert exported_config(c).model.detector.backbone.init_cfg == [
        dict(type='Constant', val=1, layer='BatchNorm2d')]


def test_pruned_model_builder_errors(centernet_cfg, tmp_path):
    from mmprune.models.detectors import build_pruned_model
    det = centernet_cfg.model.to_dict()
    init_default_scope('mmdet')
    with pytest.raises(FileNotFoundError, match='fileDirname'):
        build_pruned_model(det, 'channels.json')
    spec = {'format': 'mmprune.channels/1', 'modules': {
        'backbone.conv1': dict(type='Conv2d', kind='conv', in_total=3,
                               out_total=32, in_kept=None, out_kept=[0])}}
    with pytest.raises(ValueError, match=r'backbone.conv1: spec expects 3 '
                       r'-> 32 channels, model has 3 -> 64'):
        build_pruned_model(det, spec)
    with pytest.raises(TypeError, match='model.detector'):
        build_pruned_model('CenterNet', spec)


@pytest.fixture(scope='module')
def kitti_root(tmp_path_factory):
    from mmprune.datasets import make_synthetic_kitti
    root = str(tmp_path_factory.mktemp('kitti'))
    # 95 x 223 pads to 96 x 224 at test time (RandomCenterCropPad adds one
    # pixel, then rounds up to 32): with no wide padded border there are no
    # plateaus of tied scores, whose order float noise would decide.
    make_synthetic_kitti(root, num_images=6, img_size=(95, 223), seed=1)
    return root


def kitti_options(root):
    """Config overrides that point the demo config at the tiny data."""
    return {'test_dataloader.dataset.data_root': root,
            'val_dataloader.dataset.data_root': root,
            'train_dataloader.dataset.data_root': root,
            'test_dataloader.batch_size': 2}


def cli_options(opts):
    return ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]


def test_round_trip_through_tools_test(kitti_root, tmp_path):
    """The exported DLA-34 on KITTI gives the masked checkpoint's metric and
    predictions under ``tools/test.py`` (mmprune.engine.runner.cli)."""
    from mmprune.engine.runner import cli
    opts = kitti_options(kitti_root)
    cfg = Config.fromfile(DEMO)
    cfg.merge_from_dict(opts)
    ckpt = str(tmp_path / 'masked.pth')
    # The demo hook has no input_shape: trace at the first test batch.
    masked_checkpoint(cfg, ckpt)
    out = str(tmp_path / 'export')
    res = export_pruned(DEMO, ckpt, out, cfg_options=opts, log=None)
    assert res.input_shape[:2] == (1, 3) and res.psi < 0.8
    m1 = cli.test_main([DEMO, ckpt, '--work-dir', str(tmp_path / 't1'),
                        '--out', str(tmp_path / 'masked.pkl')]
                       + cli_options(opts))
    m2 = cli.test_main([osp.join(out, 'config.py'),
                        osp.join(out, 'model.pth'), '--work-dir',
                        str(tmp_path / 't2'), '--out',
                        str(tmp_path / 'small.pkl')])
    assert m1 == m2 and 'kitti/Overall_AP40_moderate' in m1
    with open(tmp_path / 'masked.pkl', 'rb') as f:
        p1 = pickle.load(f)
    with open(tmp_path / 'small.pkl', 'rb') as f:
        p2 = pickle.load(f)
    assert len(p1) == len(p2) == 2
    for a, b in zip(p1, p2):
        assert_same_detections(b['pred_instances'], a['pred_instances'],
                               box_tol=1e-2)


def test_config_without_the_hook_uses_its_defaults(centernet_cfg, tmp_path):
    ckpt = str(tmp_path / 'm.pth')
    _, plan, b, _, _ = masked_checkpoint(centernet_cfg, ckpt, (64, 64))
    plain = copy.deepcopy(centernet_cfg)
    plain.custom_hooks = plain.custom_hooks[:-1]
    res = export_pruned(plain, ckpt, str(tmp_path / 'out'),
                        input_shape=(64, 64), log=None)
    assert res.psi == pytest.approx(float(CostModel(plan).psi(b)))
    assert any('has no InTrainPruningHook' in n for n in res.notes)
    assert 'note: ' in res.summary()


def test_export_runs_mmcv_dcn_layers_on_the_torch_path(centernet_cfg,
                                                       tmp_path):
    """``torch_dcn=True`` in the exported config: mmdet's CenterNet
    R18-DCNv2 export switches its mmcv DCNv2 layers to DCNv2Torch and gives
    the same outputs."""
    from mmcv.ops import ModulatedDeformConv2dPack

    from mmprune.models.layers import ModulatedDeformConv2dPackTorch
    ckpt = str(tmp_path / 'm.pth')
    _, _, _, x, samples = masked_checkpoint(centernet_cfg, ckpt, (64, 64))
    res = export_pruned(centernet_cfg, ckpt, str(tmp_path / 'out'), log=None)
    small = load_small(res)
    with torch.no_grad():  # non-zero offsets: the sampling matters
        for m in small.modules():
            if isinstance(m, ModulatedDeformConv2dPack):
                m.conv_offset.weight.normal_(0, 0.05)
    cfg = Config.fromfile(res.config)
    cfg.model.torch_dcn = True
    fast = build(cfg)
    fast.load_state_dict(small.state_dict())
    fast.eval()
    kinds = {type(m) for m in fast.modules()
             if isinstance(m, ModulatedDeformConv2dPack)}
    assert kinds == {ModulatedDeformConv2dPackTorch}
    assert {type(m) for m in small.modules() if isinstance(
        m, ModulatedDeformConv2dPack)} == {ModulatedDeformConv2dPack}
    with torch.no_grad():
        for a, b in zip(*(m._forward(x, samples) for m in (small, fast))):
            for ta, tb in zip(a, b):
                torch.testing.assert_close(tb, ta, atol=1e-4, rtol=1e-4)


def test_compare_outputs_checks_each_output_at_its_own_scale():
    # Untrained box deltas of 2.8e5 next to class scores in 0..1: a single
    # tolerance of atol * 2.8e5 = 28 would let a 0.5 error in the scores by.
    deltas = torch.full((2, 4), 2.8e5)
    scores = torch.rand(2, 3, generator=torch.Generator().manual_seed(0))
    rows = compare_outputs([deltas + 1.0, scores], [deltas, scores])
    assert [r['index'] for r in rows] == [0, 1]
    assert rows[0]['max_abs'] == pytest.approx(1.0)
    assert rows[0]['max_rel'] == pytest.approx(1.0 / 2.8e5)
    with pytest.raises(RuntimeError, match=r'output 1 \[2, 3\]'):
        compare_outputs([deltas, scores + 0.5], [deltas, scores])
