"""Tests of the DLA-34 backbone: shapes, freezing, size, pretrained loading."""
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmcv.cnn.bricks import Conv2dAdaptivePadding
from mmdet.registry import MODELS

from mmprune.models.backbones import (
    DLA,
    load_dla_checkpoint,
    map_timm_dla_keys,
)
from mmprune.models.backbones.dla import dla_dead_keys

DLA34_CHANNELS = (16, 32, 64, 128, 256, 512)
# The two project branches the original builds but never runs.
DEAD_PREFIXES = ('level3.project.', 'level4.project.')


def _randomised(model):
    """Fill every parameter and float buffer with distinct random values."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.fill_(7)
    return model


def test_registered_and_output_shapes_and_strides():
    model = MODELS.build(dict(type='DLA', depth=34))
    assert isinstance(model, DLA)
    outs = model(torch.rand(1, 3, 64, 128))
    assert [tuple(o.shape) for o in outs] == [
        (1, 16, 64, 128), (1, 32, 32, 64), (1, 64, 16, 32), (1, 128, 8, 16),
        (1, 256, 4, 8), (1, 512, 2, 4)
    ]
    assert model.channels == DLA34_CHANNELS
    assert model.strides == (1, 2, 4, 8, 16, 32)
    assert model.out_channels == DLA34_CHANNELS
    assert model.out_strides == (1, 2, 4, 8, 16, 32)
    for i, out in enumerate(outs):
        assert 64 // out.shape[2] == model.strides[i]
        assert 128 // out.shape[3] == model.strides[i]


@pytest.mark.parametrize('out_indices', [(2, 3, 4, 5), (1, ), (0, 3)])
def test_out_indices_subsets(out_indices):
    model = DLA(out_indices=out_indices)
    ran = []
    for i in range(6):
        getattr(model, f'level{i}').register_forward_hook(
            lambda m, inp, out, i=i: ran.append(i))
    outs = model(torch.rand(1, 3, 64, 128))
    assert len(outs) == len(out_indices)
    for out, i in zip(outs, out_indices):
        assert tuple(out.shape) == (1, DLA34_CHANNELS[i], 64 >> i, 128 >> i)
    assert model.out_channels == tuple(DLA34_CHANNELS[i] for i in out_indices)
    assert model.out_strides == tuple(2**i for i in out_indices)
    assert [f['reduction'] for f in model.feature_info] == \
        [2**i for i in out_indices]
    assert [f['module'] for f in model.feature_info] == \
        [f'level{i}' for i in out_indices]
    # Levels deeper than the last requested one are not computed.
    assert ran == list(range(max(out_indices) + 1))


def test_same_output_as_full_run_for_subset():
    torch.manual_seed(0)
    full = DLA().eval()
    sub = DLA(out_indices=(1, 4)).eval()
    sub.load_state_dict(full.state_dict())
    x = torch.rand(1, 3, 64, 64)
    out_full, out_sub = full(x), sub(x)
    torch.testing.assert_close(out_sub[0], out_full[1], rtol=0, atol=0)
    torch.testing.assert_close(out_sub[1], out_full[4], rtol=0, atol=0)


def test_bad_arguments_raise():
    with pytest.raises(KeyError, match=r'depth=50.*\[34\]'):
        DLA(depth=50)
    for bad in [(), (6, ), (3, 1), (1, 1), (-1, )]:
        with pytest.raises(ValueError, match='out_indices'):
            DLA(out_indices=bad)
    with pytest.raises(ValueError, match='frozen_stages'):
        DLA(frozen_stages=6)
    with pytest.raises(ValueError, match=r'\[N, 3, H, W\]'):
        DLA()(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r'multiples of 32.*\(48, 64\)'):
        DLA()(torch.rand(1, 3, 48, 64))
    # Only levels up to 3 run: multiples of 8 are enough.
    assert DLA(out_indices=(3, ))(torch.rand(1, 3, 40, 24))[0].shape[2:] == \
        (5, 3)


def test_frozen_stages_freeze_what_they_say():
    model = DLA(frozen_stages=2)
    model.train()
    frozen = ['base_layer', 'level0', 'level1', 'level2']
    for name, module in model.named_children():
        is_frozen = name in frozen
        assert all(p.requires_grad != is_frozen
                   for p in module.parameters()), name
        assert all(m.training != is_frozen for m in module.modules()), name
    # Frozen BN keeps its running stats in train mode; trainable BN updates.
    frozen_bn = model.level2.tree1.bn1
    live_bn = model.level3.tree1.tree1.bn1
    frozen_mean = frozen_bn.running_mean.clone()
    live_mean = live_bn.running_mean.clone()
    outs = model(torch.rand(2, 3, 32, 32))
    sum(o.sum() for o in outs).backward()
    assert torch.equal(frozen_bn.running_mean, frozen_mean)
    assert not torch.equal(live_bn.running_mean, live_mean)
    assert model.level2.tree1.conv1.weight.grad is None
    assert model.base_layer[0].weight.grad is None
    assert model.level3.tree1.tree1.conv1.weight.grad is not None


def test_frozen_stages_minus_one_and_norm_eval():
    model = DLA(frozen_stages=-1, norm_eval=True)
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 39
    assert not any(bn.training for bn in bns)
    assert model.level5.tree1.conv1.training
    model = DLA(norm_eval=False).train()
    assert all(bn.training for bn in model.modules()
               if isinstance(bn, nn.BatchNorm2d))


def test_conv_cfg_and_norm_cfg_reach_every_layer():
    model = DLA(conv_cfg=dict(type='Conv2dAdaptivePadding'),
                norm_cfg=dict(type='GN', num_groups=8))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 39
    assert all(isinstance(m, Conv2dAdaptivePadding) for m in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == 39
    outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[2] for o in outs] == [64, 32, 16, 8, 4, 2]


def _dla34_params_by_hand():
    """DLA-34 parameter count from its structure, layer by layer."""

    def conv(k, cin, cout):
        return k * k * cin * cout

    def bn(c):
        return 2 * c

    def basic(cin, cout):
        return conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + bn(cout)

    def root(cin, cout):
        return conv(1, cin, cout) + bn(cout)

    def project(cin, cout):
        return conv(1, cin, cout) + bn(cout)

    total = conv(7, 3, 16) + bn(16)  # base_layer
    total += conv(3, 16, 16) + bn(16)  # level0
    total += conv(3, 16, 32) + bn(32)  # level1
    # level2: depth-1 tree 32 -> 64, root over [tree2, tree1] = 128 channels
    total += basic(32, 64) + basic(64, 64) + root(128, 64) + project(32, 64)
    # level3: depth-2 tree 64 -> 128, level root. Its tree1 is a depth-1 tree
    # (root 256 -> 128); its tree2 roots over [tree2, tree1, level3.tree1,
    # pooled input] = 128 + 128 + 128 + 64 = 448 channels.
    total += basic(64, 128) + basic(128, 128) + root(256, 128) \
        + project(64, 128)
    total += basic(128, 128) + basic(128, 128) + root(448, 128)
    total += project(64, 128)  # level3.project, built but never run
    # level4: same pattern, 128 -> 256; tree2 root: 3 * 256 + 128 = 896.
    total += basic(128, 256) + basic(256, 256) + root(512, 256) \
        + project(128, 256)
    total += basic(256, 256) + basic(256, 256) + root(896, 256)
    total += project(128, 256)  # level4.project, built but never run
    # level5: depth-1 tree 256 -> 512, level root: 512 + 512 + 256 = 1280.
    total += basic(256, 512) + basic(512, 512) + root(1280, 512) \
        + project(256, 512)
    return total


def test_parameter_count():
    model = DLA()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == _dla34_params_by_hand() == 15_270_832
    dead = sum(p.numel() for n, p in model.named_parameters()
               if n.startswith(DEAD_PREFIXES))
    assert dead == 41_728
    # timm reports 15.74 M for dla34: ours without the dead projects plus
    # its 512 -> 1000 1x1-conv classifier.
    assert n_params - dead + 512 * 1000 + 1000 == 15_742_104


def test_dead_keys_are_the_two_unused_projects():
    dead = dla_dead_keys(DLA())
    assert len(dead) == 2 * 6  # conv w; bn w, b, mean, var, num_batches
    assert all(k.startswith(DEAD_PREFIXES) for k in dead)


def _to_timm_naming(state_dict):
    """Our state dict in timm's dla34 naming, written independently.

    timm's DLA keeps the original attribute names (``DlaTree.tree1/tree2/
    root/project``, ``DlaBasic.conv1/bn1``, ``DlaRoot.conv/bn``), but builds
    ``project`` only in depth-1 trees and adds a 1x1-conv classifier ``fc``.
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        if re.match(r'level[34]\.project\.', key):
            continue
        out[key] = value.clone()
    out['fc.weight'] = torch.rand(1000, 512, 1, 1)
    out['fc.bias'] = torch.rand(1000)
    return out


