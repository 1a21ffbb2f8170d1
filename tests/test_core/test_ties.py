"""Tied channels: grouped convs and GroupNorm with fewer groups than channels
(plan.ChannelGroup.tie, mask units, projection, export)."""

import copy

import pytest
import torch
from torch import nn

from mmprune.core import (
    CostModel,
    discover_groups,
    install_masks,
    lowest_psi,
    project_to_target,
)
from mmprune.core.mask import ChannelMask
from mmprune.core.surgery import prune_model

from .nets import count_macs, randomise

X = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(5))


class NeXtGN(nn.Module):
    """A ResNeXt-style bottleneck (grouped 3x3) and a GroupNorm head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1),
                                  nn.BatchNorm2d(16), nn.ReLU())
        self.gconv = nn.Sequential(
            nn.Conv2d(16, 32, 3, padding=1, groups=4), nn.BatchNorm2d(32),
            nn.ReLU())
        self.reduce = nn.Sequential(nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16))
        self.head = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1),
                                  nn.GroupNorm(6, 24), nn.ReLU(),
                                  nn.Conv2d(24, 5, 1))

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(self.reduce(self.gconv(x)) + x))


def randomised():
    net = randomise(NeXtGN())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        gn = net.head[1]
        gn.weight.copy_(torch.randn(24, generator=g))
        gn.bias.copy_(torch.randn(24, generator=g))
    return net


def test_units_follow_the_layers():
    plan = discover_groups(randomised(), X)
    g = plan.groups
    # stem feeds the grouped conv (4 groups of 4 inputs) and the residual
    # add with reduce: channel j is tied to j + 4a.
    assert g['stem.0'].tie == tuple(j % 4 for j in range(16))
    assert g['gconv.0'].tie == tuple(j % 8 for j in range(32))
    # GroupNorm(6, 24): runs of 4.
    assert g['head.0'].tie == tuple(j // 4 for j in range(24))
    ms = install_masks(randomised(), plan)
    assert ms.mask('head.0').mask.shape == (6,)
    assert ms.mask('head.0').binary().shape == (24,)


def _unit_binaries(plan, seed):
    """Random binaries that keep or drop whole units (at least one)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, grp in plan.groups.items():
        u = (torch.rand(grp.units, generator=g) < 0.6).float()
        u[int(torch.randint(grp.units, (1,), generator=g))] = 1.0
        tie = torch.arange(grp.size) if grp.tie is None else \
            torch.tensor(grp.tie)
        out[name] = u[tie]
    return out


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_exported_model_equals_masked_model(seed):
    net = randomised()
    plan = discover_groups(net, X)
    b = _unit_binaries(plan, seed)
    ms = install_masks(net, plan)
    ms.freeze(b)
    with torch.no_grad():
        masked = net(X)
    ms.remove()
    small = copy.deepcopy(net)
    prune_model(small, plan, b)
    with torch.no_grad():
        out = small(X)
    assert torch.allclose(out, masked, atol=1e-5, rtol=1e-4)
    conv, gn = small.gconv[0], small.head[1]
    kept_in = int(b['stem.0'].sum())
    assert conv.groups == 4 and conv.in_channels == kept_in
    assert conv.weight.shape == (int(b['gconv.0'].sum()), kept_in // 4, 3, 3)
    assert gn.num_groups == int(b['head.0'].sum()) // 4
    # MACs counted on the real small model equal the cost model's.
    assert count_macs(small, X) == int(CostModel(plan).macs(b).item())


def test_freeze_refuses_split_units():
    mk = ChannelMask(8, ties=(0, 0, 1, 1, 2, 2, 3, 3))
    with pytest.raises(ValueError, match='splits a unit'):
        mk.freeze(torch.tensor([1., 0, 1, 1, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match='same number of channels'):
        ChannelMask(4, ties=(0, 0, 0, 1))
    # min_channels in channels rounds up to whole units.
    assert ChannelMask(8, min_channels=3, ties=(0, 0, 1, 1, 2, 2, 3, 3)
                       ).min_keep == 4


def test_unit_binary_counts_units():
    mk = ChannelMask(8, ties=(0, 1, 0, 1, 2, 3, 2, 3))
    with torch.no_grad():
        mk.mask.copy_(torch.tensor([0.9, 0.2, 0.8, 0.1]))
    assert mk.binary().tolist() == [1., 0, 1, 0, 1, 0, 1, 0]
    assert mk.unit_binary().tolist() == [1., 0, 1, 0]
    # The gradient of a unit sums its channels'.
    mk.binary().dot(torch.arange(8.0)).backward()
    assert mk.mask.grad.tolist() == [0 + 2, 1 + 3, 4 + 6, 5 + 7]


@pytest.mark.parametrize('multiple', [1, 8])
def test_projection_moves_whole_units(multiple):
    net = randomised()
    plan = discover_groups(net, X)
    ms = install_masks(net, plan)
    cm = CostModel(plan)
    rep = project_to_target(ms, cm, 0.5, tol=0.05,
                            channel_multiple=multiple)
    assert rep.reached, rep.reason
    b = {k: v.detach() for k, v in ms.binaries().items()}
    psi = float(cm.psi(b))
    assert 0.45 <= psi <= 0.5 and abs(psi - rep.psi_after) < 1e-9
    for name, grp in plan.groups.items():
        tie = torch.tensor(grp.tie) if grp.tie else torch.arange(grp.size)
        first = torch.zeros(grp.units).scatter_(0, tie, b[name])
        assert torch.equal(first[tie], b[name]), name
        kept = int(b[name].sum())
        assert kept == rep.kept_after[name]
        assert kept % grp.unit_size == 0
        if multiple > 1 and kept < grp.size and grp.size >= multiple:
            assert kept % multiple == 0, (name, kept)
    dense = sum(g.size for g in plan.groups.values())
    assert rep.dropped - rep.restored == dense - sum(rep.kept_after.values())
    # The exported model still equals the masked one.
    with torch.no_grad():
        masked = net(X)
    ms.remove()
    small = copy.deepcopy(net)
    prune_model(small, plan, b)
    with torch.no_grad():
        assert torch.allclose(small(X), masked, atol=1e-5, rtol=1e-4)


def test_lowest_psi_keeps_one_unit_per_group():
    net = randomised()
    plan = discover_groups(net, X)
    ms = install_masks(net, plan)
    psi, b = lowest_psi(ms, CostModel(plan))
    for name, grp in plan.groups.items():
        assert int(b[name].sum()) == grp.unit_size, name
    ms.remove()
    small = copy.deepcopy(net)
    prune_model(small, plan, b)
    assert count_macs(small, X) == pytest.approx(
        psi * count_macs(net, X), rel=1e-9)
