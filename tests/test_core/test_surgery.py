"""Physical channel surgery (mmprune.core.surgery)."""

import copy
import json

import pytest
import torch
from torch import nn

from mmprune.core import CostModel, discover_groups, install_masks
from mmprune.core.plan import Segment
from mmprune.core.surgery import (
    ChannelSpec,
    ModuleChannels,
    apply_channel_spec,
    channel_spec,
    kept_positions,
    prune_model,
    register_channel_slicer,
)

from .nets import count_macs, randomise, slice_model
from .test_cost import CASES, binaries_for

X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))


def flat(out):
    return (
        torch.cat([o.flatten() for o in out]) if isinstance(out, list) else out
    )


@pytest.mark.parametrize('case', sorted(CASES))
def test_pruned_model_equals_masked_model(case):
    net_cls, keep, dense, pruned = CASES[case]
    net = randomise(net_cls())
    plan = discover_groups(net, X)
    b = binaries_for(plan, keep)
    ms = install_masks(net, plan)
    ms.freeze(b)
    masked = flat(net(X))
    ms.remove()
    dense_out = flat(net(X))
    small = copy.deepcopy(net)
    spec = prune_model(small, plan, b)
    out = flat(small(X))
    assert torch.allclose(out, masked, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, dense_out, atol=1e-3)
    # Independent MAC count by forward hooks on the real module shapes.
    assert count_macs(small, X) == pruned == CostModel(plan).macs(b).item()
    # Same tensors as the test suite's own plan-driven slicer.
    ref = slice_model(net, plan, b).state_dict()
    got = small.state_dict()
    assert list(got) == list(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    # Every module of the spec really lost channels, the rest is untouched.
    for name, mc in spec.modules.items():
        assert mc.in_kept is not None or mc.out_kept is not None
    assert set(spec.modules) <= set(plan.layers)


def test_mask_hooks_must_be_removed_first():
    net = randomise(CASES['chain'][0]())
    plan = discover_groups(net, X)
    b = binaries_for(plan, CASES['chain'][1])
    ms = install_masks(net, plan)
    with pytest.raises(RuntimeError, match='still carries a mask hook'):
        prune_model(copy.deepcopy(net), plan, b)
    ms.remove()
    prune_model(net, plan, b)
    assert net.b1[0].out_channels == 5


def test_depthwise_and_deconv_attributes():
    from .nets import DWUpsample

    net = randomise(DWUpsample())
    plan = discover_groups(net, X)
    small = copy.deepcopy(net)
    prune_model(small, plan, binaries_for(plan, {'stem.0': [2, 3, 7]}))
    up = small.up
    assert (up.in_channels, up.out_channels, up.groups) == (3, 3, 3)
    assert up.weight.shape == (3, 1, 4, 4)
    assert torch.equal(up.weight, net.up.weight[[2, 3, 7]])
    bn = small.up_bn
    assert bn.num_features == 3
    assert torch.equal(bn.running_var, net.up_bn.running_var[[2, 3, 7]])
    assert small.head.in_channels == 3


def test_dcn_slices_main_weight_and_offset_inputs():
    pytest.importorskip('mmcv.ops')
    from .nets import DCNBlock

    net = randomise(DCNBlock())
    plan = discover_groups(net, X)
    keep = {'stem.0': [0, 3, 5, 6], 'dcn': [1, 2, 4]}
    small = copy.deepcopy(net)
    spec = prune_model(small, plan, binaries_for(plan, keep))
    d = small.dcn
    assert (d.in_channels, d.out_channels) == (4, 3)
    assert torch.equal(d.weight, net.dcn.weight[[1, 2, 4]][:, [0, 3, 5, 6]])
    assert torch.equal(d.bias, net.dcn.bias[[1, 2, 4]])
    # The offset conv reads the same kept inputs; its 27 outputs stay.
    off = d.conv_offset
    assert (off.in_channels, off.out_channels) == (4, 27)
    assert torch.equal(off.weight, net.dcn.conv_offset.weight[:, [0, 3, 5, 6]])
    assert spec.modules['dcn.conv_offset'].out_kept is None


def test_no_pruned_channel_leaves_the_model_alone():
    net = randomise(CASES['concat'][0]())
    plan = discover_groups(net, X)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = {k: p for k, p in net.named_parameters()}
    spec = prune_model(net, plan, CostModel(plan).ones())
    assert spec.modules == {}
    after = net.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(p is params[k] for k, p in net.named_parameters())


def test_spec_json_round_trip_on_a_fresh_model(tmp_path):
    net_cls, keep, _, _ = CASES['concat']
    net = randomise(net_cls(), seed=0)
    plan = discover_groups(net, X)
    b = binaries_for(plan, keep)
    small = copy.deepcopy(net)
    spec = prune_model(small, plan, b)
    spec.meta['psi'] = 0.25
    path = tmp_path / 'channels.json'
    spec.save(str(path))
    loaded = ChannelSpec.load(str(path))
    assert loaded.to_dict() == spec.to_dict()
    assert loaded.meta == {'psi': 0.25}
    assert loaded.widths()['fuse.0'] == (5, 4)
    # A freshly built net (other random weights) takes the small state dict.
    fresh = randomise(net_cls(), seed=7)
    apply_channel_spec(fresh, loaded)
    fresh.load_state_dict(small.state_dict())
    assert torch.equal(fresh(X), small(X))
    # A width-only spec gives the same shapes.
    d = json.loads(path.read_text())
    for m in d['modules'].values():
        for axis in ('in', 'out'):
            if m[f'{axis}_kept'] is not None:
                m[f'{axis}_kept'] = len(m[f'{axis}_kept'])
    widths_only = ChannelSpec.from_dict(d)
    other = apply_channel_spec(net_cls(), widths_only)
    assert {k: v.shape for k, v in other.state_dict().items()} == {
        k: v.shape for k, v in small.state_dict().items()
    }


def test_requires_grad_flags_survive():
    net = randomise(CASES['chain'][0]())
    net.b1[1].weight.requires_grad_(False)
    net.b1[0].weight.requires_grad_(False)
    plan = discover_groups(net, X)
    prune_model(net, plan, binaries_for(plan, CASES['chain'][1]))
    assert net.b1[0].weight.shape[0] == 5
    assert not net.b1[0].weight.requires_grad
    assert not net.b1[1].weight.requires_grad
    assert net.b1[1].bias.requires_grad and net.b2[0].weight.requires_grad


class NormNet(nn.Module):
    """conv 3->6, GroupNorm(6, 6); conv 6->4, InstanceNorm(4, stats); head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.gn = nn.GroupNorm(6, 6)
        self.c2 = nn.Conv2d(6, 4, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(4, affine=True,
                                       track_running_stats=True)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = torch.relu(self.gn(self.c1(x)))
        return self.head(torch.relu(self.inorm(self.c2(x))))


def test_groupnorm_and_instancenorm():
    net = NormNet()
    with torch.no_grad():
        net.inorm.running_mean.copy_(torch.randn(4))
        net.inorm.running_var.copy_(torch.rand(4) + 0.5)
        net.gn.weight.copy_(torch.randn(6))
        net.gn.bias.copy_(torch.randn(6))
        net.inorm.bias.copy_(torch.randn(4))
    net.eval()
    plan = discover_groups(net, X)
    assert set(plan.groups) == {'c1', 'c2'}
    b = binaries_for(plan, {'c1': [0, 2, 3], 'c2': [1, 3]})
    ms = install_masks(net, plan)
    ms.freeze(b)
    masked = net(X)
    ms.remove()
    small = copy.deepcopy(net)
    prune_model(small, plan, b)
    assert (small.gn.num_groups, small.gn.num_channels) == (3, 3)
    assert small.inorm.num_features == 2
    assert torch.equal(small.inorm.running_mean,
                       net.inorm.running_mean[[1, 3]])
    assert torch.allclose(small(X), masked, atol=1e-5)


def test_spec_that_does_not_fit_is_refused():
    net = randomise(CASES['chain'][0]())
    plan = discover_groups(net, X)
    spec = channel_spec(plan, binaries_for(plan, CASES['chain'][1]))
    wrong = copy.deepcopy(spec)
    wrong.modules['b1.1'].type = 'GroupNorm'
    wrong.modules['nope'] = ModuleChannels('Conv2d', 'conv', 3, 8, None, [0])
    wrong.modules['b2.0'].in_total = 7
    with pytest.raises(ValueError) as e:
        apply_channel_spec(net, wrong)
    msg = str(e.value)
    assert 'b1.1: spec says GroupNorm, model has BatchNorm2d' in msg
    assert 'nope: no such module' in msg
    assert 'b2.0: spec expects 7 -> 6 channels, model has 8 -> 6' in msg
    # Nothing was sliced.
    assert net.b1[0].out_channels == 8


def test_bad_spec_files(tmp_path):
    p = tmp_path / 'c.json'
    p.write_text('{"format": "mmprune.channels/1",\n "modules": {,}}')
    with pytest.raises(ValueError, match=r'c.json:2: not valid JSON'):
        ChannelSpec.load(str(p))
    with pytest.raises(ValueError, match='format'):
        ChannelSpec.from_dict({'modules': {}})
    bad = {
        'format': 'mmprune.channels/1',
        'modules': {
            'x': dict(type='Conv2d', kind='conv', in_total=4, out_total=4,
                      in_kept=[2, 1], out_kept=None)
        },
    }
    with pytest.raises(ValueError, match=r"modules\['x'\].in_kept"):
        ChannelSpec.from_dict(bad)
    bad['modules']['x']['in_kept'] = 5
    with pytest.raises(ValueError, match=r'\[1, 4\]'):
        ChannelSpec.from_dict(bad)


def test_unprunable_layers_raise():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.LayerNorm(4))
    spec = ChannelSpec({  # conv group 0 keeps both, group 1 none
        '0': ModuleChannels('Conv2d', 'conv', 4, 4, None, [0, 1]),
    })
    with pytest.raises(ValueError, match=r'cannot slice 0 .*groups=2.*same '
                       'positions in every conv group'):
        apply_channel_spec(net, spec)
    spec = ChannelSpec({
        '1': ModuleChannels('LayerNorm', 'norm', 4, 4, [0], [0]),
    })
    with pytest.raises(ValueError, match='LayerNorm normalises'):
        apply_channel_spec(net, spec)


class Scale(nn.Module):
    """A per-channel scale the surgery does not know."""

    def __init__(self, c):
        super().__init__()
        self.num_features = c
        self.w = nn.Parameter(torch.arange(1.0, c + 1))

    def forward(self, x):
        return x * self.w.view(1, -1, 1, 1)


def test_unknown_types_need_a_registered_slicer():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), Scale(4))
    spec = ChannelSpec({'1': ModuleChannels('Scale', 'norm', 4, 4, [1, 2],
                                            [1, 2])})
    with pytest.raises(ValueError, match='no channel slicer for Scale'):
        apply_channel_spec(net, spec)

    def slice_scale(m, in_kept, out_kept):
        m.w = nn.Parameter(m.w.detach()[out_kept].clone())
        m.num_features = len(out_kept)

    register_channel_slicer(Scale, slice_scale)
    try:
        apply_channel_spec(net, spec)
        assert net[1].w.tolist() == [2.0, 3.0]
    finally:
        from mmprune.core import slicers

        slicers._SLICERS.pop()


def test_kept_positions_follow_segments():
    cmap = (Segment('a', 2, 3), Segment(None, 0, 2), Segment('b', 0, 2))
    keep = {'a': [0, 2, 4, 5], 'b': [1]}
    # a channels 2, 4 sit at positions 0, 2; fixed 3, 4; b channel 1 -> 6.
    assert kept_positions(cmap, keep) == [0, 2, 3, 4, 6]
    with pytest.raises(KeyError, match="group 'b'"):
        kept_positions(cmap, {'a': [2]})


def test_binaries_must_be_valid():
    plan = discover_groups(CASES['chain'][0](), X)
    with pytest.raises(KeyError, match='missing'):
        channel_spec(plan, {'b1.0': torch.ones(8)})
    b = binaries_for(plan, CASES['chain'][1])
    b['b2.0'] = torch.zeros(6)
    with pytest.raises(ValueError, match="group 'b2.0' keeps no channel"):
        channel_spec(plan, b)
    b['b2.0'] = torch.full((6,), 0.5)
    with pytest.raises(ValueError, match='other than 0 and 1'):
        channel_spec(plan, b)