def test_map_timm_keys_drops_classifier_only():
    src = _to_timm_naming(DLA().state_dict())
    mapped = map_timm_dla_keys(src)
    assert set(src) - set(mapped) == {'fc.weight', 'fc.bias'}
    assert all(mapped[k] is src[k] for k in mapped)


def test_pretrained_timm_checkpoint_loads_through_init_cfg(tmp_path):
    source = _randomised(DLA())
    path = tmp_path / 'timm_dla34.pth'
    torch.save(_to_timm_naming(source.state_dict()), path)

    model = MODELS.build(
        dict(type='DLA', init_cfg=dict(type='Pretrained',
                                       checkpoint=str(path))))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()
    src_sd, new_sd = source.state_dict(), model.state_dict()
    dead = set(dla_dead_keys(model))
    for key in new_sd:
        if key in dead:
            assert torch.equal(new_sd[key], before[key]), key
        else:
            assert torch.equal(new_sd[key], src_sd[key]), key
    source.eval()
    model.eval()
    x = torch.rand(1, 3, 32, 32)
    for a, b in zip(source(x), model(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pretrained_original_checkpoint_loads_every_key(tmp_path):
    source = _randomised(DLA())
    # The original ImageNet file: every backbone key, the fc classifier,
    # and (pre-1.0 PyTorch) no num_batches_tracked.
    sd = OrderedDict((k, v) for k, v in source.state_dict().items()
                     if not k.endswith('num_batches_tracked'))
    sd['fc.weight'] = torch.rand(1000, 512, 1, 1)
    sd['fc.bias'] = torch.rand(1000)
    path = tmp_path / 'dla34-orig.pth'
    torch.save({'state_dict': OrderedDict(
        ('module.' + k, v) for k, v in sd.items())}, path)
    model = DLA()
    missing = load_dla_checkpoint(model, str(path))
    assert all(k.endswith('num_batches_tracked') for k in missing)
    new_sd = model.state_dict()
    for key, value in sd.items():
        if not key.startswith('fc.'):
            assert torch.equal(new_sd[key], value), key


def test_pretrained_prefix_selects_backbone_of_detector(tmp_path):
    source = _randomised(DLA())
    sd = OrderedDict(('base.' + k, v) for k, v in source.state_dict().items())
    sd['dla_up.ida_0.proj_1.conv.weight'] = torch.rand(256, 512, 3, 3)
    path = tmp_path / 'ctdet.pth'
    torch.save({'state_dict': sd}, path)
    model = DLA(init_cfg=dict(type='Pretrained', checkpoint=str(path),
                              prefix='base.'))
    model.init_weights()
    for key, value in model.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    with pytest.raises(KeyError, match=r"235 keys.*start with \['base\.'\]"):
        load_dla_checkpoint(DLA(), str(path))  # no prefix: foreign keys
    with pytest.raises(KeyError, match="prefix 'head.'"):
        load_dla_checkpoint(DLA(), str(path), prefix='head.')


def test_pretrained_bad_checkpoints_raise(tmp_path):
    sd = DLA().state_dict()
    short = OrderedDict(
        (k, v) for k, v in sd.items() if not k.startswith('level5.root.'))
    torch.save(short, tmp_path / 'missing.pth')
    with pytest.raises(KeyError, match=r'missing.*level5\.root\.'):
        load_dla_checkpoint(DLA(), str(tmp_path / 'missing.pth'))

    wrong = OrderedDict(sd)
    wrong['level1.0.weight'] = torch.rand(64, 16, 3, 3)
    torch.save(wrong, tmp_path / 'shape.pth')
    with pytest.raises(ValueError, match=r'level1\.0\.weight.*\(64, 16'):
        load_dla_checkpoint(DLA(), str(tmp_path / 'shape.pth'))

    with pytest.raises(KeyError, match="needs a 'checkpoint'"):
        DLA(init_cfg=dict(type='Pretrained')).init_weights()
    with pytest.raises(KeyError, match='unknown keys'):
        DLA(init_cfg=dict(type='Pretrained', checkpoint='x.pth',
                          strict=True)).init_weights()


def test_pretrained_in_init_cfg_list_overrides_other_inits(tmp_path):
    source = _randomised(DLA())
    path = tmp_path / 'dla34.pth'
    torch.save(source.state_dict(), path)
    model = DLA(init_cfg=[
        dict(type='Constant', val=3.0, layer='BatchNorm2d'),
        dict(type='Pretrained', checkpoint=str(path)),
    ])
    model.init_weights()
    for key, value in model.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    # Without the checkpoint the constant init does apply.
    model = DLA(init_cfg=[dict(type='Constant', val=3.0, layer='BatchNorm2d')])
    model.init_weights()
    assert torch.all(model.level5.root.bn.weight == 3.0)
