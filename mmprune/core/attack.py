"""L-infinity attacks over a loss closure: FGSM with random init and PGD.

Pure torch, shared by adversarial training (FastAT) and robustness
evaluation (PGD). Everything works on images in *pixel units*: ``x`` is a
float tensor [N, C, H, W] whose values live in ``pixel_range`` (0..255 for
mmdet's loaders), and ``eps`` / ``alpha`` are given in the same units. A
config that states eps = 2/255 in [0, 1] units therefore passes
``eps = 2/255 * 255 = 2`` here; :mod:`mmprune.engine.adversarial` does that
conversion.

The feasible set of an attack on ``x`` is
``{x' : |x' - x| <= eps, x' in pixel_range, x' = x where valid_mask = 0}``.
A pixel that the data pipeline already put outside ``pixel_range`` (some
photometric augmentations do) may stay where it is: the attack never moves a
pixel further out of range, and never by more than ``eps``.

The loss closure ``loss_fn(x_adv) -> scalar`` is differentiated with
``torch.autograd.grad`` with respect to the perturbation only, so the
parameters' ``.grad`` fields are never written (gradient accumulation in the
caller is safe). Modules whose forward mutates state (BatchNorm running
statistics in train mode) should be wrapped in :func:`preserve_buffers`.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor], Tensor]

__all__ = ['fgsm_random_init', 'pgd', 'preserve_buffers', 'LossFn']


def _check_args(x: Tensor, eps: float, alpha: float,
                valid_mask: Optional[Tensor],
                pixel_range: Tuple[float, float]) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or \
            not x.is_floating_point():
        raise ValueError(
            'attack: x must be a float tensor [N, C, H, W] in pixel units, '
            f'got {type(x).__name__} '
            f'{tuple(x.shape) if isinstance(x, Tensor) else ""}')
    if not eps >= 0:
        raise ValueError(f'attack: eps must be >= 0 (pixel units), got {eps}')
    if not alpha > 0:
        raise ValueError(
            f'attack: alpha must be > 0 (pixel units), got {alpha}')
    lo, hi = pixel_range
    if not lo < hi:
        raise ValueError('attack: pixel_range must be (low, high) with '
                         f'low < high, got {pixel_range}')
    if valid_mask is not None:
        n, _, h, w = x.shape
        if valid_mask.dim() != 4 or valid_mask.shape[1] != 1 or \
                tuple(valid_mask.shape[2:]) != (h, w) or \
                valid_mask.shape[0] not in (1, n):
            raise ValueError(
                'attack: valid_mask must be [N, 1, H, W] (or [1, 1, H, W]) '
                f'matching x {tuple(x.shape)}, got {tuple(valid_mask.shape)}')


def _input_grad(loss_fn: LossFn, x_adv: Tensor) -> Tuple[Tensor, Tensor]:
    """d loss_fn / d x at ``x_adv``; returns (grad [N,C,H,W], loss scalar)."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x_adv)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(
                'attack: loss_fn must return a scalar tensor, got '
                f'{type(loss).__name__}'
                f'{tuple(loss.shape) if isinstance(loss, Tensor) else ""}')
        if not loss.requires_grad:
            raise RuntimeError(
                'attack: the loss returned by loss_fn does not depend on its '
                'input (no gradient path to x); expected a loss computed '
                'from x_adv')
        (grad, ) = torch.autograd.grad(loss.reshape(()), x_adv,
                                       allow_unused=True)
    if grad is None:
        raise RuntimeError(
            'attack: the loss returned by loss_fn does not depend on its '
            'input (no gradient path to x); expected a loss computed from '
            'x_adv')
    # Under fp16 autocast an overflowing backward gives inf/nan; a nan
    # entry makes no step on that element instead of poisoning the image.
    return torch.nan_to_num(grad, nan=0.0), loss.detach()


def _project(x: Tensor, delta: Tensor, eps: float, lo: Tensor, hi: Tensor,
             mask: Optional[Tensor]) -> Tensor:
    """Delta clipped to the eps-ball, the (per-pixel) range and the mask."""
    delta = delta.clamp(-eps, eps)
    delta = torch.maximum(torch.minimum(x + delta, hi), lo) - x
    if mask is not None:
        delta = delta * mask
    return delta


