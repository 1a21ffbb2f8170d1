"""FastAT training and clean-vs-PGD evaluation on real mmdet detectors.

The flagship CenterNet DLA-34 (demo config, plain-conv neck) at 64 x 192,
mmdet's shipped RetinaNet shrunk to ResNet-18 at 64 x 64, generated KITTI /
COCO data in tmp_path. Nothing is mocked: the batch goes through mmdet's
data preprocessor, the attacked loss is the detector's own training loss.
"""
import copy
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmdet.registry import DATASETS, MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.runner.amp import autocast
from mmengine.structures import InstanceData

import mmprune  # noqa: F401
import mmprune.engine.adversarial  # noqa: F401  (until the lead wires it)
from mmprune.datasets import make_synthetic_kitti
from mmprune.engine.adversarial import (
    PGD,
    AdversarialEpochBasedTrainLoop,
    AdversarialTestLoop,
    AdversarialValLoop,
    FastAT,
    adversarial_train_step,
    apply_attack_option,
    attack_batch,
    build_attack,
    check_gt_present,
    gt_to_input_frame,
    resolve_gt_frame,
    valid_pixel_mask,
)
from mmprune.engine.runner import cli
from tests.dropin import make_tiny_coco, tiny_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'centernet_dla34_kitti_demo.py')
FASTAT_DEMO = osp.join(ROOT, 'configs', 'demo',
                       'centernet_dla34_kitti_fastat_demo.py')
FASTAT = osp.join(ROOT, 'configs', 'centernet_dla34_kitti_fastat.py')
BASELINE = osp.join(ROOT, 'configs', 'centernet_dla34_kitti.py')


@pytest.fixture(autouse=True)
def _mmdet_scope():
    init_default_scope('mmdet')


def _centernet(seed=0):
    torch.manual_seed(seed)
    cfg = Config.fromfile(DEMO)
    return MODELS.build(cfg.model)


