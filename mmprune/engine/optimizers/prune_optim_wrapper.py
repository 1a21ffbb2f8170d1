"""PruneOptimWrapper: the detector's optimizer plus the masks' own SGD.

Why an optimizer wrapper: mmengine builds the model, wraps it in DDP and
builds the optim wrapper *before* any hook runs, so masks that
`InTrainPruningHook` installs later are in neither DDP's gradient sync nor the
detector's optimizer. The wrapper is the one object every train step passes
its loss through (``optim_wrapper.update_params(loss)``), so it is where the
prune loss is added, the mask gradients are all-reduced and the masks get
their own optimizer, whatever detector or train loop is in use.

The loss it minimises (METHOD.md section 3d):
``L_prune = L_task + b * s * L_HW(psi, psi_t; I)``, with ``L_HW`` in one of
the forms of :func:`mmprune.core.hw_loss`, ``psi_t`` the target of the
current iteration, ``s`` the normalisation and ``I`` the integral action,
all set by `InTrainPruningHook` (``s = 1``, ``psi_t = psi*`` and ``I = 0``
reproduce the seed). The weights keep the
detector's optimizer on ``L_task`` (+ its own weight decay); the masks get
``SGD(lr=0.01, weight_decay=mask_weight_decay)`` (the mask decay is the
seed's ``L_reg`` on masks).
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

import torch
import torch.distributed as dist
from mmdet.registry import OPTIM_WRAPPERS
from mmengine.logging import MessageHub, print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIMIZERS

from mmprune.core import CostModel, MaskSet, hw_loss


def _has_accelerator() -> bool:
    from mmengine.device import (
        is_cuda_available,
        is_mlu_available,
        is_musa_available,
        is_npu_available,
    )
    return is_cuda_available() or is_npu_available() or \
        is_mlu_available() or is_musa_available()


#: Consecutive non-finite steps after which training stops.
MAX_NONFINITE_STEPS = 5


class _PruneMixin:
    """Mask optimizer, prune loss and mask-gradient sync for an OptimWrapper."""

    def _init_prune(self, mask_optimizer: Optional[dict],
                    mask_weight_decay: float) -> None:
        if mask_optimizer is None:
            mask_optimizer = dict(type='SGD', lr=0.01, momentum=0.0)
        if not isinstance(mask_optimizer, dict) or 'type' not in \
                mask_optimizer:
            raise TypeError(
                'optim_wrapper.mask_optimizer must be a dict with a "type", '
                f'e.g. dict(type="SGD", lr=0.01); got {mask_optimizer!r}')
        if mask_weight_decay < 0:
            raise ValueError('optim_wrapper.mask_weight_decay must be >= 0, '
                             f'got {mask_weight_decay}')
        self.mask_optimizer_cfg = dict(mask_optimizer)
        self.mask_weight_decay = float(mask_weight_decay)
        self.mask_optimizer: Optional[torch.optim.Optimizer] = None
        self.maskset: Optional[MaskSet] = None
        self.cost_model: Optional[CostModel] = None
        self.prune_active = False
        self.b = 0.0
        self.hw_scale = 1.0
        self.hw_tol = 0.0
        self.hw_integral = 0.0
        self.psi_target = 1.0
        self.loss_form = 'hinge'
        self.last_psi = 1.0
        self.last_loss_hw = 0.0
        self._pending_mask_state: Optional[dict] = None
        # Consecutive steps skipped for non-finite mask gradients.
        self.nonfinite_steps = 0
        self._skip_step = False

    # -- set up by InTrainPruningHook ---------------------------------------
    def attach_pruning(self, maskset: MaskSet, cost_model: CostModel,
                       psi_target: float, b: float, loss_form: str) -> None:
        """Take the masks and cost model; build the mask optimizer.

        Called by `InTrainPruningHook.before_run`, before a resume loads the
        optimizer state, so the mask optimizer's state is restored too.
        """
        self.maskset = maskset
        self.cost_model = cost_model
        self.psi_target = float(psi_target)
        self.b = float(b)
        self.loss_form = loss_form
        cfg = dict(self.mask_optimizer_cfg)
        cfg.setdefault('weight_decay', self.mask_weight_decay)
        cfg['params'] = list(maskset.parameters())
        self.mask_optimizer = OPTIMIZERS.build(cfg)
        if self._pending_mask_state is not None:
            self.mask_optimizer.load_state_dict(self._pending_mask_state)
            self._pending_mask_state = None

    def prune_terms(self, with_grad: bool) -> Dict[str, torch.Tensor]:
        """``psi`` and ``s * L_HW`` at the current binary masks (scalars).

        ``psi_target`` is this iteration's target (the hook schedules it).
        """
        with torch.set_grad_enabled(with_grad):
            psi = self.cost_model.psi(self.maskset.binaries())
            loss_hw = hw_loss(psi, self.psi_target, self.loss_form,
                              self.hw_tol, self.hw_integral)
            loss_hw = loss_hw * self.hw_scale
        self.last_psi = float(psi.detach())
        self.last_loss_hw = float(loss_hw.detach())
        return dict(psi=psi, loss_hw=loss_hw)

    def update_params(self, loss: torch.Tensor, step_kwargs=None,
                      zero_kwargs=None) -> None:
        """Backward ``loss (+ b * L_HW)``, then step weights and masks."""
        if self.maskset is not None:
            terms = self.prune_terms(with_grad=self.prune_active)
            if self.prune_active:
                loss = loss + self.b * terms['loss_hw']
        super().update_params(loss, step_kwargs, zero_kwargs)

    def _sync_mask_grads(self) -> None:
        # Masks joined the model after DDP wrapped it: average their
        # gradients here, as DDP does for the weights.
        if not (dist.is_available() and dist.is_initialized()) or \
                dist.get_world_size() < 2:
            return
        world = dist.get_world_size()
        for p in self.maskset.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(world)

    def _grads_finite(self) -> bool:
        """Whether every mask gradient is finite (one host sync)."""
        grads = [p.grad for p in self.maskset.parameters()
                 if p.grad is not None]
        if not grads:
            return True
        return bool(torch.stack([g.abs().max() for g in grads]).isfinite()
                    .all())

    def _check_finite(self) -> bool:
        """Skip a step whose loss was not finite; stop after a streak."""
        if self._grads_finite():
            self.nonfinite_steps = 0
            return True
        self.nonfinite_steps += 1
        it = MessageHub.get_current_instance().get_info('iter')
        where = f'iteration {it}' if it is not None else 'this step'
        if self.nonfinite_steps >= MAX_NONFINITE_STEPS:
            raise FloatingPointError(
                f'PruneOptimWrapper: the loss gave non-finite mask gradients '
                f'for {self.nonfinite_steps} steps in a row, the last at '
                f'{where}; the detector diverged (lower the lr, clip '
                'gradients, or raise min_channels)')
        print_log(f'PruneOptimWrapper: non-finite mask gradients at {where}'
                  '; step skipped (masks and weights unchanged)',
                  logger='current', level=logging.WARNING)
        return False

    def _step_masks(self) -> None:
        if self.mask_optimizer is None:
            return
        self._skip_step = False
        if self.prune_active:
            self._sync_mask_grads()
            if self._check_finite():
                self._mask_step()
                self.maskset.clamp_()
            else:
                self._skip_step = True
        # Outside the window the task loss still reaches the masks through
        # the estimator; drop it so they stay exactly where they are.
        self.mask_optimizer.zero_grad()

    def _mask_step(self) -> None:
        self.mask_optimizer.step()

    def step(self, **kwargs) -> None:
        """Step the masks (inside the window), then the detector's weights.

        A step whose mask gradients are not finite moves neither.
        """
        self._step_masks()
        if self._skip_step:
            return
        super().step(**kwargs)

    def state_dict(self) -> dict:
        """The wrapped optimizer's state plus ``mask_optimizer``."""
        state = super().state_dict()
        if self.mask_optimizer is not None:
            state['mask_optimizer'] = self.mask_optimizer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore both optimizers (the masks' one when it exists)."""
        state_dict = dict(state_dict)
        mask_state = state_dict.pop('mask_optimizer', None)
        super().load_state_dict(state_dict)
        if mask_state is not None:
            if self.mask_optimizer is None:
                self._pending_mask_state = mask_state
            else:
                self.mask_optimizer.load_state_dict(mask_state)


@OPTIM_WRAPPERS.register_module()
class PruneOptimWrapper(_PruneMixin, OptimWrapper):
    """`OptimWrapper` that also trains channel masks against a MACs target.

    Use it in place of the config's ``optim_wrapper.type``; every other key
    stays. ``InTrainPruningHook`` hands it the masks and decides when they
    train.

    Args:
        mask_optimizer: optimizer config for the masks
            (default ``dict(type='SGD', lr=0.01, momentum=0.0)``, the seed's).
        mask_weight_decay: weight decay on the masks (the seed's mask
            regulariser), default 5e-4.
        **kwargs: ``OptimWrapper`` arguments (``optimizer``, ``clip_grad``,
            ``accumulative_counts``).
    """

    def __init__(self, *args, mask_optimizer: Optional[dict] = None,
                 mask_weight_decay: float = 5e-4, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_prune(mask_optimizer, mask_weight_decay)


@OPTIM_WRAPPERS.register_module()
class PruneAmpOptimWrapper(_PruneMixin, AmpOptimWrapper):
    """`AmpOptimWrapper` with masks (use for ``--amp`` or AMP configs).

    The mask gradients come out of the same scaled backward; the loss scaler
    unscales them and skips their step on inf/nan, as for the weights.
    Without a GPU it runs bf16 autocast on CPU (``dtype='bfloat16'``).
    """

    def __init__(self, *args, mask_optimizer: Optional[dict] = None,
                 mask_weight_decay: float = 5e-4, **kwargs) -> None:
        if _has_accelerator():
            super().__init__(*args, **kwargs)
        else:
            self._init_cpu(*args, **kwargs)
        self._init_prune(mask_optimizer, mask_weight_decay)

    def _init_cpu(self, *args, loss_scale='dynamic', dtype=None,
                  use_fsdp: bool = False, **kwargs) -> None:
        """bf16 autocast on CPU, which mmengine's AmpOptimWrapper refuses.

        bf16 has float32's exponent range, so no loss scaling: a disabled
        scaler passes loss and steps through, and `_grads_finite` guards
        the masks and weights.
        """
        if dtype not in ('bfloat16', torch.bfloat16) or use_fsdp:
            raise ValueError(
                "optim_wrapper: PruneAmpOptimWrapper without a GPU needs "
                "dtype='bfloat16' (fp16 autocast, loss scaling and FSDP need "
                f'an accelerator); got dtype={dtype!r}, use_fsdp={use_fsdp}')
        OptimWrapper.__init__(self, *args, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
        self.cast_dtype = torch.bfloat16

    def _mask_step(self) -> None:
        self.loss_scaler.step(self.mask_optimizer)

    def _grads_finite(self) -> bool:
        # Scaled fp16 gradients overflow by design: an enabled loss scaler
        # skips those steps and lowers its scale. Without one (CPU, bf16)
        # the check is ours.
        scaler = getattr(self, 'loss_scaler', None)
        if scaler is not None and getattr(scaler, 'is_enabled',
                                          lambda: False)():
            return True
        return super()._grads_finite()
