"""Channel-group discovery on hand-built nets."""

import pytest
import torch
from torch import nn

from mmprune.core import (
    CostModel,
    Segment,
    Slot,
    discover_groups,
    install_masks,
    layer_registry,
)
from mmprune.core import groups as groups_mod

from .nets import (
    Chain,
    Concat,
    DCNBlock,
    DWSeparable,
    DWUpsample,
    Residual,
    SharedHead,
    cbr,
    randomise,
)

X = torch.rand(1, 3, 8, 8)


def modules(slots):
    return sorted(s.module for s in slots)


def test_chain_groups_sites_and_output_layer():
    plan = discover_groups(Chain(), X)
    assert list(plan.groups) == ['b1.0', 'b2.0']
    g = plan.groups['b1.0']
    assert g.size == 8
    assert modules(g.producers) == ['b1.0', 'b1.1']
    assert g.consumers == [Slot('b2.0', 0, 0, 8)]
    assert g.sites == [Slot('b1.1', 0, 0, 8)]  # after the BN, not the conv
    # The head reaches the output directly: its width is kept automatically.
    assert plan.layers['head'].out_map == (Segment(None, 0, 4),)
    assert plan.layers['head'].in_map == (Segment('b2.0', 0, 6),)
    assert plan.unsupported == []
    assert plan.layers['b1.0'].positions == 64
    assert plan.input_shapes == [(1, 3, 8, 8)]


def test_residual_add_is_one_group():
    plan = discover_groups(Residual(), X)
    assert list(plan.groups) == ['stem.0', 'c1.0']
    g = plan.groups['stem.0']
    assert modules(g.producers) == ['bn2', 'c2', 'stem.0', 'stem.1']
    assert modules(g.consumers) == ['c1.0', 'head']
    assert modules(g.sites) == ['bn2', 'stem.1']


def test_concat_maps_slices():
    plan = discover_groups(Concat(), X)
    assert list(plan.groups) == ['a.0', 'b.0', 'fuse.0']
    assert plan.groups['a.0'].consumers == [Slot('fuse.0', 0, 0, 4)]
    assert plan.groups['b.0'].consumers == [Slot('fuse.0', 4, 0, 6)]
    assert plan.layers['fuse.0'].in_map == (
        Segment('a.0', 0, 4),
        Segment('b.0', 0, 6),
    )


def test_concat_of_one_group_twice_and_csp_style_split_paths():
    class CSP(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = cbr(3, 8)
            self.main = cbr(8, 4, k=1)
            self.short = cbr(8, 4, k=1)
            self.final = nn.Conv2d(16, 2, 1)

        def forward(self, x):
            x = self.stem(x)
            return self.final(torch.cat([self.main(x), x, self.short(x)], 1))

    plan = discover_groups(CSP(), X)
    assert plan.layers['final'].in_map == (
        Segment('main.0', 0, 4),
        Segment('stem.0', 0, 8),
        Segment('short.0', 0, 4),
    )
    assert Slot('final', 4, 0, 8) in plan.groups['stem.0'].consumers


def test_depthwise_conv_shares_its_group():
    plan = discover_groups(DWSeparable(), X)
    assert list(plan.groups) == ['stem.0', 'pw.0']
    g = plan.groups['stem.0']
    assert modules(g.producers) == ['dw', 'dw_bn', 'stem.0', 'stem.1']
    assert modules(g.consumers) == ['dw', 'pw.0']
    # The depthwise conv reads its input per channel, so the one mask after
    # its BN suffices.
    assert modules(g.sites) == ['dw_bn']
    assert plan.layers['dw'].depthwise


def test_depthwise_transposed_conv():
    plan = discover_groups(DWUpsample(), X)
    up = plan.layers['up']
    assert (up.kind, up.depthwise, up.positions) == ('deconv', True, 64)
    assert up.in_map == up.out_map == (Segment('stem.0', 0, 8),)
    assert plan.layers['head'].positions == 256


def test_shared_head_unifies_levels_and_sums_positions():
    plan = discover_groups(SharedHead(), X)
    assert list(plan.groups) == ['l0', 'head']
    assert modules(plan.groups['l0'].producers) == ['l0', 'l1']
    head = plan.layers['head']
    assert (head.calls, head.positions) == (2, 64 + 16)
    assert plan.layers['cls'].out_map == (Segment(None, 0, 2),)
    assert modules(plan.groups['l0'].sites) == ['l0', 'l1']


def test_modulated_deform_conv():
    plan = discover_groups(DCNBlock(), X)
    assert list(plan.groups) == ['stem.0', 'dcn']
    off = plan.layers['dcn.conv_offset']
    assert off.in_map == (Segment('stem.0', 0, 8),)
    assert off.out_map == (Segment(None, 0, 27),)  # 3 * 3*3 offsets + masks
    assert modules(plan.groups['stem.0'].consumers) == [
        'dcn',
        'dcn.conv_offset',
    ]
    assert plan.layers['dcn'].type == 'ModulatedDeformConv2dPack'
    assert modules(plan.groups['dcn'].sites) == ['bn']
    assert plan.unsupported == []


def dcn_block(kind, deform_groups):
    """stem 3->8 - BN - ReLU -> deformable conv 8->6 - BN - ReLU -> head."""
    if kind == 'torch':
        from mmprune.models.layers.deform_conv import (
            ModulatedDeformConv2dPackTorch as DCN,
        )
    else:
        from mmcv import ops

        DCN = getattr(ops, kind)
    return nn.Sequential(
        cbr(3, 8),
        DCN(8, 6, 3, padding=1, deform_groups=deform_groups),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 2, 1),
    )


