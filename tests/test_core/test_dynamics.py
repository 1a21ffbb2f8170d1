"""The pruning dynamics: quantised binaries, revivable masks, the target
schedule, the normalisation and b='auto', checked against hand counts."""

import pytest
import torch

from mmprune.core import (
    ChannelMask,
    CostModel,
    auto_b,
    binarize,
    discover_groups,
    hw_loss,
    hw_scale,
    integrate_lag,
    scheduled_target,
)

from .nets import Chain


def test_revive_passes_gradient_at_zero_and_seed_form_does_not():
    m = torch.tensor([0.0, 0.3, 1.0, -0.2], requires_grad=True)
    binarize(m, 0.5).sum().backward()
    assert m.grad.tolist() == [0.0, 1.0, 0.0, 0.0]
    m.grad = None
    binarize(m, 0.5, revive=True).sum().backward()
    assert m.grad.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_clamp_only_with_revive():
    for revive, low in ((True, 0.0), (False, -0.5)):
        cm = ChannelMask(3, revive=revive)
        with torch.no_grad():
            cm.mask.copy_(torch.tensor([-0.5, 0.4, 1.7]))
        cm.clamp_()
        assert cm.mask.tolist()[0] == low
        assert cm.mask.tolist()[2] == pytest.approx(1.0 if revive else 1.7)


@pytest.mark.parametrize('above,kept', [
    # (channels with M >= 0.5, kept count): nearest multiple of 16, at
    # least 16; a full group stays full.
    (40, 48), (39, 32), (41, 48), (3, 16), (0, 16), (64, 64), (63, 64),
    (55, 48), (57, 64),
])
def test_channel_multiple_rounds_the_kept_count(above, kept):
    cm = ChannelMask(64, channel_multiple=16)
    values = torch.linspace(0.9, 0.6, 64)
    values[above:] = torch.linspace(0.45, 0.05, 64 - above)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cm.mask.copy_(values[perm])
    b = cm.binary()
    assert int(b.sum()) == kept
    # The kept channels are the ones with the largest M.
    order = torch.argsort(cm.mask.detach(), descending=True)
    assert b[order[:kept]].sum() == kept
    # Gradient is the estimator's, channel by channel.
    b.sum().backward()
    assert torch.equal(cm.mask.grad, torch.ones(64))


def test_channel_multiple_leaves_narrow_groups_and_respects_min_channels():
    cm = ChannelMask(12, channel_multiple=16)
    with torch.no_grad():
        cm.mask[:5] = 0.1
    assert int(cm.binary().sum()) == 7
    cm = ChannelMask(64, channel_multiple=16, min_channels=0.5)
    with torch.no_grad():
        cm.mask.fill_(0.2)
    assert int(cm.binary().sum()) == 32


def test_scheduled_target_by_hand():
    assert scheduled_target(0.0, 0.5) == 1.0
    # cubic: 0.5 + 0.5 * (1 - 0.3 / 0.75) ** 3 = 0.5 + 0.5 * 0.216
    assert scheduled_target(0.3, 0.5) == pytest.approx(0.608)
    assert scheduled_target(0.75, 0.5) == 0.5
    assert scheduled_target(0.9, 0.5) == 0.5
    assert scheduled_target(0.25, 0.3, 'linear', ramp=0.5) == \
        pytest.approx(0.65)
    assert scheduled_target(0.1, 0.3, 'constant') == 0.3
    with pytest.raises(ValueError, match='schedule must be one of'):
        scheduled_target(0.1, 0.3, 'exp')
    with pytest.raises(ValueError, match='ramp must lie in'):
        scheduled_target(0.1, 0.3, ramp=0.0)


def test_hw_scale_and_marginals_by_hand():
    net = Chain().eval()
    plan = discover_groups(net, torch.rand(1, 3, 8, 8))
    cm = CostModel(plan)
    # Chain: 3 -> b1 (8) -> b2 (6) -> 4 (1x1 head), 3x3 convs, 64 positions.
    dense = 64 * (9 * 3 * 8 + 9 * 8 * 6 + 6 * 4)
    g1 = 64 * (9 * 3 + 9 * 6) / dense  # one channel of b1
    g2 = 64 * (9 * 8 + 4) / dense  # one channel of b2
    grads = cm.marginals()
    assert grads.tolist() == pytest.approx([g1] * 8 + [g2] * 6)
    assert hw_scale(cm) == pytest.approx(14 / (8 * g1 + 6 * g2))


