"""Adversarial training (FastAT) and robustness evaluation (PGD) for mmdet.

* :mod:`.attacks`: `FastAT` / `PGD` configs (``TASK_UTILS``), the pixel-space
  batch attack and the adversarial train step.
* :mod:`.gt_frame`: ground truth of a test batch moved into the input frame.
* :mod:`.loops`: ``AdversarialEpochBasedTrainLoop`` /
  ``AdversarialIterBasedTrainLoop`` (``train_cfg``) and
  ``AdversarialValLoop`` / ``AdversarialTestLoop`` (``val_cfg`` /
  ``test_cfg``), registered in mmdet's ``LOOPS``.
* `apply_attack_option`: what ``tools/test.py --attack pgd`` does to a config.

Units: ``eps`` and ``alpha`` in configs are in [0, 1] units of the pixel
range (2/255 ...); the attacks multiply them by ``pixel_max`` (255) because
mmdet's images are 0..255 before the data preprocessor normalises them.
"""
from __future__ import annotations

from .attacks import (
    PGD,
    FastAT,
    adversarial_train_step,
    attack_batch,
    build_attack,
    unwrap_model,
    valid_pixel_mask,
)
from .gt_frame import (
    GT_FRAMES,
    check_gt_present,
    gt_to_input_frame,
    resolve_gt_frame,
)
from .loops import (
    ADV_PREFIX,
    AdversarialEpochBasedTrainLoop,
    AdversarialIterBasedTrainLoop,
    AdversarialTestLoop,
    AdversarialValLoop,
    format_side_by_side,
    merge_clean_adv,
)

#: ``--attack`` choices and the test-loop attack each one installs (the
#: seed's robustness evaluation: PGD, eps 2/255, step 0.5/255, 20 steps).
ATTACK_OPTIONS = {
    'pgd': dict(type='PGD', eps=2 / 255, alpha=0.5 / 255, steps=20,
                random_start=True),
}


def apply_attack_option(cfg, attack: str) -> None:
    """Make ``cfg``'s test loop evaluate clean and attacked (``--attack``).

    Sets ``cfg.test_cfg`` to ``AdversarialTestLoop`` with the attack of
    `ATTACK_OPTIONS` (other ``test_cfg`` keys such as ``fp16`` are kept).
    Attack settings already in ``test_cfg.attack`` for the same attack type
    (or with no type, e.g. from ``--cfg-options test_cfg.attack.steps=10``)
    win over the defaults.

    Args:
        cfg: an mmengine ``Config`` (edited in place).
        attack: a key of `ATTACK_OPTIONS` (``'pgd'``).
    """
    if attack not in ATTACK_OPTIONS:
        raise ValueError(f'--attack {attack!r}: expected one of '
                         f'{sorted(ATTACK_OPTIONS)}')
    test_cfg = dict(cfg.get('test_cfg') or {})
    loop_type = test_cfg.get('type', 'TestLoop')
    if loop_type not in ('TestLoop', 'AdversarialTestLoop'):
        raise ValueError(
            f'--attack {attack}: test_cfg.type={loop_type!r}; expected '
            'TestLoop (or AdversarialTestLoop) to turn into the adversarial '
            'test loop')
    attack_cfg = dict(ATTACK_OPTIONS[attack])
    current = test_cfg.get('attack')
    if isinstance(current, dict) and \
            current.get('type', attack_cfg['type']) == attack_cfg['type']:
        attack_cfg.update(current)
    test_cfg.update(type='AdversarialTestLoop', attack=attack_cfg)
    cfg.test_cfg = test_cfg


__all__ = [
    'FastAT', 'PGD', 'build_attack', 'attack_batch',
    'adversarial_train_step', 'unwrap_model', 'valid_pixel_mask',
    'GT_FRAMES', 'resolve_gt_frame', 'gt_to_input_frame',
    'check_gt_present', 'AdversarialEpochBasedTrainLoop',
    'AdversarialIterBasedTrainLoop', 'AdversarialValLoop',
    'AdversarialTestLoop', 'ADV_PREFIX', 'merge_clean_adv',
    'format_side_by_side', 'ATTACK_OPTIONS', 'apply_attack_option'
]
