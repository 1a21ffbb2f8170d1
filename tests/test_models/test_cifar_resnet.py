"""CifarResNet: depths, shapes, and the paper's parameter counts."""
import pytest
import torch

from mmprune.models.backbones import CifarResNet

# He et al. (2016), Table 6: parameters with the 64 -> 10 classifier (650),
# option A, in millions at the precision the paper prints them.
PUBLISHED = {20: (0.27, 2), 32: (0.46, 2), 44: (0.66, 2), 56: (0.85, 2),
             110: (1.7, 1)}
FC = 64 * 10 + 10


def _hand_count(depth, shortcut):
    """Parameters of the backbone, counted from the architecture."""
    n = (depth - 2) // 6
    total = 3 * 16 * 9 + 2 * 16  # stem conv and BN
    width = 16
    for out in (16, 32, 64):
        for j in range(n):
            total += width * out * 9 + out * out * 9 + 4 * out
            if width != out and shortcut == 'B':
                total += width * out + 2 * out
            width = out
    return total


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize('depth', sorted(PUBLISHED))
def test_parameter_counts(depth):
    a = CifarResNet(depth, shortcut='A')
    millions, digits = PUBLISHED[depth]
    assert round((_params(a) + FC) / 1e6, digits) == millions
    assert _params(a) == _hand_count(depth, 'A')
    # Option B adds the two 1x1 projections and their BatchNorms.
    b = CifarResNet(depth, shortcut='B')
    assert _params(b) == _hand_count(depth, 'B')
    assert _params(b) - _params(a) == 16 * 32 + 64 + 32 * 64 + 128


@pytest.mark.parametrize('shortcut', ['A', 'B'])
def test_shapes_and_stages(shortcut):
    m = CifarResNet(20, shortcut=shortcut, in_channels=1,
                    out_indices=(0, 1, 2)).eval()
    outs = m(torch.randn(2, 1, 28, 28))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 28, 28),
                                              (2, 32, 14, 14),
                                              (2, 64, 7, 7)]
    blocks = [len(getattr(m, f'layer{i}')) for i in (1, 2, 3)]
    assert blocks == [3, 3, 3]


def test_option_a_shortcut_is_zero_padded_identity():
    m = CifarResNet(20, shortcut='A').eval()
    block = m.layer2[0]
    x = torch.randn(1, 16, 8, 8)
    y = block.downsample(x)
    assert y.shape == (1, 32, 4, 4)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0


@pytest.mark.parametrize('kwargs, key', [
    (dict(depth=21), 'depth'), (dict(depth=2), 'depth'),
    (dict(shortcut='C'), 'shortcut'), (dict(out_indices=(3, )),
                                       'out_indices')])
def test_bad_arguments(kwargs, key):
    with pytest.raises(ValueError, match=f'CifarResNet.{key}'):
        CifarResNet(**kwargs)