def _batch(sizes=((64, 192), (48, 150)), seed=0):
    """Raw (un-preprocessed) batch of uint8 BGR images with gt boxes."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for h, w in sizes:
        img = (torch.rand((3, h, w), generator=g) * 255).to(torch.uint8)
        inputs.append(img)
        xy = torch.rand((3, 2), generator=g) * torch.tensor([w - 40., h - 24.])
        wh = torch.tensor([[30., 18.], [20., 20.], [36., 12.]])
        sample = DetDataSample(metainfo=dict(img_shape=(h, w),
                                             ori_shape=(h, w),
                                             scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1), labels=torch.tensor([0, 1,
                                                                     2]))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _state(model):
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    grads = {k: None if v.grad is None else v.grad.clone()
             for k, v in model.named_parameters()}
    bufs = {k: v.detach().clone() for k, v in model.named_buffers()}
    return params, grads, bufs


def _assert_same_state(model, state):
    params, grads, bufs = state
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k]), k
        if grads[k] is None:
            assert v.grad is None, k
        else:
            assert torch.equal(v.grad, grads[k]), k
    for k, v in model.named_buffers():
        assert torch.equal(v, bufs[k]), k


# -- attack configs ---------------------------------------------------------
def test_attack_configs_state_units_in_the_unit_range():
    fast = FastAT()
    assert fast.eps_pixels == pytest.approx(2.0)
    assert fast.alpha_pixels == pytest.approx(2.5)
    p = PGD()
    assert (p.eps_pixels, p.alpha_pixels, p.steps) == (pytest.approx(2.0),
                                                        pytest.approx(0.5),
                                                        20)
    with pytest.raises(ValueError, match='2/255'):
        FastAT(eps=2)  # pixel units by mistake
    with pytest.raises(ValueError, match='steps'):
        PGD(steps=0)
    assert isinstance(build_attack(dict(type='PGD', steps=3), 'x'), PGD)
    with pytest.raises(TypeError, match='test_cfg.attack'):
        build_attack('pgd', 'test_cfg.attack')


def test_valid_pixel_mask_uses_img_shape_and_border():
    a = DetDataSample(metainfo=dict(img_shape=(4, 6)))
    b = DetDataSample(metainfo=dict(img_shape=(8, 8),
                                    border=[1., 7., 2., 5.]))
    mask = valid_pixel_mask([a, b], (2, 3, 8, 8))
    assert mask.shape == (2, 1, 8, 8)
    assert float(mask[0].sum()) == float(mask[0, 0, :4, :6].sum()) == 24
    assert float(mask[1].sum()) == float(mask[1, 0, 1:7, 2:5].sum()) == 18


# -- the attack on a detector batch -----------------------------------------
def test_attack_batch_in_pixel_space_off_the_padding():
    model = _centernet().train()
    pre = model.data_preprocessor(_batch(), True)
    inputs, samples = pre['inputs'], pre['data_samples']
    assert inputs.shape == (2, 3, 64, 192)  # image 2 padded from 48 x 150
    attack = PGD(eps=2 / 255, alpha=1 / 255, steps=3)
    state = _state(model)
    adv = attack_batch(model, inputs, samples, attack,
                       torch.Generator().manual_seed(0))
    _assert_same_state(model, state)

    mean, std = model.data_preprocessor.mean, model.data_preprocessor.std
    raw = _batch()['inputs']
    for i, img in enumerate(raw):
        h, w = img.shape[1:]
        rgb = img[[2, 1, 0]].float()
        pix = (adv[i] * std + mean)[:, :h, :w]
        # |delta| <= eps = 2 pixel units, inside 0..255, and used.
        d = (pix - rgb).abs()
        assert float(d.max()) <= 2.0 + 1e-3
        assert float(d.max()) >= 1.9
        assert float(pix.min()) >= -1e-3 and float(pix.max()) <= 255 + 1e-3
    # Padding of image 2 is bit-identical to the clean batch.
    assert torch.equal(adv[1, :, 48:], inputs[1, :, 48:])
    assert torch.equal(adv[1, :, :, 150:], inputs[1, :, :, 150:])

    with torch.no_grad():
        clean = model.parse_losses(model(inputs, samples, mode='loss'))[0]
        attacked = model.parse_losses(model(adv, samples, mode='loss'))[0]
    assert float(attacked) > float(clean)


def test_attack_batch_keeps_grads_and_is_deterministic():
    model = _centernet().train()
    pre = model.data_preprocessor(_batch(), True)
    inputs, samples = pre['inputs'], pre['data_samples']
    # Gradients the caller already accumulated survive the attack.
    model.parse_losses(model(inputs, samples, mode='loss'))[0].backward()
    state = _state(model)
    runs = [attack_batch(model, inputs, samples, FastAT(),
                         torch.Generator().manual_seed(s))
            for s in (3, 3, 4)]
    _assert_same_state(model, state)
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


class PruneLikeWrapper(OptimWrapper):
    """An OptimWrapper that, like the prune wrapper, adds its own loss term
    inside ``update_params``; it records the task loss it receives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def update_params(self, loss, step_kwargs=None, zero_kwargs=None):
        self.seen.append(loss.detach().clone())
        params = [p for g in self.optimizer.param_groups for p in g['params']]
        extra = 1e-4 * sum(p.pow(2).sum() for p in params)
        super().update_params(loss + extra, step_kwargs, zero_kwargs)


