import pytest
import torch

from mmprune.core import ChannelMask, resolve_min_channels


def test_resolve_min_channels():
    assert resolve_min_channels(1, 8) == 1
    assert resolve_min_channels(20, 8) == 8
    assert resolve_min_channels(0.25, 8) == 2
    assert resolve_min_channels(0.3, 8) == 3  # ceil(2.4)
    assert resolve_min_channels(0.01, 8) == 1
    assert resolve_min_channels(1.0, 8) == 8
    for bad in (0, -1, 0.0, 1.5):
        with pytest.raises(ValueError, match='min_channels'):
            resolve_min_channels(bad, 8)
    for bad in (True, '2', None):
        with pytest.raises(TypeError, match='min_channels'):
            resolve_min_channels(bad, 8)


def test_init_and_binary():
    cm = ChannelMask(4, mask_init=1.0)
    assert cm.mask.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert cm.binary().tolist() == [1.0, 1.0, 1.0, 1.0]
    with torch.no_grad():
        cm.mask.copy_(torch.tensor([0.9, 0.2, 0.6, 0.4]))
    assert cm.binary().tolist() == [1.0, 0.0, 1.0, 0.0]


def test_guard_keeps_top_m_channels_and_their_gradient():
    cm = ChannelMask(5, min_channels=2)
    with torch.no_grad():
        cm.mask.copy_(torch.tensor([0.1, 0.45, -0.3, 0.3, 0.2]))
    b = cm.binary()
    # No channel passes 0.5; the two largest M (0.45 at 1, 0.3 at 3) are kept.
    assert b.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    (b * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])).sum().backward()
    # The gradient is the STE's: forced channels still learn, M < 0 gets none.
    assert cm.mask.grad.tolist() == [1.0, 2.0, 0.0, 4.0, 5.0]


def test_guard_ratio_and_no_op_when_enough_survive():
    cm = ChannelMask(8, min_channels=0.5)
    assert cm.min_keep == 4
    with torch.no_grad():
        cm.mask.copy_(torch.tensor([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.4]))
    assert cm.binary().tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    with torch.no_grad():
        cm.mask.copy_(torch.tensor([0.9, 0.1, 0.1, 0.1, 0.45, 0.2, 0.3, 0.4]))
    assert cm.binary().tolist() == [1, 0, 0, 0, 1, 0, 1, 1]


def test_freeze_fixes_binary_and_stops_gradient():
    cm = ChannelMask(4)
    with torch.no_grad():
        cm.mask.copy_(torch.tensor([0.9, 0.2, 0.6, 0.4]))
    cm.freeze()
    assert cm.is_frozen and not cm.mask.requires_grad
    with torch.no_grad():
        cm.mask.copy_(torch.tensor([0.0, 1.0, 0.0, 1.0]))
    b = cm.binary()
    assert b.tolist() == [1.0, 0.0, 1.0, 0.0] and not b.requires_grad
    with pytest.raises(ValueError, match='min_keep'):
        ChannelMask(3, min_channels=2).freeze(torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match='only 0 and 1'):
        ChannelMask(3).freeze(torch.tensor([1.0, 0.5, 0.0]))
    with pytest.raises(ValueError, match='shape'):
        ChannelMask(3).freeze(torch.ones(4))


def test_state_dict_round_trip_with_frozen_state():
    a = ChannelMask(4)
    with torch.no_grad():
        a.mask.copy_(torch.tensor([0.9, 0.2, 0.6, 0.4]))
    a.freeze(torch.tensor([1.0, 1.0, 0.0, 0.0]))
    sd = a.state_dict()
    assert set(sd) == {'mask', 'frozen_binary', 'frozen'}
    b = ChannelMask(4)
    assert b.mask.requires_grad
    b.load_state_dict(sd)
    assert b.is_frozen and not b.mask.requires_grad
    assert b.mask.tolist() == a.mask.tolist()
    assert b.binary().tolist() == [1.0, 1.0, 0.0, 0.0]
    # And back: an unfrozen state makes the mask trainable again.
    b.load_state_dict(ChannelMask(4).state_dict())
    assert not b.is_frozen and b.mask.requires_grad
    assert b.binary().tolist() == [1.0, 1.0, 1.0, 1.0]
