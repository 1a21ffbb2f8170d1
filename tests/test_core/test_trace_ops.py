"""Torch functions that detectors call between modules (trace_ops): the ones
that keep channels prunable must export equal to the masked model; the ones
that really mix channels keep them, with the reason, and are not reported as
unknown."""

import copy

import pytest
import torch
from torch import nn

from mmprune.core import CostModel, discover_groups, install_masks
from mmprune.core.surgery import prune_model

from .nets import cbr, count_macs, randomise

X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))


class CoordSlice(nn.Module):
    """SOLOv2's kernel branch: concat two fixed coordinate channels, run a
    conv on all of them, and slice them off again (``feat[:, :-2]``)."""

    def __init__(self):
        super().__init__()
        self.c1 = cbr(3, 8)
        self.kernel = nn.Conv2d(10, 6, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        f = self.c1(x)
        coord = torch.linspace(-1, 1, 8).expand(x.shape[0], 2, 8, 8)
        k = torch.cat([f, coord], 1)
        return self.kernel(k), self.head(k[:, :-2])


class ChannelSum(nn.Module):
    """A sum over channels (a spatial attention map, or the RoI extractor's
    ``feats.sum() * 0.`` graph keeper) next to the normal path."""

    def __init__(self):
        super().__init__()
        self.c1 = cbr(3, 8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)  # biased: pruned are != 0
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        f = self.c2(self.c1(x))
        att = torch.sigmoid(f.sum(1, keepdim=True))
        return self.head(torch.relu(f) * att) + f.sum() * 0.0


class RoIIndex(nn.Module):
    """RoI-head style rows picked by an index tensor, then a linear."""

    def __init__(self):
        super().__init__()
        self.c1 = cbr(3, 8)
        self.fc1 = nn.Linear(8, 12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x):
        v = self.c1(x).mean((2, 3))  # [N, 8]
        rows = torch.relu(self.fc1(v))[torch.tensor([1, 0, 1])]
        keep = torch.tensor([True, False, True])
        return self.fc2(rows[keep])


@pytest.mark.parametrize('net_cls,groups', [
    (CoordSlice, ['c1.0']),
    (ChannelSum, ['c1.0', 'c2']),
    (RoIIndex, ['c1.0', 'fc1']),
])
def test_ops_that_keep_channels_prunable_export_equal(net_cls, groups):
    net = randomise(net_cls())
    plan = discover_groups(net, X)
    assert sorted(plan.groups) == groups, plan.kept
    assert plan.unsupported == []
    b = {}
    for i, (name, g) in enumerate(sorted(plan.groups.items())):
        v = torch.ones(g.size)
        v[i % 2::3] = 0.0
        b[name] = v
    ms = install_masks(net, plan)
    ms.freeze(b)
    with torch.no_grad():
        masked = net(X)
    ms.remove()
    with torch.no_grad():
        dense = net(X)
    small = copy.deepcopy(net)
    prune_model(small, plan, b)
    with torch.no_grad():
        out = small(X)
    for o, m, d in zip(out if isinstance(out, tuple) else (out,),
                       masked if isinstance(masked, tuple) else (masked,),
                       dense if isinstance(dense, tuple) else (dense,)):
        assert torch.allclose(o, m, atol=1e-5, rtol=1e-4)
    # The masks matter: the dense model computes something else.
    assert not all(torch.allclose(m, d, atol=1e-4) for m, d in zip(
        masked if isinstance(masked, tuple) else (masked,),
        dense if isinstance(dense, tuple) else (dense,)))
    assert count_macs(small, X) == int(CostModel(plan).macs(b).item())


class Mixes(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op
        self.c1 = cbr(3, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        f = self.c1(x)
        return self.head(f), self.op(f)


@pytest.mark.parametrize('op,text', [
    (lambda f: f.reshape(f.shape[0], -1), 'merged with another axis by '
     'reshape'),
    (lambda f: f.flatten(1), 'merged with another axis by flatten'),
    (lambda f: f[:, 3], 'selected one by one by __getitem__'),
    (lambda f: f[:, 2:], 'sliced by __getitem__ at prunable positions'),
    (lambda f: f[:, torch.tensor([0, 2])], 'indexed by a tensor'),
    (lambda f: f.mean(1), 'reduced over by mean'),
    (lambda f: f.amax(1), 'reduced over by amax'),
])
def test_ops_that_mix_channels_keep_them_with_the_reason(op, text):
    plan = discover_groups(randomise(Mixes(op)), X)
    assert 'c1.0' not in plan.groups
    assert plan.unsupported == []
    assert any(n == 'c1.0' and text in why for n, why in plan.kept), \
        plan.kept