def _attack(loss_fn: LossFn, x: Tensor, eps: float, alpha: float,
            steps: int, random_start: bool, valid_mask: Optional[Tensor],
            pixel_range: Tuple[float, float],
            generator: Optional[torch.Generator]) -> Tensor:
    _check_args(x, eps, alpha, valid_mask, pixel_range)
    if int(steps) != steps or steps < 1:
        raise ValueError(f'attack: steps must be an integer >= 1, got '
                         f'{steps}')
    x = x.detach()
    # Per-pixel bounds that keep x itself feasible (see module docstring).
    lo = torch.clamp(x, max=float(pixel_range[0]))
    hi = torch.clamp(x, min=float(pixel_range[1]))
    mask = None
    if valid_mask is not None:
        mask = (valid_mask.to(device=x.device) > 0).to(x.dtype)
    if random_start:
        u = torch.rand(x.shape, generator=generator, device=x.device,
                       dtype=x.dtype)
        delta = (2.0 * u - 1.0) * eps
    else:
        delta = torch.zeros_like(x)
    delta = _project(x, delta, eps, lo, hi, mask)
    for _ in range(int(steps)):
        grad, _ = _input_grad(loss_fn, x + delta)
        delta = _project(x, delta + alpha * grad.sign(), eps, lo, hi, mask)
    return (x + delta).detach()


def fgsm_random_init(loss_fn: LossFn,
                     x: Tensor,
                     eps: float,
                     alpha: float,
                     valid_mask: Optional[Tensor] = None,
                     pixel_range: Tuple[float, float] = (0., 255.),
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """FGSM with a random start, the attack of FastAT (Wong et al., 2020).

    ``delta ~ U(-eps, eps)``, then one step
    ``delta = clip(delta + alpha * sign(grad_delta loss_fn(x + delta)),
    -eps, eps)``, and ``x + delta`` clamped to ``pixel_range``.

    Args:
        loss_fn: maps an image batch [N, C, H, W] (pixel units) to a scalar
            loss to *increase*.
        x: clean images [N, C, H, W], float, pixel units.
        eps: L-inf radius in pixel units (e.g. 2/255 * 255 = 2.0).
        alpha: step size in pixel units (FastAT: 1.25 * eps).
        valid_mask: [N, 1, H, W] (or [1, 1, H, W]), 1 on real pixels, 0 on
            padding; delta is 0 wherever it is 0. None: every pixel is real.
        pixel_range: (low, high) of a valid pixel, in pixel units.
        generator: torch.Generator on ``x.device`` for the random start;
            None uses torch's global RNG.

    Returns:
        The adversarial images [N, C, H, W], detached, same dtype as ``x``.
    """
    return _attack(loss_fn, x, eps, alpha, 1, True, valid_mask, pixel_range,
                   generator)


def pgd(loss_fn: LossFn,
        x: Tensor,
        eps: float,
        alpha: float,
        steps: int,
        random_start: bool = True,
        valid_mask: Optional[Tensor] = None,
        pixel_range: Tuple[float, float] = (0., 255.),
        generator: Optional[torch.Generator] = None) -> Tensor:
    """Projected gradient descent (Madry et al., 2018), L-inf, signed steps.

    Starts from ``U(-eps, eps)`` (``random_start``) or from ``x``, then
    ``steps`` times: ``delta += alpha * sign(grad)``, project onto the
    feasible set (eps-ball, ``pixel_range``, ``valid_mask``).

    Args:
        loss_fn, x, eps, alpha, valid_mask, pixel_range, generator: as in
            :func:`fgsm_random_init` (pixel units).
        steps: number of gradient steps (the seed's evaluation: 20).
        random_start: start from a uniform point in the eps-ball.

    Returns:
        The adversarial images [N, C, H, W], detached, same dtype as ``x``.
    """
    return _attack(loss_fn, x, eps, alpha, steps, random_start, valid_mask,
                   pixel_range, generator)


@contextlib.contextmanager
def preserve_buffers(module: nn.Module) -> Iterator[Dict[str, Tensor]]:
    """Restore every buffer of ``module`` on exit (BN running stats included).

    An attack runs extra forwards in train mode; BatchNorm would fold those
    adversarial batches into ``running_mean`` / ``running_var`` /
    ``num_batches_tracked``. This saves a copy of each buffer and copies it
    back in place on exit, so the module's state is as if the attack never
    ran. Yields the saved copies (name -> tensor).
    """
    saved = {name: buf.detach().clone()
             for name, buf in module.named_buffers() if buf is not None}
    try:
        yield saved
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                if name in saved:
                    buf.copy_(saved[name])
