"""mmprune.core.modulated_deform_conv2d against mmcv's CPU kernel."""
import pytest
import torch
from mmcv.ops import modulated_deform_conv2d as mmcv_dcn

from mmprune.core import deform_conv
from mmprune.core.deform_conv import modulated_deform_conv2d

CASES = {
    # name: (C_in, C_out, H, W, k, stride, padding, dilation, groups, dg)
    'dla-like': (8, 6, 9, 13, (3, 3), 1, 1, 1, 1, 1),
    'strided': (4, 4, 11, 10, (3, 3), 2, 1, 1, 1, 1),
    'dilated': (4, 5, 12, 12, (3, 3), 1, 2, 2, 1, 1),
    'grouped': (6, 4, 8, 9, (3, 3), 1, 1, 1, 2, 1),
    'deform-groups': (6, 4, 8, 9, (3, 3), 1, 1, 1, 1, 3),
    'rect-kernel': (3, 4, 7, 9, (1, 3), 1, (0, 1), 1, 1, 1),
    'one-column': (3, 2, 6, 1, (3, 3), 1, 1, 1, 1, 1),
}


def _inputs(case, scale=3.0, seed=0):
    c_in, c_out, h, w, k, s, p, d, g, dg = case
    k = (k, k) if isinstance(k, int) else k
    p2 = (p, p) if isinstance(p, int) else p
    h_out = (h + 2 * p2[0] - d * (k[0] - 1) - 1) // s + 1
    w_out = (w + 2 * p2[1] - d * (k[1] - 1) - 1) // s + 1
    gen = torch.Generator().manual_seed(seed)
    taps = k[0] * k[1]
    x = torch.randn(2, c_in, h, w, generator=gen)
    # Offsets up to +-3 px (and some beyond the border) exercise the
    # zero padding and every bilinear corner case.
    off = scale * torch.randn(2, 2 * dg * taps, h_out, w_out, generator=gen)
    mask = torch.rand(2, dg * taps, h_out, w_out, generator=gen)
    weight = torch.randn(c_out, c_in // g, *k, generator=gen) / 3
    bias = torch.randn(c_out, generator=gen)
    return x, off, mask, weight, bias, (s, p, d, g, dg)


@pytest.mark.parametrize('band_bytes', [None, 1, 700])
@pytest.mark.parametrize('name', sorted(CASES))
def test_forward_equals_mmcv(name, band_bytes, monkeypatch):
    """Without autograd the op works in bands of output rows: one band
    (default at these sizes), one row per band, and uneven bands."""
    if band_bytes is not None:
        monkeypatch.setattr(deform_conv, 'COLUMN_BYTES', band_bytes)
    x, off, mask, weight, bias, (s, p, d, g, dg) = _inputs(CASES[name])
    with torch.no_grad():
        ours = modulated_deform_conv2d(x, off, mask, weight, bias, s, p, d,
                                       g, dg)
    ref = mmcv_dcn(x, off, mask, weight, bias, s, p, d, g, dg)
    assert ours.shape == ref.shape
    assert ref.abs().max() > 1  # a real signal, not zeros on both sides
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_integer_offsets_are_a_shifted_plain_conv():
    """Zero offsets and unit mask: exactly nn.Conv2d (no interpolation)."""
    x, off, mask, weight, bias, _ = _inputs(CASES['dla-like'])
    out = modulated_deform_conv2d(x, torch.zeros_like(off),
                                  torch.ones_like(mask), weight, bias, 1, 1)
    torch.testing.assert_close(
        out, torch.nn.functional.conv2d(x, weight, bias, 1, 1),
        atol=1e-5, rtol=1e-5)
    # Everything pushed 100 px outside the image reads zeros: only the bias.
    out = modulated_deform_conv2d(x, torch.full_like(off, 100.0), mask,
                                  weight, bias, 1, 1)
    torch.testing.assert_close(out, bias.view(1, -1, 1, 1).expand_as(out))


@pytest.mark.parametrize('name', ['dla-like', 'deform-groups', 'strided'])
def test_gradients_equal_mmcv(name):
    """Autograd through grid_sample gives mmcv's backward for input,
    offsets, mask, weight and bias."""
    tensors = _inputs(CASES[name], scale=1.5, seed=1)
    args = tensors[-1]
    grads = []
    for fn in (modulated_deform_conv2d, mmcv_dcn):
        leaves = [t.clone().requires_grad_() for t in tensors[:5]]
        out = fn(*leaves, *args)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([t.grad for t in leaves])
    for label, a, b in zip(['x', 'offset', 'mask', 'weight', 'bias'],
                           *grads):
        assert b.abs().max() > 0, label
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4, msg=label)


def test_bad_shapes_name_the_argument():
    x, off, mask, weight, bias, _ = _inputs(CASES['dla-like'])
    with pytest.raises(ValueError, match=r'offset must be \[2, 18, 9, 13\]'):
        modulated_deform_conv2d(x, off[:, :9], mask, weight, bias, 1, 1)
    with pytest.raises(ValueError, match=r'mask must be \[2, 9, 9, 13\]'):
        modulated_deform_conv2d(x, off, mask[:, :1], weight, bias, 1, 1)
    with pytest.raises(ValueError, match='weight must be'):
        modulated_deform_conv2d(x, off, mask, weight[:, :3], bias, 1, 1)
    with pytest.raises(ValueError, match='deform_groups must be a divisor'):
        modulated_deform_conv2d(x, off, mask, weight, bias, 1, 1,
                                deform_groups=3)
    with pytest.raises(ValueError, match='stride must be an int or a pair'):
        modulated_deform_conv2d(x, off, mask, weight, bias, (1, 1, 1), 1)