def test_train_step_passes_the_adversarial_loss_to_the_wrapper():
    model = _centernet().train()
    ref = copy.deepcopy(model)
    data = _batch()
    wrapper = PruneLikeWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}

    torch.manual_seed(7)
    log_vars = adversarial_train_step(model, copy.deepcopy(data), wrapper,
                                      FastAT())
    # The same attack, replayed on an untouched copy with the same RNG.
    torch.manual_seed(7)
    pre = ref.data_preprocessor(copy.deepcopy(data), True)
    adv = attack_batch(ref, pre['inputs'], pre['data_samples'], FastAT())
    with torch.no_grad():
        expected = ref.parse_losses(ref(adv, pre['data_samples'],
                                        mode='loss'))[0]
        clean = ref.parse_losses(ref(pre['inputs'], pre['data_samples'],
                                     mode='loss'))[0]
    assert len(wrapper.seen) == 1
    assert float(wrapper.seen[0]) == pytest.approx(float(expected), rel=1e-5)
    assert float(log_vars['loss']) == pytest.approx(float(expected),
                                                    rel=1e-5)
    assert float(expected) > float(clean)
    # The optimizer stepped and BN saw one batch (not 1 + the attack's).
    assert any(not torch.equal(v, before[k])
               for k, v in model.named_parameters())
    tracked = [int(v) for k, v in model.named_buffers()
               if k.endswith('num_batches_tracked')]
    assert max(tracked) == 1


class CpuAutocastOptimWrapper(OptimWrapper):
    """AmpOptimWrapper's context on CPU (mmengine's AmpOptimWrapper refuses
    to build without CUDA): bf16 autocast around the forward."""

    @__import__('contextlib').contextmanager
    def optim_context(self, model):
        with super().optim_context(model), autocast(device_type='cpu',
                                                    dtype=torch.bfloat16):
            yield


def test_train_step_under_autocast_cpu():
    model = _centernet().train()
    wrapper = CpuAutocastOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    log_vars = adversarial_train_step(model, _batch(), wrapper, FastAT())
    assert torch.isfinite(log_vars['loss'])
    assert any(not torch.equal(v, before[k])
               for k, v in model.named_parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_train_step_with_amp_optim_wrapper_cuda():
    from mmengine.optim import AmpOptimWrapper
    model = _centernet().cuda().train()
    wrapper = AmpOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    for _ in range(2):
        log_vars = adversarial_train_step(model, _batch(), wrapper, FastAT())
        assert torch.isfinite(log_vars['loss'])
    assert any(not torch.equal(v, before[k])
               for k, v in model.named_parameters())


# -- ground truth of a test batch -------------------------------------------
@pytest.fixture(scope='module')
def kitti_odd(tmp_path_factory):
    """KITTI frames of 60 x 190: resized by 128 / 60 to 128 x 405."""
    root = str(tmp_path_factory.mktemp('kitti_odd'))
    make_synthetic_kitti(root, num_images=4, img_size=(60, 190), seed=2)
    return root


def test_kitti_test_batch_gt_lands_on_the_image(kitti_odd):
    cfg = Config.fromfile(DEMO)
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    ds_cfg.update(data_root=kitti_odd, split='trainval')
    dataset = DATASETS.build(ds_cfg)
    # Annotations are loaded after the resize and the bottom / right pad:
    # scale only.
    assert resolve_gt_frame(dataset, 'auto', 'test_dataloader') == (True,
                                                                    False)
    model = _centernet()
    item = dataset[0]
    pre = model.data_preprocessor(
        dict(inputs=[item['inputs']], data_samples=[item['data_samples']]),
        False)
    sample = pre['data_samples'][0]
    # keep_ratio into 416 x 128: min(416 / 190, 128 / 60) = 128 / 60.
    h, w = 128, int(190 * 128 / 60 + 0.5)
    top, bottom, left, right = (int(v) for v in sample.border)
    assert (top, left) == (0, 0) and (bottom, right) == (h, w)
    mapped = gt_to_input_frame([sample], True, False)[0]
    orig = sample.gt_instances.bboxes
    assert len(orig) > 0
    sx, sy = sample.scale_factor
    assert torch.allclose(mapped.gt_instances.bboxes,
                          orig * torch.tensor([sx, sy, sx, sy]), atol=1e-4)
    # The input sample keeps its original-frame boxes (metrics read them).
    assert torch.equal(sample.gt_instances.bboxes, orig)
    # The resized image really sits at the top-left of the input.
    pix = pre['inputs'][0] * model.data_preprocessor.std + \
        model.data_preprocessor.mean
    img = cv2.imread(dataset[0]['data_samples'].img_path)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)[..., ::-1]
    img = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    assert torch.allclose(pix[:, :h, :w], img.float(), atol=1.0)
    assert float(pix[:, :, w:].abs().max()) < 1e-3  # the pad is black
    # The attack perturbs the image and never the pad.
    mask = valid_pixel_mask([sample], pre['inputs'].shape)
    assert float(mask.sum()) == h * w
    assert float(mask[0, 0, :h, :w].sum()) == h * w


