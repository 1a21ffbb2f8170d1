"""hw_loss and the projection onto the cost target."""

import pytest
import torch

from mmprune.core import (
    CostModel,
    discover_groups,
    hw_loss,
    install_masks,
    project_to_target,
)

from .nets import Chain, cbr, set_masks

X = torch.rand(1, 3, 8, 8)
DENSE_CHAIN = 43008  # 9*3*8*64 + 9*8*6*64 + 6*4*64


@pytest.mark.parametrize('form', ['hinge', 'abs', 'square'])
def test_hw_loss_values(form):
    t = 0.5
    vals = {
        p: hw_loss(torch.tensor(p), t, form).item() for p in (0.3, 0.5, 0.8)
    }
    expect = {
        'hinge': {0.3: 0.0, 0.5: 0.0, 0.8: 0.3},
        'abs': {0.3: 0.2, 0.5: 0.0, 0.8: 0.3},
        'square': {0.3: 0.04, 0.5: 0.0, 0.8: 0.09},
    }[form]
    assert vals == pytest.approx(expect)


def test_hw_loss_gradient_and_errors():
    psi = torch.tensor(0.7, requires_grad=True)
    hw_loss(psi, 0.5, 'square').backward()
    assert psi.grad.item() == pytest.approx(0.4)
    below = torch.tensor(0.4, requires_grad=True)
    hw_loss(below, 0.5).backward()
    assert below.grad.item() == 0.0
    with pytest.raises(ValueError, match='form must be one of'):
        hw_loss(psi, 0.5, 'huber')
    with pytest.raises(ValueError, match='psi_target must lie in'):
        hw_loss(psi, 0.0)


def setup(net_cls=Chain, min_channels=1):
    net = net_cls()
    plan = discover_groups(net, X)
    return (
        plan,
        CostModel(plan),
        install_masks(net, plan, min_channels=min_channels),
    )


def test_projection_drops_lowest_m_per_cost_first():
    plan, cm, ms = setup()
    set_masks(
        ms, {'b1.0': [1, 1, 1, 0.6, 1, 1, 1, 1], 'b2.0': [1, 0.55, 1, 1, 1, 1]}
    )
    # Marginal MACs of one channel: b1.0: 9*3*64 + 9*6*64 = 5184;
    # b2.0: 9*8*64 + 4*64 = 4864. M/cost: 0.6/5184 = 1.16e-4 > 0.55/4864 =
    # 1.13e-4, so b2.0 channel 1 goes first; one channel is enough.
    target = (DENSE_CHAIN - 4000) / DENSE_CHAIN
    rep = project_to_target(ms, cm, target, tol=0.05)
    assert rep.psi_before == 1.0 and rep.dropped == 1 and rep.restored == 0
    assert rep.psi_after == pytest.approx((DENSE_CHAIN - 4864) / DENSE_CHAIN)
    assert ms.mask('b2.0').binary().tolist() == [1, 0, 1, 1, 1, 1]
    assert ms.mask('b1.0').binary().sum().item() == 8
    assert ms.frozen and rep.reached
    assert rep.kept_before == {'b1.0': 8, 'b2.0': 6}
    assert rep.kept_after == {'b1.0': 8, 'b2.0': 5}


class Wide(torch.nn.Module):
    """Wide enough that single channels cost well under the 2 % tolerance."""

    def __init__(self):
        super().__init__()
        self.b1 = cbr(3, 16)
        self.b2 = cbr(16, 64)
        self.b3 = cbr(64, 48)
        self.head = torch.nn.Conv2d(48, 4, 1)

    def forward(self, x):
        return self.head(self.b3(self.b2(self.b1(x))))


@pytest.mark.parametrize('target', [0.5, 0.3, 0.15])
def test_projection_lands_within_tolerance(target):
    plan, cm, ms = setup(Wide)
    torch.manual_seed(0)
    with torch.no_grad():
        for g in plan.groups:
            ms.mask(g).mask.uniform_(0.5, 1.0)  # all kept: psi = 1
    rep = project_to_target(ms, cm, target, tol=0.02)
    psi = cm.psi(ms.binaries()).item()
    assert psi == pytest.approx(rep.psi_after)
    assert target - 0.02 <= psi <= target
    assert rep.reached and rep.dropped > 0


