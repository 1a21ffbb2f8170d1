"""Tests of CenterNet's DLA-Up / IDA-Up neck and the full DLASeg model."""
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.ops import ModulatedDeformConv2dPack
from mmdet.models.dense_heads import CenterNetHead
from mmdet.registry import MODELS
from mmengine.analysis import FlopAnalyzer

from mmprune.models.backbones import DLA
from mmprune.models.necks import DLAUpNeck
from mmprune.models.necks.dla_up import bilinear_kernel


class DLASeg(nn.Module):
    """CenterNet's DLA-34 model: backbone, DLA-Up neck, 3-class head."""

    def __init__(self, use_dcn=True):
        super().__init__()
        self.backbone = DLA()
        self.neck = DLAUpNeck(use_dcn=use_dcn)
        self.head = CenterNetHead(in_channels=64, feat_channels=256,
                                  num_classes=3)

    def forward(self, x):
        return self.head(self.neck(self.backbone(x)))


def count_macs(model, x):
    """Multiply-accumulates of every conv-like layer in one forward of x.

    Conv2d and DCN: k*k*(C_in/groups)*C_out*H_out*W_out (a DCN's sampling is
    not counted; its offset conv is an nn.Conv2d and counted as one).
    ConvTranspose2d: k*k*C_in*(C_out/groups)*H_in*W_in, since each input
    pixel is multiplied by one full kernel. Returns (macs, layers run).
    """
    total, ran = [0], []

    def conv_hook(m, inp, out):
        total[0] += m.weight.numel() * out.shape[2] * out.shape[3]
        ran.append(m)

    def deconv_hook(m, inp, out):
        total[0] += m.weight.numel() * inp[0].shape[2] * inp[0].shape[3]
        ran.append(m)

    handles = []
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(deconv_hook))
        elif isinstance(m, (nn.Conv2d, ModulatedDeformConv2dPack)):
            handles.append(m.register_forward_hook(conv_hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total[0], ran


@pytest.mark.parametrize('use_dcn', [True, False])
def test_neck_output_shape(use_dcn):
    backbone = DLA()
    neck = MODELS.build(dict(type='DLAUpNeck', use_dcn=use_dcn))
    outs = neck(backbone(torch.rand(1, 3, 64, 128)))
    assert isinstance(outs, tuple) and len(outs) == 1
    assert tuple(outs[0].shape) == (1, 64, 16, 32)
    assert neck.out_stride == 4
    convs = [m for m in neck.modules()
             if isinstance(m, ModulatedDeformConv2dPack)]
    assert len(convs) == (2 * (1 + 2 + 3 + 2) if use_dcn else 0)


def test_neck_structure_matches_original():
    neck = DLAUpNeck()
    # Stage ida_i of DLAUp merges the i + 2 deepest levels.
    assert [len(getattr(neck.dla_up, f'ida_{i}').up_1.weight)
            for i in range(3)] == [256, 128, 64]
    assert neck.dla_up.ida_0.proj_1.conv.in_channels == 512
    assert neck.dla_up.ida_1.proj_2.conv.in_channels == 256
    assert neck.dla_up.ida_2.proj_3.conv.in_channels == 128
    assert not hasattr(neck.dla_up, 'ida_3')
    assert neck.ida_up.proj_1.conv.in_channels == 128
    assert neck.ida_up.proj_2.conv.in_channels == 256
    assert neck.ida_up.up_2.kernel_size == (8, 8)
    assert neck.ida_up.up_2.stride == (4, 4)
    assert neck.ida_up.up_2.padding == (2, 2)
    assert neck.ida_up.up_2.groups == 64
    assert not hasattr(neck.ida_up, 'proj_3')


def test_bilinear_init_of_transposed_convs():
    by_hand = torch.tensor([0.25, 0.75, 0.75, 0.25])
    expected4 = torch.tensor(
        [[0.0625, 0.1875, 0.1875, 0.0625],
         [0.1875, 0.5625, 0.5625, 0.1875],
         [0.1875, 0.5625, 0.5625, 0.1875],
         [0.0625, 0.1875, 0.1875, 0.0625]])
    assert torch.equal(torch.outer(by_hand, by_hand), expected4)
    neck = DLAUpNeck()
    up = neck.dla_up.ida_0.up_1
    assert tuple(up.weight.shape) == (256, 1, 4, 4) and up.bias is None
    assert torch.equal(up.weight, expected4.expand(256, 1, 4, 4))
    taps8 = torch.tensor([1, 3, 5, 7, 7, 5, 3, 1]) / 8
    torch.testing.assert_close(neck.ida_up.up_2.weight[7, 0],
                               torch.outer(taps8, taps8), rtol=0, atol=1e-7)
    with torch.no_grad():
        # x2 bilinear upsampling keeps a constant map constant (inside).
        y = up(torch.ones(1, 256, 4, 4))
        assert tuple(y.shape) == (1, 256, 8, 8)
        torch.testing.assert_close(y[:, :, 1:-1, 1:-1],
                                   torch.ones(1, 256, 6, 6))
        assert y[0, 0, 0, 0].item() == pytest.approx(0.75 * 0.75)
    with pytest.raises(ValueError, match='even'):
        bilinear_kernel(3)


def test_dcn_init_starts_as_half_a_plain_conv():
    """Zero offsets and sigmoid(0) = 0.5 masks: DCNv2 at init, as CenterNet's
    DCN, is half of the same plain conv plus its (zero) bias."""
    block = DLAUpNeck().ida_up.node_1
    dcn = block.conv
    assert torch.count_nonzero(dcn.conv_offset.weight) == 0
    assert torch.count_nonzero(dcn.conv_offset.bias) == 0
    assert torch.count_nonzero(dcn.bias) == 0
    bound = 1 / (64 * 9)**0.5
    assert dcn.weight.abs().max() <= bound
    assert dcn.weight.std() > bound / 3  # really uniform over the range
    x = torch.rand(1, 64, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(
            dcn(x), 0.5 * F.conv2d(x, dcn.weight, dcn.bias, padding=1),
            rtol=1e-5, atol=1e-6)


def test_neck_bad_inputs_raise():
    feats = DLA()(torch.rand(1, 3, 64, 64))
    neck = DLAUpNeck(use_dcn=False)
    with pytest.raises(ValueError, match='6 backbone levels'):
        neck(feats[2:])
    with pytest.raises(ValueError, match='multiples of 32'):
        neck(feats[:5] + (feats[5][..., :1], ))
    with pytest.raises(ValueError, match=r'level 3 must be \[N, 128'):
        neck(feats[:3] + (feats[3][:, :64], ) + feats[4:])
    with pytest.raises(ValueError, match='out_channels'):
        DLAUpNeck(out_channels=32)
    with pytest.raises(ValueError, match='conv_cfg'):
        DLAUpNeck(use_dcn=True, conv_cfg=dict(type='Conv2d'))
    with pytest.raises(ValueError, match='last_level'):
        DLAUpNeck(last_level=2)


def test_other_levels_give_their_stride():
    neck = DLAUpNeck(first_level=3, last_level=5, out_channels=128,
                     use_dcn=False)
    out = neck(DLA()(torch.rand(1, 3, 64, 64)))[0]
    assert tuple(out.shape) == (1, 128, 8, 8)


def _neck_params_by_hand(use_dcn):
    """DLA-Up + IDA-Up parameter count, written out per layer."""

    def block(cin, cout):
        n = 9 * cin * cout + cout + 2 * cout  # 3x3 conv + bias, BN
        if use_dcn:
            n += 9 * cin * 27 + 27  # offset/mask conv: 3 * 3 * 3 outputs
        return n

    def up(c, f):
        return c * (2 * f)**2  # depthwise, no bias

    ida0 = block(512, 256) + up(256, 2) + block(256, 256)
    ida1 = 2 * (block(256, 128) + up(128, 2) + block(128, 128))
    ida2 = 3 * (block(128, 64) + up(64, 2) + block(64, 64))
    final = (block(128, 64) + up(64, 2) + block(64, 64) + block(256, 64) +
             up(64, 4) + block(64, 64))
    return ida0 + ida1 + ida2 + final


def test_dlaseg_parameter_count():
    model = DLASeg(use_dcn=True)
    n_neck = sum(p.numel() for p in model.neck.parameters())
    n_head = sum(p.numel() for p in model.head.parameters())
    n_all = sum(p.numel() for p in model.parameters())
    assert n_neck == _neck_params_by_hand(True) == 3_940_336
    # Three 64 -> 256 -> {3, 2, 2} heads with biases.
    assert n_head == 3 * (9 * 64 * 256 + 256) + 256 * 7 + 7 == 444_935
    assert n_all == 15_270_832 + n_neck + n_head == 19_656_103
    assert 19.6e6 < n_all < 20.2e6
    assert sum(p.numel() for p in DLAUpNeck(use_dcn=False).parameters()) \
        == _neck_params_by_hand(False)


def test_macs_hook_counter_agrees_with_mmengine():
    """Our conv MAC counting, checked by mmengine's tracer (no DCN: it
    cannot trace mmcv's op)."""
    model = DLASeg(use_dcn=False).eval()
    x = torch.rand(1, 3, 64, 128)
    macs, _ = count_macs(model, x)
    flops = FlopAnalyzer(model, x)
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    assert flops.by_operator()['conv'] == macs


def test_dlaseg_macs_scale_with_pixels():
    """Every layer of the model outputs H/s x W/s for H, W multiples of 32,
    so MACs are linear in pixels: 384x1280 has exactly 60x the MACs of
    64x128."""
    model = DLASeg(use_dcn=True).eval()
    macs, ran = count_macs(model, torch.rand(1, 3, 64, 128))
    assert macs * 60 == 61_330_636_800
    conv_like = [m for m in model.modules() if isinstance(
        m, (nn.Conv2d, nn.ConvTranspose2d, ModulatedDeformConv2dPack))]
    never_ran = [m for m in conv_like if m not in ran]
    # Only the two dead project convs of DLA-34 do not run.
    assert never_ran == [model.backbone.level3.project[0],
                         model.backbone.level4.project[0]]
    assert len(ran) == len(conv_like) - 2


def test_dlaseg_macs_at_kitti_resolution():
    model = DLASeg(use_dcn=True).eval()
    start = time.perf_counter()
    macs, _ = count_macs(model, torch.rand(1, 3, 384, 1280))
    seconds = time.perf_counter() - start
    print(f'DLASeg MACs at 384x1280: {macs / 1e9:.3f} G in {seconds:.1f} s')
    assert macs == 61_330_636_800


def test_builds_as_mmdet_centernet_and_keeps_backbone_outputs():
    detector = MODELS.build(
        dict(
            type='CenterNet',
            backbone=dict(type='DLA', depth=34),
            neck=dict(type='DLAUpNeck', use_dcn=True),
            bbox_head=dict(type='CenterNetHead', in_channels=64,
                           feat_channels=256, num_classes=3),
            test_cfg=dict(topk=10, local_maximum_kernel=3, max_per_img=10)))
    detector.init_weights()
    # init_weights keeps the bilinear upsamplers and zero offset convs.
    up = detector.neck.ida_up.up_1.weight
    assert torch.equal(up[0, 0], bilinear_kernel(4))
    assert torch.count_nonzero(
        detector.neck.ida_up.node_1.conv.conv_offset.weight) == 0
    detector.eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        feats = detector.backbone(x)
        copies = [f.clone() for f in feats]
        detector.neck(feats)
        heatmaps, whs, offsets = detector(x, mode='tensor')
    assert all(torch.equal(a, b) for a, b in zip(feats, copies))
    assert tuple(heatmaps[0].shape) == (1, 3, 16, 24)
    assert tuple(whs[0].shape) == tuple(offsets[0].shape) == (1, 2, 16, 24)