def _coco_dataset(root, pipeline):
    return DATASETS.build(
        dict(type='CocoDataset', data_root=root, ann_file='ann.json',
             data_prefix=dict(img='images/'), test_mode=True,
             metainfo=dict(classes=('car', 'person')), pipeline=pipeline))


def test_resize_then_load_annotations_maps_like_mmdet(tmp_path):
    """gt loaded after Resize, mapped with scale_factor, equals gt that
    Resize itself scaled (annotations loaded first)."""
    make_tiny_coco(str(tmp_path), num_images=2, size=64)
    load = [dict(type='LoadImageFromFile')]
    resize = [dict(type='Resize', scale=(100, 80), keep_ratio=False)]
    ann = [dict(type='LoadAnnotations', with_bbox=True)]
    pack = [dict(type='PackDetInputs')]
    late = _coco_dataset(str(tmp_path), load + resize + ann + pack)
    early = _coco_dataset(str(tmp_path), load + ann + resize + pack)
    assert resolve_gt_frame(late, 'auto', 'k') == (True, False)
    assert resolve_gt_frame(early, 'auto', 'k') == (False, False)
    for i in range(2):
        a = late[i]['data_samples']
        b = early[i]['data_samples']
        mapped = gt_to_input_frame([a], True, False)[0].gt_instances.bboxes
        assert torch.allclose(mapped.tensor, b.gt_instances.bboxes.tensor,
                              atol=1e-4)
        assert not torch.allclose(a.gt_instances.bboxes.tensor,
                                  b.gt_instances.bboxes.tensor)


