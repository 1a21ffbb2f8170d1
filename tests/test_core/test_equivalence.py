"""The masked model computes what the physically pruned model computes."""

import copy

import pytest
import torch
from torch import nn

from mmprune.core import CostModel, discover_groups, install_masks
from mmprune.core.surgery import prune_model

from .nets import (
    Chain,
    Concat,
    Residual,
    cbr,
    kept_index,
    randomise,
    set_masks,
    slice_model,
)
from .test_cost import CASES

X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def mask_values(plan, keep):
    """Continuous masks whose binarisation keeps exactly ``keep``: kept
    channels at 0.6-0.9, pruned ones at 0.1-0.4 (inside the STE window)."""
    vals = {}
    for name, g in plan.groups.items():
        v = [0.1 + 0.3 * (i % 2) for i in range(g.size)]
        for i in keep[name]:
            v[i] = 0.6 + 0.3 * (i % 2)
        vals[name] = v
    return vals


def flat(out):
    return (
        torch.cat([o.flatten() for o in out]) if isinstance(out, list) else out
    )


@pytest.mark.parametrize('case', sorted(CASES))
def test_masked_forward_equals_sliced_forward(case):
    net_cls, keep, _, _ = CASES[case]
    net = randomise(net_cls())
    plan = discover_groups(net, X)
    ref = flat(net(X))
    ms = install_masks(net, plan)
    set_masks(ms, mask_values(plan, keep))
    b = {k: v.detach() for k, v in ms.binaries().items()}
    assert {k: v.nonzero().flatten().tolist() for k, v in b.items()} == keep

    # Every channel-mixing consumer reads exactly 0.0 in the pruned channels of
    # its input. (A depthwise layer may read non-zero values there: its output
    # channel depends on that input channel only and is masked later.)
    seen = []

    def check(name, layer):
        kept = set(kept_index(layer.in_map, keep))

        def pre(m, args):
            x = args[0]
            dropped = [i for i in range(x.shape[1]) if i not in kept]
            assert dropped, name
            assert torch.equal(x[:, dropped], torch.zeros_like(x[:, dropped]))
            seen.append(name)

        return pre

    consumers = {
        s.module
        for g in plan.groups.values()
        for s in g.consumers
        if not plan.layers[s.module].depthwise
    }
    hs = [
        net.get_submodule(n).register_forward_pre_hook(
            check(n, plan.layers[n])
        )
        for n in consumers
    ]
    masked = flat(net(X))
    for h in hs:
        h.remove()
    assert set(seen) == consumers

    # The check has teeth: without the masks the outputs differ.
    ms.remove()
    sliced = flat(slice_model(net, plan, b)(X))
    assert torch.allclose(masked, sliced, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(flat(net(X)), sliced, atol=1e-3)
    assert torch.allclose(flat(net(X)), ref)


def test_hand_sliced_residual_block():
    """The residual net pruned by hand, not through the plan."""
    net = randomise(Residual())
    plan = discover_groups(net, X)
    ms = install_masks(net, plan)
    keep_s, keep_c = [0, 1, 4, 6], [0, 2, 5]
    set_masks(ms, mask_values(plan, {'stem.0': keep_s, 'c1.0': keep_c}))
    masked = net(X)

    small = Residual()
    small.stem = cbr(3, 4)
    small.c1 = cbr(4, 3)
    small.c2 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    small.bn2 = nn.BatchNorm2d(4)
    small.head = nn.Conv2d(4, 4, 1)
    small.eval()
    s, c = torch.tensor(keep_s), torch.tensor(keep_c)
    with torch.no_grad():
        small.stem[0].weight.copy_(net.stem[0].weight[s])
        small.c1[0].weight.copy_(net.c1[0].weight[c][:, s])
        small.c2.weight.copy_(net.c2.weight[s][:, c])
        small.head.weight.copy_(net.head.weight[:, s])
        small.head.bias.copy_(net.head.bias)
        for bn_s, bn_b, idx in (
            (small.stem[1], net.stem[1], s),
            (small.c1[1], net.c1[1], c),
            (small.bn2, net.bn2, s),
        ):
            for a in ('weight', 'bias', 'running_mean', 'running_var'):
                getattr(bn_s, a).copy_(getattr(bn_b, a)[idx])
    assert torch.allclose(masked, small(X), atol=1e-5)


def test_mask_gradients_flow_only_through_ste():
    net = randomise(Chain())
    plan = discover_groups(net, X)
    ms = install_masks(net, plan)
    cm = CostModel(plan)
    set_masks(ms, {'b1.0': [1.0, 0.7, 0.3, -0.2, 0.0, 1.2, 0.55, 0.45]})
    (net(X).square().mean() + cm.psi(ms.binaries())).backward()
    g = ms.mask('b1.0').mask.grad
    inside = [1, 2, 6, 7]
    outside = [0, 3, 4, 5]
    assert torch.all(g[outside] == 0)
    assert torch.all(g[inside] != 0)
    # b2.0 masks are all 1.0 (edge of the window): no gradient at all.
    assert torch.all(ms.mask('b2.0').mask.grad == 0)
    # Frozen masks get none either, and the weights still train.
    net.zero_grad()
    ms.zero_grad()
    ms.freeze()
    net(X).square().sum().backward()
    assert ms.mask('b1.0').mask.grad is None
    assert net.b1[0].weight.grad.abs().sum() > 0


def test_maskset_state_dict_round_trip():
    net = Concat()
    plan = discover_groups(net, X)
    ms = install_masks(net, plan)
    set_masks(ms, mask_values(plan, CASES['concat'][1]))
    ms.mask('a.0').freeze()
    sd = ms.state_dict()
    assert sorted(sd) == sorted(
        f'masks.{g}.{k}'
        for g in ('a-0', 'b-0', 'fuse-0')
        for k in ('mask', 'frozen', 'frozen_binary')
    )
    other = install_masks(Concat(), plan)
    other.load_state_dict(sd)
    for g in plan.groups:
        assert torch.equal(other.mask(g).binary(), ms.mask(g).binary())
        assert other.mask(g).is_frozen == (g == 'a.0')
    assert not other.mask('a.0').mask.requires_grad
    assert other.mask('b.0').mask.requires_grad
    assert not other.frozen and len(list(other.parameters())) == 3


def test_linear_site_masks_last_axis():
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.rand(2, 5, 4)
    plan = discover_groups(net, x)
    assert list(plan.groups) == ['0'] and plan.layers['0'].channel_dim == -1
    # 5 tokens per sample: 4*6*5 + 6*3*5 MACs.
    assert plan.layers['0'].positions == 5
    assert CostModel(plan).dense_macs == 120 + 90
    ms = install_masks(net, plan)
    set_masks(ms, {'0': [0.9, 0.1, 0.9, 0.1, 0.9, 0.9]})
    keep = torch.tensor([0, 2, 4, 5])
    small = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        small[0].weight.copy_(net[0].weight[keep])
        small[0].bias.copy_(net[0].bias[keep])
        small[2].weight.copy_(net[2].weight[:, keep])
        small[2].bias.copy_(net[2].bias)
    assert torch.allclose(net(x), small(x), atol=1e-6)


class Fn(nn.Module):
    """A torch function as a module (for parametrised nets)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class NormThenOp(nn.Module):
    """conv 3->8 - BN - ``op`` - conv 8->6 - BN - ReLU - head 6->2."""

    def __init__(self, op):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.op = op
        self.c2 = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = self.op(self.bn1(self.c1(x)))
        return self.head(torch.relu(self.bn2(self.c2(y))))


@pytest.mark.parametrize(
    'op,name',
    [
        # f(0) != 0: a masked channel leaves the op non-zero, so c1 is kept.
        (nn.Hardtanh(0.1, 1.0), 'hardtanh'),
        (Fn(lambda x: torch.clamp_max(x, -0.5)), 'clamp_max'),
        (Fn(lambda x: x.clamp(min=0.2)), 'clamp'),
        (Fn(lambda x: x.clamp_min(0.3)), 'clamp_min'),
        (Fn(lambda x: torch.clip(x, -2.0, -0.1)), 'clamp'),
        (nn.Threshold(0.1, 20.0), 'threshold'),
        # f(0) == 0: c1 stays prunable.
        (nn.Hardtanh(-1.0, 1.0), None),
        (nn.ReLU6(), None),
        (Fn(lambda x: torch.clamp(x, min=0)), None),
        (Fn(lambda x: x.clamp_max(0.5)), None),
        (nn.Threshold(0.1, 0.0), None),
    ],
)
def test_clamp_like_ops_keep_channels_unless_zero_stays_zero(op, name):
    net = randomise(NormThenOp(op))
    plan = discover_groups(net, X)
    assert 'c2' in plan.groups
    if name is None:
        assert 'c1' in plan.groups and plan.unsupported == []
    else:
        assert 'c1' not in plan.groups
        why = dict(plan.kept)['c1']
        assert f'pass {name} (maps 0 to non-zero)' in why, why
    # Masked and exported models agree with channels pruned in every group.
    b = {}
    for g, grp in plan.groups.items():
        b[g] = torch.zeros(grp.size)
        b[g][[0, 2, 3]] = 1.0
    dense = net(X)
    ms = install_masks(net, plan)
    ms.freeze(b)
    masked = net(X)
    ms.remove()
    small = copy.deepcopy(net)
    prune_model(small, plan, b)
    assert torch.allclose(small(X), masked, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(small(X), dense, atol=1e-3)