@pytest.mark.parametrize(
    'kind',
    ['ModulatedDeformConv2dPack', 'DeformConv2dPack', 'torch'],
)
def test_deform_groups_keep_the_dcn_input(kind):
    """The offset groups split a DCN's input channels, so export cannot
    prune them: with deform_groups > 1 they are kept from the start."""
    from mmprune.core import prune_model

    plan = discover_groups(dcn_block(kind, 1), X)
    assert list(plan.groups) == ['0.0', '1']
    net = randomise(dcn_block(kind, 2))
    plan = discover_groups(net, X)
    assert list(plan.groups) == ['1'] and plan.unsupported == []
    why = dict(plan.kept)['0.0']
    assert 'input of a deformable conv with deform_groups=2 (1)' in why
    assert plan.layers['1'].in_map == (Segment(None, 0, 8),)
    assert plan.layers['1.conv_offset'].in_map == (Segment(None, 0, 8),)
    b = {'1': torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])}
    ms = install_masks(net, plan)
    ms.freeze(b)
    masked = net(X)
    ms.remove()
    prune_model(net, plan, b)  # refused the DCN's input before
    assert net[1].weight.shape == (4, 8, 3, 3)
    assert torch.allclose(net(X), masked, atol=1e-5)


class Gamma(nn.Module):
    """A per-channel scale the tracer does not know."""

    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * self.gamma.view(1, -1, 1, 1)


class WithGamma(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = cbr(3, 8)
        self.g = Gamma(8)
        self.c2 = cbr(8, 6)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(self.c2(self.g(self.c1(x))))


def test_unknown_module_with_parameters_is_reported_not_guessed():
    plan = discover_groups(WithGamma(), X)
    assert list(plan.groups) == ['c2.0']
    assert len(plan.unsupported) == 1
    where, why = plan.unsupported[0]
    assert where == 'g' and 'Gamma has parameters and no layer handler' in why
    assert (
        'c1.0',
        'its channels pass through g: Gamma has parameters and no '
        'layer handler (register one with register_layer_handler)',
    ) not in plan.kept
    assert any(n == 'c1.0' and 'feeds g' in r for n, r in plan.kept)


def gamma_handler(ctx, name, module, args, kwargs, out):
    ch = ctx.channels(args[0], 1, name)
    ctx.add_layer(name, 'norm', ch, ch)
    return ctx.mark_dirty(ch, name), 1


def test_layer_handler_extension_point():
    plan = discover_groups(WithGamma(), X, handlers=[(Gamma, gamma_handler)])
    assert list(plan.groups) == ['c1.0', 'c2.0'] and plan.unsupported == []
    assert modules(plan.groups['c1.0'].producers) == ['c1.0', 'c1.1', 'g']
    assert modules(plan.groups['c1.0'].sites) == ['g']
    # The global registry works the same way (and later entries win).
    saved = list(layer_registry._HANDLERS)
    try:
        groups_mod.register_layer_handler(
            lambda m: isinstance(m, Gamma), gamma_handler
        )
        assert list(discover_groups(WithGamma(), X).groups) == ['c1.0', 'c2.0']
    finally:
        layer_registry._HANDLERS[:] = saved
    with pytest.raises(TypeError, match='match must be'):
        groups_mod.register_layer_handler(3, gamma_handler)


class Functional(nn.Module):
    """Optionally applies a functional op between two convs."""

    def __init__(self, op, cin=8):
        super().__init__()
        self.op = op
        self.c1 = cbr(3, cin)
        self.c2 = nn.Conv2d(cin, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.c2(self.op(self.c1(x)))))