def test_gt_frame_errors_name_the_pipeline(tmp_path):
    make_tiny_coco(str(tmp_path), num_images=1, size=64)
    no_ann = _coco_dataset(str(tmp_path), [
        dict(type='LoadImageFromFile'), dict(type='PackDetInputs')])
    with pytest.raises(ValueError, match='test_dataloader.dataset.pipeline'):
        resolve_gt_frame(no_ann, 'auto', 'test_dataloader')
    affine = _coco_dataset(str(tmp_path), [
        dict(type='LoadImageFromFile'),
        dict(type='RandomAffine', max_rotate_degree=0, max_shear_degree=0),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs')])
    with pytest.raises(ValueError, match='RandomAffine runs before'):
        resolve_gt_frame(affine, 'auto', 'test_dataloader')
    assert resolve_gt_frame(affine, 'original', 'x') == (True, True)
    with pytest.raises(ValueError, match='gt_frame'):
        resolve_gt_frame(affine, 'pixels', 'x')
    empty = DetDataSample(metainfo=dict(img_shape=(4, 4)))
    empty.gt_instances = InstanceData()
    with pytest.raises(ValueError, match='val_dataloader.dataset.pipeline'):
        check_gt_present([empty], 'val_dataloader')


# -- configs and the --attack shortcut --------------------------------------
def test_apply_attack_option():
    cfg = Config.fromfile(BASELINE)
    apply_attack_option(cfg, 'pgd')
    assert cfg.test_cfg.type == 'AdversarialTestLoop'
    assert cfg.test_cfg.attack == dict(type='PGD', eps=2 / 255,
                                       alpha=0.5 / 255, steps=20,
                                       random_start=True)
    # Settings already in an adversarial config win over the defaults.
    cfg = Config.fromfile(FASTAT)
    cfg.merge_from_dict({'test_cfg.attack.steps': 5, 'test_cfg.fp16': True})
    apply_attack_option(cfg, 'pgd')
    assert cfg.test_cfg.attack.steps == 5 and cfg.test_cfg.fp16 is True
    # ... and so do --cfg-options given before the loop type is set.
    cfg = Config.fromfile(BASELINE)
    cfg.merge_from_dict({'test_cfg.attack.steps': 7})
    apply_attack_option(cfg, 'pgd')
    assert cfg.test_cfg.attack.steps == 7 and cfg.test_cfg.attack.type == 'PGD'
    with pytest.raises(ValueError, match="expected one of \\['pgd'\\]"):
        apply_attack_option(cfg, 'fgsm')
    cfg.test_cfg = dict(type='MyLoop')
    with pytest.raises(ValueError, match='test_cfg.type'):
        apply_attack_option(cfg, 'pgd')


def test_fastat_configs_state_the_seed_setting():
    for path in (FASTAT, FASTAT_DEMO):
        cfg = Config.fromfile(path)
        assert cfg.train_cfg.type == 'AdversarialEpochBasedTrainLoop'
        assert cfg.train_cfg.attack == dict(type='FastAT', eps=2 / 255,
                                            alpha=2.5 / 255)
        assert cfg.test_cfg.attack.steps == 20
    assert Config.fromfile(FASTAT).train_cfg.max_epochs == 250


# -- end to end ------------------------------------------------------------
@pytest.fixture(scope='module')
def kitti_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('kitti'))
    # 6 frames -> 4 train (2 iterations of batch 2) and 2 val.
    make_synthetic_kitti(root, num_images=6, img_size=(64, 192), seed=1)
    return root


def _options(data_root, *extra):
    return [
        '--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2',
        'test_dataloader.batch_size=2', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1',
        'default_hooks.logger.interval=1', 'randomness.seed=0', *extra
    ]


def test_fastat_demo_trains_and_pgd_test_reports_both(kitti_root, tmp_path):
    work = str(tmp_path / 'work')
    runner = cli.train_main([FASTAT_DEMO, '--work-dir', work] +
                            _options(kitti_root))
    assert isinstance(runner.train_loop, AdversarialEpochBasedTrainLoop)
    assert runner.iter == 2
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert np.isfinite(loss)

    out = str(tmp_path / 'preds.pkl')
    metrics = cli.test_main(
        [FASTAT_DEMO, osp.join(work, 'epoch_1.pth'), '--out', out,
         '--work-dir', str(tmp_path / 'test')] +
        _options(kitti_root, 'test_cfg.attack.steps=3'))
    for diff in ('easy', 'moderate', 'hard'):
        clean = metrics[f'kitti/Car_AP40_{diff}']
        adv = metrics[f'adv/kitti/Car_AP40_{diff}']
        assert 0.0 <= adv <= 100.0 and 0.0 <= clean <= 100.0
    # The attack raised the detector's loss on the test images.
    assert metrics['adv/task_loss'] > metrics['adv/task_loss_clean'] > 0
    # --out wrote the clean predictions and, separately, the attacked ones.
    assert osp.isfile(out) and osp.isfile(str(tmp_path / 'preds_adv.pkl'))


def test_missing_annotations_fail_with_the_config_key(kitti_root, tmp_path):
    cfg = Config.fromfile(FASTAT_DEMO)
    cfg.test_dataloader.dataset.data_root = kitti_root
    cfg.test_dataloader.dataset.pipeline = [
        t for t in cfg.test_dataloader.dataset.pipeline
        if t['type'] != 'LoadAnnotations'
    ]
    cfg.test_dataloader.num_workers = 0
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match='test_dataloader.dataset.pipeline'):
        runner.test()


