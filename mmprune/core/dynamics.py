"""The dynamics of in-train pruning: target schedule, normalisation, b.

These decide how fast the masks move and where to (README, "How the masks
reach the target"). The seed's form is a constant target, an unnormalised
``L_HW`` and a hand-set ``b``; the defaults anneal the target, normalise
``L_HW`` per channel and pick ``b`` from the window's length.
"""

from .cost import CostModel

TARGET_SCHEDULES = ('constant', 'linear', 'cubic')


def scheduled_target(
    progress: float, psi_target: float, schedule: str = 'cubic',
    ramp: float = 0.75
) -> float:
    """The target psi at a point of the prune window.

    Gradual pruning (Zhu & Gupta, 2017): the target starts at 1 and falls to
    ``psi_target`` over the first ``ramp`` of the window, then stays there, so
    the masks settle at the final target before they freeze.

    Args:
        progress: position in the window, 0 at ``prune_start``, 1 at
            ``prune_end`` (clipped to [0, 1]).
        psi_target: the final target in (0, 1].
        schedule: ``'constant'`` (the seed's: ``psi_target`` throughout),
            ``'linear'`` or ``'cubic'``
            (``psi* + (1 - psi*) * (1 - s) ** 3``, ``s = progress / ramp``:
            fast at first, when the cheap cuts are plenty, slow at the end).
        ramp: fraction of the window over which the target falls, in (0, 1].

    Returns:
        The target ratio for this iteration (a float in [psi_target, 1]).
    """
    if schedule not in TARGET_SCHEDULES:
        raise ValueError(
            f'scheduled_target: schedule must be one of {TARGET_SCHEDULES}, '
            f'got {schedule!r}'
        )
    if not 0.0 < ramp <= 1.0:
        raise ValueError(f'scheduled_target: ramp must lie in (0, 1], got {ramp}')
    t = float(psi_target)
    if schedule == 'constant':
        return t
    s = min(max(float(progress) / ramp, 0.0), 1.0)
    left = (1.0 - s) ** 3 if schedule == 'cubic' else 1.0 - s
    return t + (1.0 - t) * left


def hw_scale(cost_model: CostModel) -> float:
    """``1 / mean(d psi / d B_c)`` over the dense model's prunable channels.

    Multiplying ``L_HW`` by it makes the average channel's gradient equal
    to ``L_HW'(psi)``, whatever the model's size: psi's gradient per channel
    shrinks as 1 / (channel count), which made the seed's ``b`` tied to the
    model (on CenterNet DLA-34 the median is 1.4e-4).
    """
    g = cost_model.marginals()
    g = g[g > 0]
    if g.numel() == 0:
        raise ValueError(
            'hw_scale: psi does not depend on any mask (nothing prunable)'
        )
    return 1.0 / float(g.mean())


#: psi lag behind the scheduled target at which `auto_b` sizes the pull.
AUTO_B_LAG = 0.02
#: Share of psi's lag that one mask step closes under `auto_b` (count mode).
AUTO_B_GAIN = 0.3


def auto_b(
    cost_model: CostModel,
    lr: float,
    window_iters: int,
    threshold: float = 0.5,
    loss_form: str = 'band',
    psi_target: float = 0.5,
    normalize: bool = True,
    binarize: str = 'count',
) -> float:
    """``b`` for a window of ``window_iters`` iterations at mask lr ``lr``.

    * ``binarize='count'``: psi answers a mask step at once (a group's kept
      count is its masks' sum), so ``b`` is a controller gain: one SGD step
      on ``b * s * L_HW`` moves psi by ``lr * b * s * L_HW' * sum_c g_c^2``
      (``g_c = d psi / d B_c``, ``s`` the normalisation, 1 when off). ``b``
      makes that `AUTO_B_GAIN` of the lag: for ``'square'`` / ``'band'``
      (``L_HW' = 2 * lag``) ``b = gain / (2 * lr * s * sum g^2)``, for
      ``'hinge'`` / ``'abs'`` the step is sized at a lag of `AUTO_B_LAG`.
      It does not depend on the window's length; a target schedule that
      falls faster than about ``gain * lag`` per iteration lags behind.
    * ``'threshold'``, normalised: an average channel moves
      ``lr * b * L_HW'`` per iteration; ``b`` lets it cross from 1 to
      ``threshold`` in a tenth of the window at a lag of `AUTO_B_LAG`.
    * ``'threshold'``, seed form: the costliest channels (90th percentile
      of ``d psi / d B``) cross in half the window at ``psi = 1``.
    """
    n = max(int(window_iters), 1)
    quad = loss_form in ('square', 'band')
    g = cost_model.marginals()
    if float(g.abs().sum()) <= 0:
        raise ValueError(
            "b='auto': psi does not depend on any mask (nothing prunable)"
        )
    if binarize == 'count':
        s = hw_scale(cost_model) if normalize else 1.0
        step = lr * s * float((g * g).sum())
        if quad:
            return AUTO_B_GAIN / (2.0 * step)
        return AUTO_B_GAIN * AUTO_B_LAG / step
    if normalize:
        slope = 2.0 * AUTO_B_LAG if quad else 1.0
        return (1.0 - threshold) / (lr * slope * 0.1 * n)
    g90 = float(g.float().quantile(0.9))
    slope = 2.0 * (1.0 - psi_target) if loss_form == 'square' else 1.0
    if slope <= 0:
        raise ValueError("b='auto': psi_target is 1.0")
    return (1.0 - threshold) / (lr * g90 * slope * 0.5 * n)


#: Share of psi's lag that `integrate_lag` adds to the integral per step.
LAG_INTEGRAL_GAIN = 0.1


def integrate_lag(integral: float, psi: float, psi_t: float,
                  tol: float = 0.0, gain: float = LAG_INTEGRAL_GAIN) -> float:
    """One step of the integral action on psi's lag (a Lagrange multiplier).

    ``b='auto'`` is a proportional gain: a task gradient that holds the
    masks up with a steady force leaves a steady lag. The integral ``I``
    grows by ``gain * (psi - c)`` per step, ``c = psi_t - tol / 2`` the
    band's centre, so it grows above the centre and unwinds below it (never
    under 0: it only pulls down; the band's lower side pulls up).
    `hw_loss` adds ``2 * I * (psi - psi_t)``, so ``I`` acts as extra lag: at
    rest it balances the task force and the lag closes. With `AUTO_B_GAIN`
    0.3 and ``gain`` 0.1 a continuous psi has poles of modulus 0.84; psi
    that moves in 16-channel steps does not answer every step, the integral
    winds up meanwhile and overshoots (README, "Integral action").

    Args:
        integral: the current integral, in units of psi (>= 0).
        psi: psi after this iteration's mask step.
        psi_t: this iteration's target.
        tol: the band's width below the target.
        gain: share of the lag added per step; 0 turns the action off.

    Returns:
        The next integral (>= 0).
    """
    return max(0.0, float(integral) + gain * (psi - (psi_t - 0.5 * tol)))
