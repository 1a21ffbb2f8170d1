"""The hardware-cost loss L_HW (METHOD.md section 3b)."""

from typing import Union

import torch
from torch import Tensor

HW_LOSS_FORMS = ('hinge', 'abs', 'square', 'band')


def hw_loss(
    psi: Tensor,
    psi_target: Union[float, Tensor],
    form: str = 'hinge',
    tol: float = 0.0,
    integral: float = 0.0,
) -> Tensor:
    """Penalty for a cost ratio ``psi`` above (or away from) ``psi_target``.

    Args:
        psi: scalar tensor, the cost ratio from `CostModel.psi` (in [0, 1]).
        psi_target: the target ratio, in (0, 1].
        form: ``'hinge'`` = ``max(0, psi - target)`` (0 at and below target),
            ``'abs'`` = ``|psi - target|``,
            ``'square'`` = ``(psi - target)**2``,
            ``'band'`` = ``relu(psi - target)**2 + relu(target - tol -
            psi)**2``: the square, with no pull inside the accepted band
            ``[target - tol, target]`` (the projection's band), so masks
            that reached it are left to the task loss.
        tol: the band's width below the target (``'band'`` only).
        integral: the integral action's state (`integrate_lag`, >= 0); adds
            ``2 * integral * (psi - target)``, whose slope is that of the
            square form at a lag of ``integral``. 0 (the seed's) adds
            nothing.

    Returns:
        A scalar tensor of ``psi``'s dtype, differentiable in ``psi``.
    """
    if form not in HW_LOSS_FORMS:
        raise ValueError(
            f'hw_loss: form must be one of {HW_LOSS_FORMS}, got {form!r}'
        )
    t = float(psi_target)
    if not 0.0 < t <= 1.0:
        raise ValueError(f'hw_loss: psi_target must lie in (0, 1], got {t}')
    if not isinstance(psi, Tensor) or psi.numel() != 1:
        raise TypeError('hw_loss: psi must be a one-element tensor')
    if integral < 0:
        raise ValueError(f'hw_loss: integral must be >= 0, got {integral}')
    d = psi.reshape(()) - t
    if form == 'hinge':
        loss = torch.clamp(d, min=0.0)
    elif form == 'abs':
        loss = d.abs()
    elif form == 'band':
        if tol < 0:
            raise ValueError(f'hw_loss: tol must be >= 0, got {tol}')
        above = torch.clamp(d, min=0.0)
        below = torch.clamp(-d - float(tol), min=0.0)
        loss = above * above + below * below
    else:
        loss = d * d
    if integral:
        loss = loss + 2.0 * float(integral) * d
    return loss