def test_fastat_on_mmdet_retinanet_r18(tmp_path):
    """Drop-in: mmdet's shipped RetinaNet config, ResNet-18, 64 x 64."""
    make_tiny_coco(str(tmp_path / 'data'), num_images=4, size=64)
    cfg = tiny_config('retinanet_r50_fpn', str(tmp_path / 'data'),
                      str(tmp_path / 'work'), size=64, max_iters=3)
    cfg.model.backbone.depth = 18
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    cfg.train_cfg = dict(type='AdversarialIterBasedTrainLoop', max_iters=3,
                         val_interval=4,
                         attack=dict(type='FastAT', eps=2 / 255,
                                     alpha=2.5 / 255))
    runner = Runner.from_cfg(cfg)
    before = {k: v.detach().clone()
              for k, v in runner.model.named_parameters()}
    runner.train()
    assert runner.iter == 3
    assert np.isfinite(runner.message_hub.get_scalar('train/loss').current())
    assert any(not torch.equal(v, before[k])
               for k, v in runner.model.named_parameters())


def test_pgd_test_loop_on_mmdet_retinanet(tmp_path):
    """AdversarialTestLoop with mmdet's CocoMetric on a drop-in detector."""
    data = str(tmp_path / 'data')
    make_tiny_coco(data, num_images=4, size=64)
    cfg = tiny_config('retinanet_r50_fpn', data, str(tmp_path / 'work'),
                      size=64, max_iters=1)
    cfg.model.backbone.depth = 18
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    cfg.test_dataloader = dict(
        batch_size=2, num_workers=0, persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='CocoDataset', data_root=data,
                     ann_file='ann.json', data_prefix=dict(img='images/'),
                     metainfo=dict(classes=('car', 'person')),
                     test_mode=True,
                     pipeline=[
                         dict(type='LoadImageFromFile'),
                         dict(type='Resize', scale=(96, 96),
                              keep_ratio=True),
                         dict(type='LoadAnnotations', with_bbox=True),
                         dict(type='PackDetInputs',
                              meta_keys=('img_id', 'img_path', 'ori_shape',
                                         'img_shape', 'scale_factor'))
                     ]))
    cfg.test_evaluator = dict(type='CocoMetric',
                              ann_file=osp.join(data, 'ann.json'),
                              metric='bbox')
    cfg.test_cfg = dict(type='TestLoop')
    apply_attack_option(cfg, 'pgd')
    cfg.test_cfg.attack.steps = 2
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert isinstance(runner.test_loop, AdversarialTestLoop)
    assert runner.test_loop.gt_flags == (True, False)
    assert 'coco/bbox_mAP' in metrics and 'adv/coco/bbox_mAP' in metrics
    assert metrics['adv/task_loss'] > metrics['adv/task_loss_clean']


# -- a trained toy detector: the attack must cost AP -------------------------
@MODELS.register_module(force=True)
class AdvTestToyBackbone(torch.nn.Module):
    """Four 3x3 conv-BN-ReLU layers, stride 4: CenterNet learns the tiny
    COCO boxes with it in ~200 iterations on a CPU (seconds)."""

    def __init__(self, width=32):
        super().__init__()
        layers, c_in = [], 3
        for stride in (2, 1, 2, 1):
            layers += [torch.nn.Conv2d(c_in, width, 3, stride, 1),
                       torch.nn.BatchNorm2d(width), torch.nn.ReLU()]
            c_in = width
        self.body = torch.nn.Sequential(*layers)

    def init_weights(self):
        pass

    def forward(self, x):
        return (self.body(x), )


