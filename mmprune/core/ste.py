"""Clipped straight-through binariser (METHOD.md section 2)."""

import torch
from torch import Tensor


class _ClippedSTE(torch.autograd.Function):
    """Forward ``1[m >= threshold]``; gradient passes where ``0 < m < 1``
    (``0 <= m < 1`` when ``revive``)."""

    @staticmethod
    def forward(ctx, m: Tensor, threshold: float, revive: bool) -> Tensor:
        ctx.save_for_backward(m)
        ctx.revive = revive
        return (m >= threshold).to(m.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (m,) = ctx.saved_tensors
        # The window is (0, 1) whatever the threshold: masks at the init value
        # 1.0 sit on its edge, so only the mask regulariser can move them at
        # first. With `revive` the masks are clamped to [0, 1] after each
        # step and the window includes 0, so a mask that reached 0 still
        # gets a gradient and its channel can come back.
        low = (m >= 0) if ctx.revive else (m > 0)
        window = low & (m < 1)
        return grad * window.to(grad.dtype), None, None


def binarize(m: Tensor, threshold: float = 0.5, revive: bool = False) -> Tensor:
    """Binarise continuous masks with the clipped straight-through estimator.

    Args:
        m: continuous mask values, any shape (usually ``[C]``), floating point.
        threshold: channels with ``m >= threshold`` are kept.
        revive: let the gradient through at ``m == 0`` too (the seed's
            estimator, ``revive=False``, stops it at ``m <= 0``).

    Returns:
        A tensor of ``m``'s shape and dtype holding 0.0 / 1.0. Its gradient
        with respect to ``m`` is 1 where ``0 < m < 1`` (``0 <= m < 1``
        with ``revive``) and 0 elsewhere.
    """
    if not isinstance(m, Tensor) or not m.is_floating_point():
        raise TypeError(
            'binarize expects a floating point tensor, got '
            f'{type(m).__name__}'
            + (f' of dtype {m.dtype}' if isinstance(m, Tensor) else '')
        )
    return _ClippedSTE.apply(m, float(threshold), bool(revive))