@pytest.mark.parametrize(
    'op,where,text',
    [
        (torch.sigmoid, 'c2', 'sigmoid'),
        (lambda x: x + 1.0, 'c2', 'add'),
        (lambda x: torch.flip(x, [1]), '<model>', "'flip'"),
        (lambda x: torch.roll(x, 1, 1), '<model>', "'roll'"),
    ],
)
def test_ops_that_cannot_be_masked_keep_their_channels(op, where, text):
    plan = discover_groups(Functional(op), X)
    assert 'c1.0' not in plan.groups and 'c2' in plan.groups
    assert any(
        w == where and text in r for w, r in plan.unsupported
    ), plan.unsupported
    assert [n for n, _ in plan.kept] == ['c1.0', 'head']


@pytest.mark.parametrize(
    'op',
    [
        lambda x: torch.relu(x) * 0.5,
        lambda x: nn.functional.max_pool2d(x, 3, 1, 1),
        lambda x: nn.functional.interpolate(
            x[..., ::2, ::2], scale_factor=2.0
        ),
        lambda x: x.flatten(2).view(1, 8, 8, 8).contiguous(),
        lambda x: x.permute(0, 2, 3, 1).permute(0, 3, 1, 2),
        lambda x: x * torch.sigmoid(x.mean((2, 3), keepdim=True)),
        lambda x: torch.stack([x, x], 0).sum(0),
    ],
)
def test_channel_preserving_ops_keep_groups_prunable(op):
    plan = discover_groups(Functional(op), X)
    assert list(plan.groups) == ['c1.0', 'c2'] and plan.unsupported == []


def test_grouped_conv_and_group_norm_tie_their_channels():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.gconv = nn.Conv2d(8, 8, 3, padding=1, groups=2)
            self.c2 = nn.Conv2d(8, 8, 1)
            self.gn = nn.GroupNorm(2, 8)
            self.c3 = nn.Conv2d(8, 4, 3, padding=1)
            self.in_gn = nn.GroupNorm(4, 4)  # one channel per group: no tie
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            x = self.c2(self.gconv(self.c1(x)))
            return self.head(self.in_gn(self.c3(self.gn(x))))

    plan = discover_groups(Net(), X)
    assert list(plan.groups) == ['c1', 'gconv', 'c2', 'c3']
    assert plan.unsupported == [] and [k for k, _ in plan.kept] == ['head']
    g = plan.groups
    # groups=2 on 8 channels: channel j goes with j + 4 (same position in
    # both conv groups), on the conv's input and on its output.
    assert g['c1'].tie == g['gconv'].tie == (0, 1, 2, 3, 0, 1, 2, 3)
    # GroupNorm(2, 8): two runs of four channels.
    assert g['c2'].tie == (0, 0, 0, 0, 1, 1, 1, 1)
    assert g['c3'].tie is None
    assert (g['c1'].units, g['c1'].unit_size) == (4, 2)
    assert (g['c2'].units, g['c2'].unit_size) == (2, 4)
    assert plan.layers['gn'].norm_groups == 2
    assert modules(g['c2'].sites) == ['gn']


def test_ties_across_groups_keep_them_whole():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 2, 1)
            self.b = nn.Conv2d(3, 6, 1)
            self.gn = nn.GroupNorm(2, 8)  # its first run spans a and b
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.head(self.gn(torch.cat([self.a(x), self.b(x)], 1)))

    plan = discover_groups(Net(), X)
    assert plan.groups == {}
    why = dict(plan.kept)
    assert 'gn ties channels of this group to fixed channels or to ' \
        'another group' in why['a']
    assert 'another group' in why['b']


