"""Start-up validation of `InTrainPruningHook`'s arguments.

Every error names the config key (``custom_hooks.InTrainPruningHook.<arg>``)
and the expected form, before anything is traced.
"""
from mmprune.core import BINARIZE_MODES, COSTS, HW_LOSS_FORMS, TARGET_SCHEDULES


def check_hook_args(a: dict) -> None:
    """Raise ValueError for the first bad argument in ``a`` (the hook's
    ``__init__`` locals)."""
    psi_target, b = a['psi_target'], a['b']
    prune_start, prune_end = a['prune_start'], a['prune_end']
    loss_form, target_schedule = a['loss_form'], a['target_schedule']
    target_ramp, binarize = a['target_ramp'], a['binarize']
    lag_integral, input_shape = a['lag_integral'], a['input_shape']
    threshold, mask_init = a['threshold'], a['mask_init']
    tolerance, channel_multiple = a['tolerance'], a['channel_multiple']
    roi_budget, cost = a['roi_budget'], a['cost']
    key = 'custom_hooks.InTrainPruningHook'
    if not 0.0 < float(psi_target) <= 1.0:
        raise ValueError(f'{key}.psi_target must lie in (0, 1], got '
                         f'{psi_target!r}')
    if b != 'auto' and (isinstance(b, str) or float(b) < 0):
        raise ValueError(f"{key}.b must be a number >= 0 or 'auto', got "
                         f'{b!r}')
    if prune_start < 0 or (prune_end is not None
                           and prune_end <= prune_start):
        raise ValueError(f'{key}: need 0 <= prune_start < prune_end, got '
                         f'prune_start={prune_start}, '
                         f'prune_end={prune_end}')
    if loss_form not in HW_LOSS_FORMS:
        raise ValueError(f'{key}.loss_form must be one of {HW_LOSS_FORMS}'
                         f', got {loss_form!r}')
    if target_schedule not in TARGET_SCHEDULES:
        raise ValueError(f'{key}.target_schedule must be one of '
                         f'{TARGET_SCHEDULES}, got {target_schedule!r}')
    if not 0.0 < float(target_ramp) <= 1.0:
        raise ValueError(f'{key}.target_ramp must lie in (0, 1], got '
                         f'{target_ramp!r}')
    if binarize not in BINARIZE_MODES:
        raise ValueError(f'{key}.binarize must be one of '
                         f'{BINARIZE_MODES}, got {binarize!r}')
    if not 0.0 <= float(lag_integral) < 1.0:
        raise ValueError(f'{key}.lag_integral must lie in [0, 1), got '
                         f'{lag_integral!r}')
    if input_shape is not None and (
            len(input_shape) != 2 or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1
                for v in input_shape)):
        raise ValueError(f'{key}.input_shape must be (H, W), two ints '
                         f'>= 1, got {input_shape!r}')
    for name, v in (('threshold', threshold), ('mask_init', mask_init)):
        if isinstance(v, bool) or not 0.0 < float(v) <= 1.0:
            raise ValueError(f'{key}.{name} must lie in (0, 1], got '
                             f'{v!r}')
    if float(tolerance) < 0:
        raise ValueError(f'{key}.tolerance must be >= 0, got '
                         f'{tolerance!r}')
    if int(channel_multiple) < 1:
        raise ValueError(f'{key}.channel_multiple must be an int >= 1, '
                         f'got {channel_multiple!r}')
    if not (roi_budget in ('auto', None) or isinstance(roi_budget, dict)):
        raise ValueError(f"{key}.roi_budget must be 'auto', None or a "
                         f'dict of prefix -> RoIs, got {roi_budget!r}')
    if cost not in COSTS:
        raise ValueError(f'{key}.cost must be one of {COSTS}, got {cost!r}')
    if cost == 'latency' and not a['latency_table']:
        raise ValueError(
            f"{key}.latency_table: cost='latency' needs the path of a table "
            'built by tools/analysis_tools/build_latency_table.py CONFIG '
            '--out lut.json')
