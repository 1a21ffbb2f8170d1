"""Modulated deformable convolution (DCNv2) from plain torch ops.

Why: mmcv's CPU kernel for ``modulated_deform_conv2d`` loops over output
positions in scalar C++; on CPU it costs ~15x a plain 3x3 conv of the same
shape and barely shrinks when channels are pruned, so it hides most of the
speedup of a pruned CenterNet DLA-34 (its neck is all DCNv2). This version
samples with ``F.grid_sample`` (vectorised, one set of bilinear weights per
point shared by all channels) and contracts with one matmul, so its cost is
``C_in * k*k * H_out*W_out`` samples plus the conv's own MACs: both shrink with
the kept channels. Autograd gives the gradients of input, offsets, mask,
weight and bias, so it trains too.

Semantics are mmcv's (and the original DCNv2's): offsets are laid out
``[N, deform_groups * k*k * 2, H_out, W_out]`` as ``(dy, dx)`` pairs, tap
``t = i * k_w + j`` at channels ``2t`` (dy) and ``2t + 1`` (dx); the modulation
mask is ``[N, deform_groups * k*k, H_out, W_out]``; a sample at ``(y, x)``
interpolates the four neighbours bilinearly and neighbours outside the image
count as zero (so any point with ``y <= -1``, ``y >= H``, ``x <= -1`` or
``x >= W`` reads 0). ``grid_sample(..., padding_mode='zeros',
align_corners=False)`` does exactly that once pixel ``x`` is written as
``(2x + 1) / W - 1``; the two agree to float rounding (tests: 1e-5).
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['modulated_deform_conv2d']

IntPair = Union[int, Tuple[int, int]]

#: Bytes of sampled columns per band of output rows without autograd (about
#: one core's L2; see `modulated_deform_conv2d`).
COLUMN_BYTES = 2 << 20


def _pair(v: IntPair, name: str) -> Tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) for i in v):
        raise ValueError(f'modulated_deform_conv2d: {name} must be an int or '
                         f'a pair of ints, got {v!r}')
    return v


def modulated_deform_conv2d(x: Tensor,
                            offset: Tensor,
                            mask: Tensor,
                            weight: Tensor,
                            bias: Optional[Tensor] = None,
                            stride: IntPair = 1,
                            padding: IntPair = 0,
                            dilation: IntPair = 1,
                            groups: int = 1,
                            deform_groups: int = 1) -> Tensor:
    """DCNv2: ``y[o, p] = b[o] + sum_{c,t} w[o, c, t] * m[t, p] * x_c(p + p_t
    + d_t(p))`` with bilinear ``x_c`` and zero outside the image.

    Args:
        x (Tensor): Input [N, C_in, H, W].
        offset (Tensor): [N, 2 * deform_groups * kh*kw, H_out, W_out], pixels,
            ``(dy, dx)`` per tap (mmcv's layout).
        mask (Tensor): Modulation [N, deform_groups * kh*kw, H_out, W_out]
            (mmcv's ``Pack`` passes ``sigmoid`` of its raw output).
        weight (Tensor): [C_out, C_in / groups, kh, kw].
        bias (Tensor | None): [C_out].
        stride, padding, dilation (int | (int, int)): As ``nn.Conv2d``.
        groups (int): Conv groups; ``C_in`` and ``C_out`` divisible by it.
        deform_groups (int): Offset groups; ``C_in`` divisible by it.

    Returns:
        Tensor: [N, C_out, H_out, W_out].
    """
    sh, sw = _pair(stride, 'stride')
    ph, pw = _pair(padding, 'padding')
    dh, dw = _pair(dilation, 'dilation')
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError('modulated_deform_conv2d: expected x [N, C, H, W] '
                         f'and weight [C_out, C_in/groups, kh, kw], got '
                         f'{tuple(x.shape)} and {tuple(weight.shape)}')
    n, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    taps = kh * kw
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    dg = deform_groups
    expect = {
        'deform_groups': (dg >= 1 and c_in % dg == 0,
                          f'a divisor of C_in={c_in}', None),
        'weight': (c_per_group * groups == c_in and c_out % groups == 0,
                   f'[C_out divisible by groups={groups}, C_in/groups='
                   f'{c_in // max(groups, 1)}, kh, kw]', weight),
        'offset': (tuple(offset.shape) == (n, 2 * dg * taps, h_out, w_out),
                   f'{[n, 2 * dg * taps, h_out, w_out]}', offset),
        'mask': (tuple(mask.shape) == (n, dg * taps, h_out, w_out),
                 f'{[n, dg * taps, h_out, w_out]}', mask),
    }
    for key, (ok, form, t) in expect.items():
        if not ok:
            got = dg if t is None else list(t.shape)
            raise ValueError(
                f'modulated_deform_conv2d: {key} must be {form} for x '
                f'{list(x.shape)}, got {got}')

    dt, dev = x.dtype, x.device
    # Where each tap of each output pixel samples before its learnt offset.
    tap_y = (torch.arange(kh, dtype=dt, device=dev) * dh).repeat_interleave(kw)
    tap_x = (torch.arange(kw, dtype=dt, device=dev) * dw).repeat(kh)
    out_y = torch.arange(h_out, dtype=dt, device=dev) * sh - ph
    out_x = torch.arange(w_out, dtype=dt, device=dev) * sw - pw
    off = offset.reshape(n, dg, taps, 2, h_out, w_out)
    py = off[:, :, :, 0] + (tap_y[:, None, None] + out_y[None, :, None])
    px = off[:, :, :, 1] + (tap_x[:, None, None] + out_x[None, None, :])
    # grid_sample wants (x, y) in [-1, 1]; [N, dg, taps, H_out, W_out, 2].
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)
    mask = mask.reshape(n, dg, 1, taps, h_out, w_out)
    x = x.reshape(n * dg, c_in // dg, h, w)
    weight = weight.reshape(groups, c_out // groups, c_per_group * taps)
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (x, offset, mask, weight, bias))
    # Without autograd, work in bands of output rows whose sampled columns
    # fit in ~L2 (COLUMN_BYTES): the columns are the largest tensor here
    # (C_in * k*k * H_out*W_out) and a fresh full-size one costs more in page
    # faults and cache misses than the sampling (~1.6x faster at DLA-34's
    # stride-4 layers). With autograd, one band: the graph keeps them anyway.
    row_bytes = c_in * taps * w_out * x.element_size()
    rows = h_out if grad else max(1, COLUMN_BYTES // row_bytes)
    out = None if rows >= h_out else x.new_empty(n, c_out, h_out, w_out)
    for r0 in range(0, h_out, rows):
        r1 = min(h_out, r0 + rows)
        cells = (r1 - r0) * w_out
        sampled = F.grid_sample(
            x, grid[:, :, :, r0:r1].reshape(n * dg, taps * (r1 - r0), w_out,
                                            2),
            mode='bilinear', padding_mode='zeros', align_corners=False)
        # [N*dg, C/dg, taps*rows, W_out] -> columns [N, groups, C/g*taps, L]
        sampled = sampled.view(n, dg, c_in // dg, taps, cells)
        band_mask = mask[..., r0:r1, :].reshape(n, dg, 1, taps, cells)
        sampled = sampled * band_mask if grad else sampled.mul_(band_mask)
        band = torch.matmul(
            weight, sampled.view(n, groups, c_per_group * taps, cells))
        band = band.view(n, c_out, r1 - r0, w_out)
        if out is None:
            out = band
        else:
            out[:, :, r0:r1] = band
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1) if grad else \
            out.add_(bias.view(1, c_out, 1, 1))
    return out