def test_misaligned_concat_add_is_reported():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(3, 4, 1)
            self.c = nn.Conv2d(3, 8, 1)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.head(torch.cat([self.a(x), self.b(x)], 1) + self.c(x))

    plan = discover_groups(Net(), X)
    assert plan.groups == {}
    assert plan.unsupported == [
        ('add in <model>', 'channel groups meet misaligned')
    ]


def test_invisible_op_is_caught_by_autograd_leak_check():
    from mmcv.ops import deform_conv2d

    class Invisible(nn.Module):
        """Calls a C++ op the function mode cannot see, with plain tensors."""

        def __init__(self):
            super().__init__()
            self.w = torch.randn(6, 8, 3, 3)

        def forward(self, x):
            offset = x.new_zeros(x.shape[0], 18, x.shape[2], x.shape[3])
            return deform_conv2d(x, offset, self.w, 1, 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = cbr(3, 8)
            self.inv = Invisible()
            self.head = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.head(self.inv(self.c1(x)))

    plan = discover_groups(Net(), X)
    assert plan.groups == {}
    assert len(plan.unsupported) == 1
    where, why = plan.unsupported[0]
    assert where == 'head' and 'invisible operation' in why
    assert 'DeformConv2dFunctionBackward' in why
    assert plan.kept[0][0] == 'c1.0' and 'cannot see' in plan.kept[0][1]


def test_skip_and_ignore_output_layers():
    plan = discover_groups(Chain(), X, skip=['b2'])
    assert plan.groups == {}
    assert "b2.0 matches skip pattern 'b2'" in dict(plan.kept)['b2.0']
    plan = discover_groups(Chain(), X, ignore_output_layers=['b2.0'])
    assert list(plan.groups) == ['b1.0']
    assert dict(plan.kept)['b2.0'] == 'b2.0 is in ignore_output_layers'
    with pytest.raises(
        ValueError, match="skip pattern 'nope' matches no module"
    ):
        discover_groups(Chain(), X, skip=['nope'])
    with pytest.raises(ValueError, match="'b1.1' matches no conv"):
        discover_groups(Chain(), X, ignore_output_layers=['b1.1'])
    with pytest.raises(TypeError, match='list of module-name patterns'):
        discover_groups(Chain(), X, skip='b1')


def test_nested_outputs_and_bad_outputs():
    net = SharedHead()
    plan = discover_groups(
        net, X, lambda m, x: {'levels': tuple(m(x)), 'n': 2}
    )
    assert list(plan.groups) == ['l0', 'head']
    with pytest.raises(TypeError, match=r"returned a object at output\['x'\]"):
        discover_groups(net, X, lambda m, x: {'x': object()})


def test_trace_leaves_model_untouched():
    net = Residual().train()
    net.c1.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    discover_groups(net, torch.rand(2, 3, 8, 8))
    assert net.training and not net.c1.training and net.stem.training
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(
        not m._forward_hooks and not m._forward_pre_hooks
        for m in net.modules()
    )


def test_install_and_remove_hooks():
    net = randomise(Chain())
    plan = discover_groups(net, X)
    ms = install_masks(net, plan)
    assert (
        len(ms.masks) == 2
        and sum(len(m._forward_hooks) for m in net.modules()) == 2
    )
    with pytest.raises(RuntimeError, match='already attached'):
        ms.attach(net)
    assert ms.attached
    ms.remove()
    assert not ms.attached
    assert all(not m._forward_hooks for m in net.modules())
    with pytest.raises(KeyError, match='not a module'):
        ms.attach(nn.Sequential())


def test_cost_counts_layers_inside_opaque_modules():
    plan = discover_groups(WithGamma(), X)
    # c1 9*3*8*64 + c2 9*8*6*64 + head 6*2*64, all counted though c1 is kept.
    assert CostModel(plan).dense_macs == 13824 + 27648 + 768


def test_randomise_helper_sets_bn_stats():
    net = randomise(Chain())
    assert net.b1[1].running_mean.abs().sum() > 0