def _toy_detector_cfg(data, work_dir, iters):
    def dataset(pipeline, test_mode):
        return dict(type='CocoDataset', data_root=data, ann_file='ann.json',
                    data_prefix=dict(img='images/'), test_mode=test_mode,
                    metainfo=dict(classes=('car', 'person')),
                    pipeline=pipeline)

    train_pipeline = [dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', with_bbox=True),
                      dict(type='PackDetInputs')]
    # CenterNet's test pipeline: centre pad (64 -> 96, border 16), then
    # annotations, so the attack must move the gt by the border.
    test_pipeline = [
        dict(type='LoadImageFromFile', to_float32=True),
        dict(type='RandomCenterCropPad', ratios=None, border=None,
             mean=[0, 0, 0], std=[1, 1, 1], to_rgb=True, test_mode=True,
             test_pad_mode=['logical_or', 31], test_pad_add_pix=1),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor', 'border'))
    ]
    return Config(dict(
        default_scope='mmdet',
        model=dict(
            type='CenterNet',
            data_preprocessor=dict(type='DetDataPreprocessor',
                                   mean=[123.675, 116.28, 103.53],
                                   std=[58.395, 57.12, 57.375],
                                   bgr_to_rgb=True),
            backbone=dict(type='AdvTestToyBackbone'), neck=None,
            bbox_head=dict(
                type='CenterNetHead', num_classes=2, in_channels=32,
                feat_channels=32,
                loss_center_heatmap=dict(type='GaussianFocalLoss',
                                         loss_weight=1.0),
                loss_wh=dict(type='L1Loss', loss_weight=0.1),
                loss_offset=dict(type='L1Loss', loss_weight=1.0)),
            train_cfg=None,
            test_cfg=dict(topk=20, local_maximum_kernel=3, max_per_img=20)),
        train_dataloader=dict(
            batch_size=4, num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            dataset=dataset(train_pipeline, False)),
        test_dataloader=dict(
            batch_size=4, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dataset(test_pipeline, True)),
        test_evaluator=dict(type='CocoMetric',
                            ann_file=osp.join(data, 'ann.json'),
                            metric='bbox'),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters,
                       val_interval=10**6),
        test_cfg=dict(type='TestLoop'),
        # lr 0.01 trains this toy chaotically: its clean mAP after 200
        # iterations was 0.70 on 2 threads and 0.46 on 1. At 0.003 it is
        # 0.84 on both, so the test does not hang on the thread count.
        optim_wrapper=dict(type='OptimWrapper',
                           optimizer=dict(type='Adam', lr=0.003)),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=50),
            checkpoint=dict(type='CheckpointHook', interval=10**6)),
        log_processor=dict(by_epoch=False), randomness=dict(seed=0),
        work_dir=work_dir, env_cfg=dict(dist_cfg=dict(backend='gloo'))))


def test_pgd_costs_ap_on_a_trained_toy_detector(tmp_path):
    data = str(tmp_path / 'data')
    make_tiny_coco(data, num_images=8, size=64, seed=0)
    cfg = _toy_detector_cfg(data, str(tmp_path / 'work'), iters=200)
    apply_attack_option(cfg, 'pgd')  # the seed's PGD: 2/255, 0.5/255, 20
    cfg.val_dataloader = cfg.test_dataloader
    cfg.val_evaluator = cfg.test_evaluator
    cfg.val_cfg = dict(type='AdversarialValLoop',
                       attack=dict(type='PGD', steps=2))
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    val = runner.val()
    assert isinstance(runner.val_loop, AdversarialValLoop)
    assert val['coco/bbox_mAP'] == metrics['coco/bbox_mAP']
    assert 'adv/coco/bbox_mAP' in val
    assert runner.test_loop.gt_flags == (False, True)
    clean, adv = metrics['coco/bbox_mAP'], metrics['adv/coco/bbox_mAP']
    assert clean >= 0.5, metrics  # the toy learned its boxes
    assert adv < clean - 0.03, metrics
    assert metrics['adv/task_loss'] > metrics['adv/task_loss_clean']

    # The attack's random start is seeded by the loop: a rerun repeats it.
    again = runner.test_loop.run()
    assert again['adv/task_loss'] == metrics['adv/task_loss']
    assert again['adv/coco/bbox_mAP'] == metrics['adv/coco/bbox_mAP']

    # Evidence that the border map is right: the trained model's loss
    # against the mapped gt is low; against unmoved gt it is not.
    runner.test_loop.gt_flags = resolve_gt_frame(None, 'input', 'x')
    unmoved = runner.test_loop.run()
    assert metrics['adv/task_loss_clean'] < 0.5
    assert unmoved['adv/task_loss_clean'] > 3 * metrics['adv/task_loss_clean']
