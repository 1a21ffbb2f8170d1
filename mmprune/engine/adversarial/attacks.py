"""Attacks on a detector batch, in pixel space, before mean/std normalisation.

The attack math is :mod:`mmprune.core.attack`; this module connects it to
an mmdet detector:

* `FastAT` and `PGD` are the attack configs (registered in mmdet's
  ``TASK_UTILS``). Their ``eps`` / ``alpha`` are stated in **[0, 1] units of
  the pixel range** (the seed's 2/255, 2.5/255, 0.5/255) and multiplied by
  ``pixel_max`` (255 for mmdet's 8-bit loaders) into the pixel units the
  core works in.
* `attack_batch` takes a batch the data preprocessor has already
  normalised (``(pixels - mean) / std``, padded), maps it back to pixels,
  perturbs it there, and returns the normalised adversarial batch. The
  perturbation is 0 on the batch padding (``img_shape`` vs the batch size)
  and outside the ``border`` box that mmdet's ``RandomCenterCropPad`` test
  mode writes. The model's buffers (BatchNorm running stats) are restored
  after the attack and its ``.grad`` fields are never touched (the core
  differentiates with respect to the perturbation only).
* `adversarial_train_step` is mmengine's ``train_step`` with the forward on
  the adversarial batch: the adversarial task loss goes through
  ``optim_wrapper.update_params``, so AMP wrappers and optimizer wrappers
  that add their own loss term there compose unchanged.

Known limit: padding added *inside* the data pipeline by mmdet's ``Pad``
transform overwrites ``img_shape`` and leaves no trace in the metainfo; it
is treated as image, as the model itself sees it.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Dict, Optional, Sequence

import torch
from mmdet.registry import TASK_UTILS
from mmengine.model import BaseModel, ImgDataPreprocessor, is_model_wrapper
from mmengine.optim import OptimWrapper
from torch import Tensor, nn

from mmprune.core.attack import fgsm_random_init, pgd, preserve_buffers

__all__ = [
    'FastAT', 'PGD', 'build_attack', 'unwrap_model', 'valid_pixel_mask',
    'attack_batch', 'adversarial_train_step'
]


class _LinfAttack:
    """Shared checks and unit conversion of the L-inf attack configs."""

    def __init__(self, eps: float, alpha: float, pixel_max: float) -> None:
        name = type(self).__name__
        for key, value, low_ok in (('eps', eps, True), ('alpha', alpha,
                                                        False)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f'{name}.{key} must be a number in [0, 1] '
                                f'units of the pixel range, got {value!r}')
            if value > 1 or value < 0 or (value == 0 and not low_ok):
                raise ValueError(
                    f'{name}.{key}={value}: expected a value in [0, 1] units '
                    'of the pixel range, e.g. 2/255 (the code multiplies it '
                    f'by pixel_max={pixel_max})')
        if not pixel_max > 0:
            raise ValueError(f'{name}.pixel_max must be > 0 (the value of a '
                             f'white pixel in loader units), got {pixel_max}')
        self.eps = float(eps)
        self.alpha = float(alpha)
        self.pixel_max = float(pixel_max)

    @property
    def eps_pixels(self) -> float:
        """``eps`` in pixel units (``eps * pixel_max``)."""
        return self.eps * self.pixel_max

    @property
    def alpha_pixels(self) -> float:
        """``alpha`` in pixel units (``alpha * pixel_max``)."""
        return self.alpha * self.pixel_max

    @property
    def pixel_range(self) -> tuple:
        """(0, pixel_max): the valid pixel values, in loader units."""
        return (0.0, self.pixel_max)


@TASK_UTILS.register_module()
class FastAT(_LinfAttack):
    """FGSM with random init, the attack of FastAT (Wong et al., ICLR 2020).

    Args:
        eps: L-inf radius in [0, 1] pixel units (seed: 2/255).
        alpha: step size in [0, 1] pixel units (seed: 2.5/255 = 1.25 eps).
        pixel_max: value of a white pixel in the loader's units (255).
    """

    def __init__(self, eps: float = 2 / 255, alpha: float = 2.5 / 255,
                 pixel_max: float = 255.) -> None:
        super().__init__(eps, alpha, pixel_max)

    def perturb(self, loss_fn: Callable[[Tensor], Tensor], x: Tensor,
                valid_mask: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Tensor:
        """Adversarial pixels [N, C, H, W] for clean pixels ``x``."""
        return fgsm_random_init(loss_fn, x, self.eps_pixels,
                                self.alpha_pixels, valid_mask,
                                self.pixel_range, generator)

    def __repr__(self) -> str:
        return (f'FastAT(eps={self.eps * 255:g}/255, '
                f'alpha={self.alpha * 255:g}/255)')


@TASK_UTILS.register_module()
class PGD(_LinfAttack):
    """L-inf PGD (Madry et al., 2018) for robustness evaluation or PGD-AT.

    Args:
        eps: L-inf radius in [0, 1] pixel units (seed: 2/255).
        alpha: step size in [0, 1] pixel units (seed: 0.5/255).
        steps: gradient steps (seed: 20).
        random_start: start from U(-eps, eps).
        pixel_max: value of a white pixel in the loader's units (255).
    """

    def __init__(self, eps: float = 2 / 255, alpha: float = 0.5 / 255,
                 steps: int = 20, random_start: bool = True,
                 pixel_max: float = 255.) -> None:
        super().__init__(eps, alpha, pixel_max)
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f'PGD.steps must be an integer >= 1, got '
                             f'{steps!r}')
        self.steps = int(steps)
        self.random_start = bool(random_start)

    def perturb(self, loss_fn: Callable[[Tensor], Tensor], x: Tensor,
                valid_mask: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Tensor:
        """Adversarial pixels [N, C, H, W] for clean pixels ``x``."""
        return pgd(loss_fn, x, self.eps_pixels, self.alpha_pixels,
                   self.steps, self.random_start, valid_mask,
                   self.pixel_range, generator)

    def __repr__(self) -> str:
        return (f'PGD(eps={self.eps * 255:g}/255, '
                f'alpha={self.alpha * 255:g}/255, steps={self.steps}, '
                f'random_start={self.random_start})')


def build_attack(cfg, key: str):
    """Build an attack from ``cfg`` (a dict with ``type``) or pass one through.

    ``key`` names the config entry in error messages (e.g.
    ``'test_cfg.attack'``). The result has ``perturb(loss_fn, x,
    valid_mask, generator)``.
    """
    if hasattr(cfg, 'perturb'):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(
            f'{key} must be a dict with a "type", e.g. dict(type="PGD", '
            f'eps=2/255, alpha=0.5/255, steps=20); got {cfg!r}')
    attack = TASK_UTILS.build(cfg)
    if not hasattr(attack, 'perturb'):
        raise TypeError(f'{key}: {cfg["type"]} has no perturb(loss_fn, x, '
                        'valid_mask, generator) method; expected an attack '
                        'such as FastAT or PGD')
    return attack


def unwrap_model(model: nn.Module) -> BaseModel:
    """The detector inside a DDP-style model wrapper (or the model itself)."""
    return model.module if is_model_wrapper(model) else model


def _normalisation(model: BaseModel) -> tuple:
    """(mean, std) as [C, 1, 1] tensors, or (None, None) if not normalised."""
    pre = getattr(model, 'data_preprocessor', None)
    if not isinstance(pre, ImgDataPreprocessor):
        raise TypeError(
            'adversarial attack: model.data_preprocessor must be an '
            'ImgDataPreprocessor (e.g. mmdet DetDataPreprocessor) so the '
            'perturbation can be applied in pixel space; got '
            f'{type(pre).__name__}')
    if not pre._enable_normalize:
        return None, None
    return pre.mean, pre.std


def valid_pixel_mask(data_samples: Sequence, shape: Sequence[int],
                     device=None) -> Tensor:
    """1 on real image pixels, 0 on padding; float [N, 1, H, W].

    Real pixels are the top-left ``img_shape`` of each image in the batch
    (the data preprocessor pads bottom / right), further limited to the
    ``border`` box ``[top, bottom, left, right]`` where that meta key exists
    (mmdet's ``RandomCenterCropPad`` in test mode pastes the image there).
    """
    n, _, h, w = shape
    if len(data_samples) != n:
        raise ValueError(f'valid_pixel_mask: {len(data_samples)} data '
                         f'samples for a batch of {n} images')
    mask = torch.zeros((n, 1, h, w), device=device)
    for i, sample in enumerate(data_samples):
        meta = sample.metainfo
        if 'img_shape' not in meta:
            raise KeyError(
                'adversarial attack: data sample has no "img_shape" meta; '
                'keep it in the pipeline\'s PackDetInputs.meta_keys')
        ih, iw = (int(v) for v in meta['img_shape'][:2])
        top, bottom, left, right = 0, ih, 0, iw
        if 'border' in meta:
            b = [int(round(float(v))) for v in meta['border']]
            top, bottom = max(top, b[0]), min(bottom, b[1])
            left, right = max(left, b[2]), min(right, b[3])
        mask[i, :, top:min(bottom, h), left:min(right, w)] = 1.0
    return mask


def attack_batch(model: nn.Module,
                 inputs: Tensor,
                 data_samples: Sequence,
                 attack,
                 generator: Optional[torch.Generator] = None,
                 context: Optional[Callable[[], ContextManager]] = None,
                 loss_scale: Optional[Callable[[Tensor], Tensor]] = None
                 ) -> Tensor:
    """Adversarial version of a preprocessed batch; the model is unchanged.

    Args:
        model: the detector (or its DDP wrapper); its ``forward(inputs,
            data_samples, mode='loss')`` and ``parse_losses`` define the
            attacked loss (the same total loss training minimises).
        inputs: normalised batch [N, C, H, W] from the data preprocessor.
        data_samples: samples with ``gt_instances`` in the input frame and
            ``img_shape`` (and ``border`` when present) metainfo.
        attack: an attack with ``perturb`` (`FastAT`, `PGD`).
        generator: RNG for the random start (None: torch's global RNG).
        context: factory of the context each attack forward runs in (AMP
            autocast); None for none.
        loss_scale: applied to the attacked loss before differentiation
            (an AMP loss scaler's ``scale``, so fp16 input gradients do not
            underflow; the sign step does not depend on it).

    Returns:
        Normalised adversarial batch [N, C, H, W], detached; equal to
        ``inputs`` exactly wherever the perturbation is 0 (padding).
    """
    module = unwrap_model(model)
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        raise TypeError('adversarial attack: the data preprocessor must '
                        'return a batched tensor [N, C, H, W]; got '
                        f'{type(inputs).__name__}')
    mean, std = _normalisation(module)
    inputs = inputs.detach()
    x = inputs if std is None else inputs * std + mean
    mask = valid_pixel_mask(data_samples, inputs.shape, inputs.device)
    make_context = context or contextlib.nullcontext

    def to_inputs(x_adv: Tensor) -> Tensor:
        # Adding the normalised delta (rather than renormalising x_adv)
        # keeps unperturbed pixels bit-identical to the clean batch.
        delta = x_adv - x
        return inputs + (delta if std is None else delta / std)

    def loss_fn(x_adv: Tensor) -> Tensor:
        with make_context():
            losses = module(to_inputs(x_adv), data_samples, mode='loss')
        loss, _ = module.parse_losses(losses)
        return loss_scale(loss) if loss_scale is not None else loss

    with preserve_buffers(module):
        x_adv = attack.perturb(loss_fn, x, mask, generator)
    return to_inputs(x_adv).detach()


def adversarial_train_step(model: nn.Module, data: dict,
                           optim_wrapper: OptimWrapper, attack,
                           generator: Optional[torch.Generator] = None
                           ) -> Dict[str, Tensor]:
    """mmengine's ``train_step`` on the adversarial batch (FastAT, PGD-AT).

    Preprocesses ``data`` once (train-time batch augmentations included),
    attacks it with `attack_batch` under the optim wrapper's context (AMP
    autocast) and loss scale, then runs the usual forward, ``parse_losses``
    and ``optim_wrapper.update_params(loss)`` on the adversarial batch.
    Returns the log variables of the adversarial loss.
    """
    module = unwrap_model(model)
    with optim_wrapper.optim_context(model):
        data = module.data_preprocessor(data, True)
    inputs, samples = data['inputs'], data['data_samples']
    scaler = getattr(optim_wrapper, 'loss_scaler', None)
    adv_inputs = attack_batch(
        model, inputs, samples, attack, generator,
        context=lambda: optim_wrapper.optim_context(model),
        loss_scale=scaler.scale if scaler is not None else None)
    with optim_wrapper.optim_context(model):
        # Through the wrapper (not module), so DDP syncs this backward.
        losses = model(inputs=adv_inputs, data_samples=samples, mode='loss')
    loss, log_vars = module.parse_losses(losses)
    optim_wrapper.update_params(loss)
    return log_vars