def test_projection_restores_highest_m_when_far_below():
    plan, cm, ms = setup()
    set_masks(
        ms,
        {
            'b1.0': [0.9, 0.4, 0.1, 0.2, 0.3, 0.45, 0.05, 0.15],
            'b2.0': [0.9, 0.1, 0.2, 0.3, 0.4, 0.35],
        },
    )
    # Kept: one channel each: 9*3*64 + 9*1*1*64 + 1*4*64 = 2560 MACs.
    before = cm.psi(ms.binaries()).item()
    assert before == pytest.approx(2560 / DENSE_CHAIN)
    rep = project_to_target(ms, cm, 0.4, tol=0.02)
    assert rep.dropped == 0 and rep.restored > 0
    assert 0.38 <= rep.psi_after <= 0.4
    # Highest M go back first: b1.0 channel 5 (0.45) and 1 (0.4), b2.0 4 (0.4).
    b1 = ms.mask('b1.0').binary()
    assert b1[5] == 1 and b1[1] == 1 and ms.mask('b2.0').binary()[4] == 1


def test_projection_respects_min_channels_and_reports_unreachable():
    plan, cm, ms = setup(min_channels=0.5)
    with pytest.warns(UserWarning, match='stays above the target'):
        rep = project_to_target(ms, cm, 0.05, tol=0.01)
    assert not rep.reached and 'min_channels' in rep.reason
    assert rep.kept_after == {'b1.0': 4, 'b2.0': 3}
    # 9*3*4*64 + 9*4*3*64 + 3*4*64 = 6912 + 6912 + 768
    assert rep.psi_after == pytest.approx(14592 / DENSE_CHAIN)


def test_projection_without_freeze_and_bad_args():
    plan, cm, ms = setup()
    rep = project_to_target(ms, cm, 0.5, freeze=False)
    assert not ms.frozen and rep.psi_after <= 0.5
    with pytest.raises(ValueError, match='psi_target'):
        project_to_target(ms, cm, 1.5)
    with pytest.raises(ValueError, match='tol'):
        project_to_target(ms, cm, 0.5, tol=0.6)


def two_groups(c1, c2):
    """conv-BN-ReLU (c1) -> conv-BN-ReLU (c2) -> 1x1 conv to 5: two
    prunable groups; returns (plan, cost model, mask set)."""
    from mmprune.core import MaskSet
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, c1, 3, padding=1), torch.nn.BatchNorm2d(c1),
        torch.nn.ReLU(), torch.nn.Conv2d(c1, c2, 3, padding=1),
        torch.nn.BatchNorm2d(c2), torch.nn.ReLU(),
        torch.nn.Conv2d(c2, 5, 1))
    plan = discover_groups(net, torch.rand(1, 3, 8, 8))
    return plan, CostModel(plan), MaskSet(plan)


def test_channel_multiple_rounds_kept_counts_and_respects_target():
    from mmprune.core import MaskSet
    plan, cost, ms = two_groups(40, 48)
    torch.manual_seed(0)
    with torch.no_grad():
        for name in ms.group_names:
            ms.mask(name).mask.copy_(torch.rand(plan.groups[name].size))
    rep = project_to_target(ms, cost, 0.5, tol=0.1, channel_multiple=8)
    assert rep.psi_after <= 0.5 + 1e-9
    for name, kept in rep.kept_after.items():
        assert kept % 8 == 0 or kept == plan.groups[name].size, (name, kept)
    assert float(cost.psi(ms.binaries())) == pytest.approx(rep.psi_after)
    with pytest.raises(ValueError, match='channel_multiple'):
        project_to_target(MaskSet(plan), cost, 0.5, channel_multiple=0)


def test_channel_multiple_rounding_up_never_overshoots_the_target():
    """The drop phase can leave a group with fewer than ``q`` channels; it
    is rounded up to ``q``, which costs MACs: whole blocks elsewhere must go
    so that psi still meets the target."""
    _, cost, ms = two_groups(64, 64)
    first, second = ms.group_names
    with torch.no_grad():  # all kept; the first group is the one to drop
        ms.mask(first).mask.copy_(torch.linspace(0.51, 0.6, 64))
        ms.mask(second).mask.copy_(torch.linspace(0.9, 1.0, 64))
    rep = project_to_target(ms, cost, 0.2, tol=0.05, channel_multiple=16)
    assert rep.reached and rep.psi_after <= 0.2 + 1e-9
    assert rep.psi_after >= 0.15
    assert rep.kept_after[first] % 16 == 0 and rep.kept_after[first] >= 16
    assert rep.kept_after[second] % 16 == 0


