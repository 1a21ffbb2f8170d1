"""DCNv2Torch: mmcv's DCNv2 layer with the torch CPU forward."""
import pytest
import torch
from mmcv.ops import ModulatedDeformConv2dPack
from mmdet.registry import MODELS

from mmprune.models.layers import ModulatedDeformConv2dPackTorch, use_torch_dcn
from mmprune.models.necks import DLAUpNeck


def _pair(seed=0, **kw):
    torch.manual_seed(seed)
    ref = ModulatedDeformConv2dPack(6, 5, 3, padding=1, **kw)
    # Non-zero offset conv: the zero init would make it a plain conv.
    torch.nn.init.normal_(ref.conv_offset.weight, std=0.3)
    torch.nn.init.normal_(ref.conv_offset.bias, std=0.5)
    ours = MODELS.build(dict(type='DCNv2Torch', in_channels=6,
                             out_channels=5, kernel_size=3, padding=1, **kw))
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize('kw', [{}, dict(deform_groups=2), dict(stride=2)])
def test_same_layer_as_mmcv_dcnv2(kw):
    ref, ours = _pair(**kw)
    assert isinstance(ours, ModulatedDeformConv2dPackTorch)
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 6, 10, 12)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    # Same init: zero offset conv, so a fresh layer starts as a plain conv.
    fresh = ModulatedDeformConv2dPackTorch(6, 5, 3, padding=1)
    assert not fresh.conv_offset.weight.any()


def test_trains_like_mmcv():
    ref, ours = _pair()
    x = torch.randn(1, 6, 8, 8)
    for m in (ref, ours):
        m(x).square().sum().backward()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=2e-4, rtol=1e-4,
                                   msg=name)


def test_use_torch_dcn_switches_mmcv_layers_in_place():
    torch.manual_seed(0)
    neck = DLAUpNeck(dcn_cfg=dict(type='DCNv2'))
    for m in neck.modules():
        if isinstance(m, ModulatedDeformConv2dPack):
            torch.nn.init.normal_(m.conv_offset.weight, std=0.05)
    neck.eval()
    feats = [torch.randn(1, c, 64 // 2**i, 64 // 2**i)
             for i, c in enumerate((16, 32, 64, 128, 256, 512))]
    before = neck(feats)[0]
    assert use_torch_dcn(neck) == 16
    assert use_torch_dcn(neck) == 0  # nothing left to switch
    kinds = {type(m) for m in neck.modules()
             if isinstance(m, ModulatedDeformConv2dPack)}
    assert kinds == {ModulatedDeformConv2dPackTorch}
    torch.testing.assert_close(neck(feats)[0], before, atol=1e-4, rtol=1e-4)


def test_neck_builds_the_configured_dcn():
    assert isinstance(DLAUpNeck().dla_up.ida_0.proj_1.conv,
                      ModulatedDeformConv2dPackTorch)
    assert type(DLAUpNeck(dcn_cfg=dict(type='DCNv2')).ida_up.node_1.conv) \
        is ModulatedDeformConv2dPack
    with pytest.raises(ValueError, match=r"dcn_cfg must build a deformable "
                       r"conv .* got Conv2d"):
        DLAUpNeck(dcn_cfg=dict(type='Conv2d'))
    with pytest.raises(KeyError, match="'NoSuchDCN' is not registered"):
        DLAUpNeck(dcn_cfg=dict(type='NoSuchDCN'))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_runs_mmcv_kernel_with_the_same_result():
    _, ours = _pair()
    x = torch.randn(2, 6, 10, 12)
    cpu = ours(x)
    gpu = ours.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)
