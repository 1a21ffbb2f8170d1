"""InTrainPruningHook: finds channel groups, installs masks, runs the schedule.

The hook is thin: group discovery, masks, cost and projection live in
:mod:`mmprune.core`; the prune loss and the mask optimizer live in
:class:`~mmprune.engine.optimizers.PruneOptimWrapper`. The hook decides
*when*: masks are off (all ones) before ``prune_start``, train every
iteration inside ``[prune_start, prune_end)``, and freeze at ``prune_end``,
where the binary masks are projected onto the target (METHOD.md section 4).

Order inside mmengine 0.10's ``Runner.train``: the optim wrapper is built,
then ``before_run`` (we trace and install the masks and hand them to the
wrapper), then the checkpoint is loaded or resumed (the masks, being a
submodule of the model, and the mask optimizer state come back with it),
then the loop runs.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper

from mmprune.core import (
    CostModel,
    LatencyTable,
    auto_b,
    device_description,
    hw_scale,
    install_masks,
    integrate_lag,
    lowest_psi,
    project_to_target,
    scheduled_target,
)

from .hook_args import check_hook_args
from .sync import same_on_all_ranks, sync_ema_masks
from .trace import (  # noqa: F401  (roi_budgets re-exported)
    first_sample,
    roi_budgets,
    trace_detector,
)

#: Attribute under which the MaskSet is registered in the detector, so the
#: masks are saved and loaded with the model's state dict.
MASKS_ATTR = 'prune_masks'


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class InTrainPruningHook(Hook):
    """Prune a detector's channels during training to a MACs target.

    Needs ``optim_wrapper.type='PruneOptimWrapper'`` (or
    ``'PruneAmpOptimWrapper'``).

    The defaults are the dynamics that reach the target by training (README,
    "How the masks reach the target"); ``b=10``, ``loss_form='hinge'``,
    ``target_schedule='constant'``, ``normalize=False``, ``revive=False``
    and ``binarize='threshold'`` give the seed's form
    (``configs/centernet_dla34_prune50_seed.py``).

    Args:
        psi_target: target fraction of the dense model's MACs, in (0, 1].
        b: weight of ``L_HW`` in the prune loss, or ``'auto'`` (default):
            chosen at ``prune_start`` so that one mask step closes 30 % of
            psi's lag behind the scheduled target (`mmprune.core.auto_b`;
            the seed's 10, and 50 for extreme targets, belong to its
            unnormalised form).
        prune_start: first epoch / iteration (0-based) in which masks train.
        prune_end: epoch / iteration at which masks freeze. ``None``: the end
            of training (masks freeze after the last iteration).
        by_epoch: whether ``prune_start`` / ``prune_end`` count epochs.
        threshold: binarisation threshold of the masks.
        mask_init: initial value of every mask.
        min_channels: channels every group keeps (int, or ratio in (0, 1]).
        skip: module-name patterns (globs) never pruned.
        loss_form: ``'band'`` (default), ``'square'``, ``'hinge'`` or ``'abs'``
            (`mmprune.core.hw_loss`; the seed's is ``'hinge'``).
        enforce_target_at_freeze: project the binary masks onto
            ``[psi_target - tolerance, psi_target]`` when they freeze.
        tolerance: the accepted shortfall below the target.
        cost: ``'macs'`` (default), ``'params'`` or ``'latency'``: psi is
            the predicted latency of ``latency_table`` at the current masks
            over the dense model's (`mmprune.core.LatencyTable`).
        latency_table: path of a table from
            ``tools/analysis_tools/build_latency_table.py`` (for
            ``cost='latency'``); one measured on another device or input
            shape is used with a warning naming both.
        input_shape: ``(H, W)`` at which MACs are counted; ``None``: the
            padded shape of the training set's first image
            (`first_sample`).
        channel_multiple: round every group's kept channels to a multiple
            of this (8 or 16 turn MACs into more real speed-up on CPU / GPU
            kernels); 1 keeps exact counts.
        channel_multiple_in_train: round during training already (the
            binary masks keep multiples, so psi and the task loss see the
            exported widths); False rounds only at the freeze.
        target_schedule: ``'cubic'``, ``'linear'`` or ``'constant'``: how
            the target of ``L_HW`` falls from 1 to ``psi_target`` over the
            first ``target_ramp`` of the window (`scheduled_target`).
        target_ramp: fraction of the window over which the target falls.
        normalize: divide ``L_HW`` by the mean ``d psi / d B`` of the dense
            model's channels, so an average channel feels ``b * L_HW'``
            whatever the model's size.
        revive: masks stay in [0, 1] and pass gradient at 0, so a pruned
            channel can come back when psi falls below the target.
        binarize: ``'count'`` (a group keeps its ``round(sum(M))``
            channels with the largest ``M``) or ``'threshold'`` (the
            seed's: the channels with ``M >= threshold``); see
            `mmprune.core.ChannelMask`.
        lag_integral: gain of the integral action on psi's lag once the
            target holds still (`mmprune.core.integrate_lag`; 0.1 =
            `mmprune.core.LAG_INTEGRAL_GAIN` is the tested value): a task
            gradient that holds the masks up raises the pull until the lag
            closes. 0 (default) leaves ``b`` a proportional gain: with no
            such force the integral overshoots on 16-channel steps (README,
            "Integral action").
        allow_unreachable_target: a ``psi_target`` below the lowest psi
            that ``min_channels``, ``channel_multiple`` and the fixed layers
            allow is refused at ``before_train``; True logs a warning and
            prunes as far as the floor allows.
        roi_budget: RoIs per image at which RoI-head layers are counted
            (`roi_budgets`; ``'auto'``: the test-time ``max_per_img``).
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self,
                 psi_target: float,
                 b: Union[float, str] = 'auto',
                 prune_start: int = 0,
                 prune_end: Optional[int] = None,
                 by_epoch: bool = True,
                 threshold: float = 0.5,
                 mask_init: float = 1.0,
                 min_channels: Union[int, float] = 1,
                 skip: Sequence[str] = (),
                 loss_form: str = 'band',
                 enforce_target_at_freeze: bool = True,
                 tolerance: float = 0.02,
                 cost: str = 'macs',
                 input_shape: Optional[Sequence[int]] = None,
                 channel_multiple: int = 1,
                 channel_multiple_in_train: bool = True,
                 target_schedule: str = 'cubic',
                 target_ramp: float = 0.75,
                 normalize: bool = True,
                 revive: bool = True,
                 binarize: str = 'count',
                 lag_integral: float = 0.0,
                 allow_unreachable_target: bool = False,
                 roi_budget: Union[str, dict, None] = 'auto',
                 latency_table: Optional[str] = None) -> None:
        check_hook_args(locals())
        self.psi_target = float(psi_target)
        self.b = b
        self.prune_start = int(prune_start)
        self.prune_end = prune_end
        self.by_epoch = by_epoch
        self.threshold = threshold
        self.mask_init = mask_init
        self.min_channels = min_channels
        self.skip = list(skip)
        self.loss_form = loss_form
        self.enforce = enforce_target_at_freeze
        self.tolerance = tolerance
        self.cost = cost
        self.input_shape = input_shape
        self.channel_multiple = int(channel_multiple)
        self.multiple_in_train = bool(channel_multiple_in_train)
        self.target_schedule = target_schedule
        self.target_ramp = float(target_ramp)
        self.normalize = bool(normalize)
        self.revive = bool(revive)
        self.binarize = binarize
        self.lag_integral = float(lag_integral)
        self.allow_unreachable = bool(allow_unreachable_target)
        self.roi_budget = roi_budget
        self.latency_table = latency_table
        # The integral action's state, in units of psi (saved in meta).
        self.integral = 0.0
        self.hw_scale = 1.0
        # The target of the current iteration: 1 before the window.
        self.psi_now = 1.0
        self.maskset = None
        self.cost_model = None
        self.plan = None
        self.b_value: Optional[float] = None if b == 'auto' else float(b)
        self.started = False
        self.freeze_report = None
        self.trace_inputs = None

    # -- set-up --------------------------------------------------------------
    def _example_batch(self, runner, mode: str):
        if mode == 'train':
            loader = runner.train_dataloader
        elif runner._test_dataloader is not None:
            loader = runner.test_dataloader
        else:
            loader = runner.val_dataloader
        batch = first_sample(loader)
        model = _unwrap(runner.model)
        data = model.data_preprocessor(batch, False)
        inputs, samples = data['inputs'], data['data_samples']
        if self.input_shape is not None:
            h, w = self.input_shape
            inputs = inputs.new_zeros(1, inputs.shape[1], h, w)
            for s in samples[:1]:
                s.set_metainfo(dict(img_shape=(h, w), pad_shape=(h, w),
                                    batch_input_shape=(h, w)))
        return same_on_all_ranks(inputs[:1], samples[:1])

    def _setup(self, runner, mode: str) -> None:
        model = _unwrap(runner.model)
        if hasattr(model, MASKS_ATTR):
            raise RuntimeError(f'{type(model).__name__} already has '
                               f'"{MASKS_ATTR}"; is InTrainPruningHook listed'
                               ' twice in custom_hooks?')
        inputs, samples = self._example_batch(runner, mode)
        # Kept for tools and tests that count MACs at the traced shape.
        self.trace_inputs = (inputs, samples)
        try:
            self.plan = trace_detector(model, inputs, samples, self.skip,
                                       self.roi_budget)
        except ValueError as err:
            if 'skip pattern' in str(err):
                raise ValueError(f'custom_hooks.InTrainPruningHook.skip: '
                                 f'{err}') from err
            raise
        if not self.plan.groups:
            raise ValueError(
                f'custom_hooks.InTrainPruningHook: {type(model).__name__} '
                'has no prunable channel group (skip='
                f'{self.skip}); every layer is fixed:\n' + '\n'.join(
                    f'  kept {n}: {why}' for n, why in self.plan.kept[:20]))
        self.cost_model = CostModel(self.plan, cost=self.cost,
                                    latency_table=self._table(inputs))
        self.maskset = install_masks(
            model, self.plan, self.mask_init, self.threshold,
            self.min_channels,
            self.channel_multiple if self.multiple_in_train else 1,
            self.revive, self.binarize)
        if self.normalize:
            self.hw_scale = hw_scale(self.cost_model)
        # Off until the window opens: the detector computes its dense
        # function (METHOD.md 4: masks are fixed at 1 before prune_start).
        self.maskset.remove()
        self.maskset.to(inputs.device)
        model.add_module(MASKS_ATTR, self.maskset)

    def _table(self, inputs) -> Optional[LatencyTable]:
        if self.cost != 'latency':
            return None
        table = LatencyTable.load(self.latency_table)
        foreign = table.foreign(device_description(str(inputs.device)),
                                tuple(inputs.shape))
        if foreign:
            MMLogger.get_current_instance().warning(foreign)
        return table

    def before_run(self, runner) -> None:
        """Trace the detector, install masks, hand them to the wrapper."""
        mode = 'train' if self._is_training(runner) else 'test'
        if self.maskset is not None and getattr(
                _unwrap(runner.model), MASKS_ATTR, None) is self.maskset:
            return  # runner.test() after runner.train(): already set up
        self._setup(runner, mode)
        if mode == 'train':
            wrapper = runner.optim_wrapper
            if not hasattr(wrapper, 'attach_pruning'):
                raise TypeError(
                    'InTrainPruningHook needs optim_wrapper.type='
                    "'PruneOptimWrapper' (or 'PruneAmpOptimWrapper' for AMP);"
                    f' got {type(wrapper).__name__}')
            wrapper.attach_pruning(self.maskset, self.cost_model,
                                   self.psi_target, self.b_value or 0.0,
                                   self.loss_form)
            wrapper.hw_scale = self.hw_scale
            wrapper.hw_tol = self.tolerance

    @staticmethod
    def _is_training(runner) -> bool:
        # Runner.train() builds the train loop before before_run; test() and
        # val() leave it as a config dict (or None).
        from mmengine.runner import BaseLoop
        return isinstance(runner._train_loop, BaseLoop)

    def before_train(self, runner) -> None:
        """Check the window against the train loop; log the summary."""
        self._check_schedule(runner)
        self._check_reachable(runner)
        runner.logger.info(self.summary())

    def _check_reachable(self, runner) -> None:
        """Refuse a target below the floor, before any training."""
        low, bins = lowest_psi(self.maskset, self.cost_model,
                               self.channel_multiple)
        if self.psi_target >= low - 1e-9:
            return
        layers = sorted(self.cost_model.breakdown(bins),
                        key=lambda lay: -lay.macs)
        cost = max(sum(lay.macs for lay in layers), 1)
        top = ', '.join(f'{lay.name} ({100.0 * lay.macs / cost:.0f} %)'
                        for lay in layers[:3])
        msg = (f'custom_hooks.InTrainPruningHook.psi_target='
               f'{self.psi_target} is below the lowest psi {low:.4f} that '
               f'min_channels={self.min_channels!r}, channel_multiple='
               f'{self.channel_multiple} and the layers no group prunes '
               f'allow; most of that floor is in {top}. Lower min_channels '
               'or the skip patterns, raise psi_target, or set '
               'allow_unreachable_target=True to prune down to the floor')
        if not self.allow_unreachable:
            raise ValueError(msg)
        runner.logger.warning(msg)

    def _check_schedule(self, runner) -> None:
        """Refuse windows the train loop cannot run, before any training."""
        from mmengine.runner import EpochBasedTrainLoop
        key = 'custom_hooks.InTrainPruningHook'
        loop = runner.train_loop
        if self.by_epoch and not isinstance(loop, EpochBasedTrainLoop):
            raise ValueError(
                f'{key}.by_epoch=True needs an EpochBasedTrainLoop, but '
                f'train_cfg builds {type(loop).__name__}; set by_epoch=False '
                'and give prune_start / prune_end in iterations')
        end = runner.max_epochs if self.by_epoch else runner.max_iters
        unit = 'max_epochs' if self.by_epoch else 'max_iters'
        if self.prune_start >= end:
            raise ValueError(
                f'{key}.prune_start={self.prune_start} must be below the '
                f'end of training (train_cfg.{unit}={end}): the masks would '
                'never train')
        if self.prune_end is not None and self.prune_end > end:
            raise ValueError(
                f'{key}.prune_end={self.prune_end} lies beyond the end of '
                f'training (train_cfg.{unit}={end}): the masks would never '
                'freeze; use prune_end <= ' f'{end} or None')

    def summary(self) -> str:
        """Groups found, prunable MACs share, and what is kept and why."""
        plan, cm = self.plan, self.cost_model
        ones = cm.ones()
        dense = float(cm.dense)
        zeros = {g: torch.zeros_like(v) for g, v in ones.items()}
        fixed = float(cm.total(zeros))
        chans = sum(g.size for g in plan.groups.values())
        lines = [
            'InTrainPruningHook: ' + f'{len(plan.groups)} prunable channel '
            f'groups, {chans} channels; {len(plan.layers)} layers traced at '
            f'input {plan.input_shapes[0] if plan.input_shapes else "?"}',
            '  dense cost: '
            + (f'{dense:.2f} ms predicted ({self.latency_table})'
               if self.cost == 'latency' else
               f'{dense / 1e9:.3f} G{self.cost.upper()}') + '; '
            f'prunable share: {100 * (1 - fixed / dense):.1f} %; '
            f'target psi={self.psi_target}, b={self.b}, '
            f'window=[{self.prune_start}, {self.prune_end}) '
            f'{"epochs" if self.by_epoch else "iters"}, '
            f'loss={self.loss_form}',
            f'  dynamics: target {self.target_schedule} over '
            f'{self.target_ramp:.0%} of the window, normalize='
            f'{self.normalize} (scale {self.hw_scale:.4g}), revive='
            f'{self.revive}, binarize={self.binarize}, lag_integral='
            f'{self.lag_integral:g}, channel_multiple={self.channel_multiple}'
            f'{" in training" if self.multiple_in_train else " at freeze"}',
        ]
        for name, why in plan.kept:
            lines.append(f'  kept   {name}: {why}')
        for where, why in plan.unsupported:
            lines.append(f'  unsupported {where}: {why}')
        return '\n'.join(lines)

    # -- schedule ------------------------------------------------------------
    def _progress(self, runner) -> int:
        return runner.epoch if self.by_epoch else runner.iter

    def _end(self, runner) -> int:
        if self.prune_end is not None:
            return self.prune_end
        return runner.max_epochs if self.by_epoch else runner.max_iters

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        """Open, keep or close the window before each iteration."""
        step = self._progress(runner)
        wrapper = runner.optim_wrapper
        if self.maskset.frozen:
            wrapper.prune_active = False
            self.psi_now = self.psi_target
            return
        if step >= self._end(runner):
            self._freeze(runner)
            wrapper.prune_active = False
            return
        if step >= self.prune_start:
            if not self.started:
                self._start(runner)
            wrapper.prune_active = True
            self.psi_now = scheduled_target(
                self._window_progress(runner), self.psi_target,
                self.target_schedule, self.target_ramp)
            wrapper.psi_target = self.psi_now
            wrapper.hw_integral = self.integral
        else:
            wrapper.prune_active = False

    def _window_progress(self, runner) -> float:
        """Position of the current iteration in the window, in [0, 1)."""
        start = self.prune_start
        if self.by_epoch:
            start *= len(runner.train_dataloader)
        return (runner.iter - start) / self._window_iters(runner)

    def _start(self, runner) -> None:
        self.started = True
        if not self.maskset.attached:
            self.maskset.attach(_unwrap(runner.model))
        if self.b_value is None:
            self.b_value = self._auto_b(runner)
        runner.optim_wrapper.b = self.b_value
        runner.logger.info(f'InTrainPruningHook: masks train from '
                           f'{"epoch" if self.by_epoch else "iter"} '
                           f'{self._progress(runner)} with b={self.b_value:g}')

    def _window_iters(self, runner) -> int:
        n = self._end(runner) - self.prune_start
        if self.by_epoch:
            n *= len(runner.train_dataloader)
        return max(int(n), 1)

    def _auto_b(self, runner) -> float:
        """`mmprune.core.auto_b` for this run's window and mask lr."""
        lr = runner.optim_wrapper.mask_optimizer.param_groups[0]['lr']
        return auto_b(self.cost_model, lr, self._window_iters(runner),
                      self.threshold, self.loss_form, self.psi_target,
                      self.normalize, self.binarize)

    def _freeze(self, runner) -> None:
        if not self.maskset.attached:
            self.maskset.attach(_unwrap(runner.model))
        if self.enforce:
            rep = project_to_target(self.maskset, self.cost_model,
                                    self.psi_target, self.tolerance,
                                    channel_multiple=self.channel_multiple)
            self.freeze_report = rep
            total = sum(g.size for g in self.plan.groups.values())
            moved = rep.dropped + rep.restored
            runner.logger.info(
                f'InTrainPruningHook: masks frozen; psi {rep.psi_before:.4f}'
                f' by training -> {rep.psi_after:.4f} after the projection '
                f'(target {self.psi_target}; dropped {rep.dropped}, '
                f'restored {rep.restored}: moved {moved} of {total} channels'
                f', {100.0 * moved / max(total, 1):.1f} %'
                f'{"" if rep.reached else "; TARGET NOT REACHED: " + rep.reason})')
        else:
            self.maskset.freeze()
            psi = self.current_psi()
            runner.logger.info(f'InTrainPruningHook: masks frozen at psi '
                               f'{psi:.4f} (no projection)')

    def _mask_state(self):
        """``(psi, pruned channel count)`` from one pass over the masks."""
        if not self.maskset.attached:
            return 1.0, 0
        with torch.no_grad():
            binaries = self.maskset.binaries()
            psi = float(self.cost_model.psi(binaries))
            pruned = int(sum((b == 0).sum() for b in binaries.values()))
        return psi, pruned

    def current_psi(self) -> float:
        """psi of the current binary masks (1.0 while masks are off)."""
        return self._mask_state()[0]

    def pruned_channels(self) -> int:
        """Channels whose binary mask is 0 (0 while masks are off)."""
        return self._mask_state()[1]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Write psi, loss_hw and the pruned channel count to the hub."""
        hub = runner.message_hub
        psi, pruned = self._mask_state()
        wrapper = runner.optim_wrapper
        loss_hw = wrapper.last_loss_hw if wrapper.prune_active else 0.0
        hub.update_scalar('train/psi', psi)
        hub.update_scalar('train/psi_target', self.psi_now)
        hub.update_scalar('train/loss_hw', loss_hw)
        hub.update_scalar('train/pruned_channels', pruned)
        if wrapper.prune_active and not self.maskset.frozen and \
                self._window_progress(runner) >= self.target_ramp:
            # Only once the target holds still: a lag behind the falling
            # target is the ramp's own, and integrating it winds up.
            self.integral = integrate_lag(self.integral, psi, self.psi_now,
                                          self.tolerance, self.lag_integral)
            hub.update_scalar('train/hw_integral', self.integral)
        # A window that closes with training freezes after its last
        # iteration, before CheckpointHook (lower priority) saves it.
        if runner.iter + 1 >= runner.max_iters and self.started and \
                not self.maskset.frozen and self._closes_with_training(runner):
            self._freeze(runner)

    def _closes_with_training(self, runner) -> bool:
        end = runner.max_epochs if self.by_epoch else runner.max_iters
        return self._end(runner) >= end

    def after_train(self, runner) -> None:
        """Freeze at the end of training when the window reaches it (a
        run that stopped early; normally done after the last iteration)."""
        if not self.maskset.frozen and self.started and \
                self._progress(runner) >= self._end(runner):
            self._freeze(runner)

    # -- checkpoints ---------------------------------------------------------
    # -- EMA -------------------------------------------------------------------
    def _sync_ema_masks(self, runner) -> None:
        if self.maskset is not None:
            sync_ema_masks(runner, self.maskset, MASKS_ATTR)

    def before_val_epoch(self, runner) -> None:
        self._sync_ema_masks(runner)

    def before_test_epoch(self, runner) -> None:
        self._sync_ema_masks(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the schedule state and the final psi in ``meta``."""
        self._sync_ema_masks(runner)
        psi, pruned = self._mask_state()
        checkpoint.setdefault('meta', {})['prune'] = dict(
            psi=psi, psi_target=self.psi_target,
            started=self.started, frozen=bool(self.maskset.frozen),
            b=self.b_value, integral=self.integral, pruned_channels=pruned)
        if self.trace_inputs is not None:
            # The (H, W) psi is counted at; the export traces there too.
            checkpoint['meta']['prune']['input_shape'] = [
                int(v) for v in self.trace_inputs[0].shape[-2:]]
        rep = self.freeze_report
        if rep is not None:
            checkpoint['meta']['prune'].update(
                psi_trained=rep.psi_before,
                projection_moved=rep.dropped + rep.restored)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restore the schedule state; re-attach masks that were running.

        mmengine calls this hook *before* it copies the checkpoint into the
        model, so the decision rests on ``meta['prune']`` alone; the mask
        values and frozen flags arrive with the model's state dict next.
        """
        meta = checkpoint.get('meta', {}).get('prune')
        if meta is None:
            return
        self.started = bool(meta.get('started', False))
        if meta.get('b') is not None:
            self.b_value = float(meta['b'])
            if hasattr(runner.optim_wrapper, 'b'):
                runner.optim_wrapper.b = self.b_value
        self.integral = float(meta.get('integral', 0.0))
        if (self.started or meta.get('frozen')) and not self.maskset.attached:
            self.maskset.attach(_unwrap(runner.model))
        if is_main_process():
            runner.logger.info(
                'InTrainPruningHook: checkpoint has pruning state (started='
                f'{self.started}, frozen={bool(meta.get("frozen"))}, psi='
                f'{meta.get("psi", 1.0):.4f})')