def chain(*widths, out=4):
    """3 -> widths (conv 3x3-BN-ReLU each) -> 1x1 conv to ``out`` (the
    output); returns (plan, cost model, mask set)."""
    from mmprune.core import MaskSet

    layers, c = [], 3
    for w in widths:
        layers += [
            torch.nn.Conv2d(c, w, 3, padding=1),
            torch.nn.BatchNorm2d(w),
            torch.nn.ReLU(),
        ]
        c = w
    net = torch.nn.Sequential(*layers, torch.nn.Conv2d(c, out, 1))
    plan = discover_groups(net, X)
    return plan, CostModel(plan), MaskSet(plan)


def test_channel_multiple_band_out_of_reach_is_reported_not_reached():
    """Multiples of 16 of two 32-channel groups give psi 0.274 (16, 16),
    0.506 (16, 32), 0.542 (32, 16) or 1: none in [0.48, 0.5]."""
    _, cost, ms = chain(32, 32)
    with torch.no_grad():
        for name in ms.group_names:
            ms.mask(name).mask.uniform_(0.5, 1.0)
    with pytest.warns(UserWarning, match='channel_multiple=16'):
        rep = project_to_target(ms, cost, 0.5, tol=0.02, channel_multiple=16)
    # 9*3*16 + 9*16*16 + 16*4 = 2800 of 9*3*32 + 9*32*32 + 32*4 = 10208.
    assert rep.psi_after == pytest.approx(2800 / 10208)
    assert not rep.reached
    assert 'channel_multiple=16' in rep.reason
    assert '0.2743 (taken) and 0.5063' in rep.reason
    assert float(cost.psi(ms.binaries())) == pytest.approx(rep.psi_after)


def test_channel_multiple_mixes_roundings_to_reach_the_band():
    """Rounding and restoring single blocks stop at psi 0.365 (16, 24, 24)
    here; another mix of multiples of 8 lands in [0.38, 0.4]."""
    _, cost, ms = chain(32, 48, 24)
    with torch.no_grad():
        for i, name in enumerate(ms.group_names):
            size = ms.mask(name).num_channels
            ms.mask(name).mask.copy_(torch.linspace(0.5 + i / 10, 1.0, size))
    rep = project_to_target(ms, cost, 0.4, tol=0.02, channel_multiple=8)
    assert rep.reached and rep.reason == ''
    assert 0.38 <= rep.psi_after <= 0.4
    assert float(cost.psi(ms.binaries())) == pytest.approx(rep.psi_after)
    for name, kept in rep.kept_after.items():
        assert kept % 8 == 0, (name, kept)


def test_fixed_layers_are_named_when_the_target_is_out_of_reach():
    """A fixed 3->64 branch to the output is 88 % of the MACs."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = cbr(3, 8)
            self.a_head = torch.nn.Conv2d(8, 2, 1)
            self.b = torch.nn.Conv2d(3, 64, 3, padding=1)

        def forward(self, x):
            return self.a_head(self.a(x)), self.b(x)

    plan, cm, ms = setup(Net)
    assert list(plan.groups) == ['a.0']
    with pytest.warns(UserWarning, match='stays above the target'):
        rep = project_to_target(ms, cm, 0.5)
    assert not rep.reached
    assert 'fixed (unprunable) layers' in rep.reason
    # b: 9*3*64 of 9*3*64 + 9*3*8 + 8*2 MACs per position.
    assert '0.8816' in rep.reason


def test_one_channel_coarser_than_the_band_is_reported():
    """Chain's feasible psi levels around 0.54 are 0.5179 (4, 6) and 0.5476
    (8, 2): [0.53, 0.54] is out of reach even at one-channel steps."""
    _, cm, ms = setup()
    with pytest.warns(UserWarning, match='lands below the band'):
        rep = project_to_target(ms, cm, 0.54, tol=0.01)
    assert not rep.reached
    assert rep.psi_after == pytest.approx((9 * 12 + 9 * 24 + 24) / 672)
    assert rep.kept_after == {'b1.0': 4, 'b2.0': 6}
    assert 'channels too coarse for tol' in rep.reason
    assert '0.5179 (taken) and 0.5476' in rep.reason


def test_block_that_lands_in_the_band_is_dropped_first():
    """Chain 3 -> 32 -> 32 -> 4, multiples of 16, band [0.53, 0.55]:
    halving the first group (psi 0.506) saves more per unit of M, but only
    halving the second (0.542) lands in the band, so only it moves."""
    _, cost, ms = chain(32, 32)
    rep = project_to_target(ms, cost, 0.55, tol=0.02, channel_multiple=16)
    # 9*3*32 + 9*32*16 + 16*4 = 5536 of 10208.
    assert rep.psi_after == pytest.approx(5536 / 10208)
    assert rep.reached
    assert (rep.dropped, rep.restored) == (16, 0)