def test_auto_b_by_hand():
    net = Chain().eval()
    cm = CostModel(discover_groups(net, torch.rand(1, 3, 8, 8)))
    dense = 64 * (9 * 3 * 8 + 9 * 8 * 6 + 6 * 4)
    g1, g2 = 64 * (9 * 3 + 9 * 6) / dense, 64 * (9 * 8 + 4) / dense
    s = 14 / (8 * g1 + 6 * g2)
    sq = 8 * g1 ** 2 + 6 * g2 ** 2
    # Count mode: one step closes 0.3 of the lag: b = 0.3 / (2 lr s sum g^2).
    assert auto_b(cm, 0.01, 1000, 0.5, 'band') == pytest.approx(
        0.3 / (2 * 0.01 * s * sq))
    assert auto_b(cm, 0.01, 1000, 0.5, 'square', normalize=False) == \
        pytest.approx(0.3 / (2 * 0.01 * sq))
    assert auto_b(cm, 0.01, 1000, 0.5, 'hinge') == pytest.approx(
        0.3 * 0.02 / (0.01 * s * sq))
    # Threshold mode, normalised: (1 - thr) / (lr * slope * 0.1 * N).
    assert auto_b(cm, 0.01, 1000, 0.5, 'square',
                  binarize='threshold') == pytest.approx(
        0.5 / (0.01 * 0.04 * 100))


def test_count_mode_keeps_the_expected_count_by_largest_mask():
    cm = ChannelMask(10, binarize='count')
    values = torch.tensor([0.9, 0.2, 0.8, 0.75, 0.7, 0.65, 0.6, 0.3, 0.55,
                           0.95])
    with torch.no_grad():
        cm.mask.copy_(values)
    # sum = 6.4 -> 6 kept: the six largest, whatever the threshold says.
    b = cm.binary()
    assert b.tolist() == [1, 0, 1, 1, 1, 1, 0, 0, 0, 1]
    # Values outside [0, 1] count as 0 and 1.
    with torch.no_grad():
        cm.mask.copy_(torch.tensor([1.5, -2.0] + [0.5] * 8))
    assert int(cm.binary().sum()) == 5
    with pytest.raises(ValueError, match='binarize must be one of'):
        ChannelMask(4, binarize='soft')


def test_integrate_lag_by_hand():
    # Centre of the band [0.48, 0.5] is 0.49.
    assert integrate_lag(0.0, 0.6, 0.5, 0.02, 0.1) == pytest.approx(0.011)
    assert integrate_lag(0.05, 0.49, 0.5, 0.02, 0.1) == pytest.approx(0.05)
    assert integrate_lag(0.05, 0.44, 0.5, 0.02, 0.1) == pytest.approx(0.045)
    # Never below zero: it only pulls down.
    assert integrate_lag(0.001, 0.3, 0.5, 0.02, 0.1) == 0.0
    assert integrate_lag(0.2, 0.9, 0.5, 0.02, 0.0) == 0.2


def test_hw_loss_integral_adds_a_constant_slope():
    for form in ('band', 'square', 'hinge'):
        psi = torch.tensor(0.7, requires_grad=True)
        base = torch.autograd.grad(hw_loss(psi, 0.5, form, 0.02), psi)[0]
        psi = torch.tensor(0.7, requires_grad=True)
        with_i = torch.autograd.grad(
            hw_loss(psi, 0.5, form, 0.02, integral=0.05), psi)[0]
        # d/dpsi of 2 * I * (psi - t) = 2 * I = 0.1
        assert float(with_i - base) == pytest.approx(0.1)
    with pytest.raises(ValueError, match='integral'):
        hw_loss(torch.tensor(0.7), 0.5, 'band', integral=-1.0)
