"""Adversarial train loops (FastAT) and clean-vs-PGD val / test loops.

Why loops: in mmengine the loop owns "what one iteration does" (it calls
``model.train_step(data, optim_wrapper)``), and the loop is the one place
that sees the raw batch, the model and the optim wrapper together while
leaving all three as they are. So adversarial training is a loop that calls
`adversarial_train_step` instead of ``train_step``: the detector, its
state-dict keys and checkpoints, the optim wrapper (AMP, the prune wrapper)
and every hook stay untouched, and any mmdet detector works because only
the ``BaseModel`` API is used (``data_preprocessor``, ``forward(mode=
'loss')``, ``parse_losses``). The alternatives lose something: a model
wrapper changes the state-dict keys (and mmengine applies
``model_wrapper_cfg`` only in distributed runs), an optimizer wrapper sees
the loss but not the inputs, and a hook would have to monkey-patch
``train_step``.

Config (any detector)::

    train_cfg = dict(type='AdversarialEpochBasedTrainLoop',  # or ...Iter...
                     attack=dict(type='FastAT', eps=2/255, alpha=2.5/255))
    test_cfg = dict(type='AdversarialTestLoop',
                    attack=dict(type='PGD', eps=2/255, alpha=0.5/255,
                                steps=20))

The val / test loops run the evaluator on the clean and on the attacked
images in one pass over the data. Metric keys: the clean metrics keep their
usual names (``kitti/Car_AP40_moderate``, so ``save_best`` and scripts keep
working); the same metrics under attack get an ``adv/`` prefix
(``adv/kitti/Car_AP40_moderate``); ``adv/task_loss_clean`` and
``adv/task_loss`` are the detector's mean training loss on the clean and on
the attacked images (a working attack raises it). A side-by-side table is
logged.
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmdet.registry import LOOPS
from mmengine.dist import all_reduce
from mmengine.evaluator import Evaluator
from mmengine.logging import print_log
from mmengine.runner import (
    EpochBasedTrainLoop,
    IterBasedTrainLoop,
    TestLoop,
    ValLoop,
)
from mmengine.runner.amp import autocast
from torch.utils.data import DataLoader

from .attacks import (
    adversarial_train_step,
    attack_batch,
    build_attack,
    unwrap_model,
)
from .gt_frame import check_gt_present, gt_to_input_frame, resolve_gt_frame

__all__ = [
    'AdversarialEpochBasedTrainLoop', 'AdversarialIterBasedTrainLoop',
    'AdversarialValLoop', 'AdversarialTestLoop', 'ADV_PREFIX',
    'merge_clean_adv', 'format_side_by_side'
]

#: Prefix of the metrics computed on attacked images.
ADV_PREFIX = 'adv/'

_DEFAULT_TRAIN_ATTACK = dict(type='FastAT', eps=2 / 255, alpha=2.5 / 255)


def _log_attack(what: str, attack) -> None:
    print_log(f'{what}: {attack!r}', logger='current')


@LOOPS.register_module()
class AdversarialEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that trains on adversarial batches.

    Args:
        attack: attack config, default FastAT with the seed's
            ``eps=2/255, alpha=2.5/255`` ([0, 1] pixel units).
        Other args: as ``EpochBasedTrainLoop``.
    """

    def __init__(self, runner, dataloader: Union[DataLoader, Dict],
                 max_epochs: int, val_begin: int = 1, val_interval: int = 1,
                 dynamic_intervals: Optional[List] = None,
                 attack: Optional[dict] = None) -> None:
        super().__init__(runner, dataloader, max_epochs, val_begin,
                         val_interval, dynamic_intervals)
        self.attack = build_attack(
            dict(_DEFAULT_TRAIN_ATTACK) if attack is None else attack,
            'train_cfg.attack')
        _log_attack('adversarial training', self.attack)

    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        """One adversarial train step, with the usual hooks around it."""
        self.runner.call_hook(
            'before_train_iter', batch_idx=idx, data_batch=data_batch)
        outputs = adversarial_train_step(self.runner.model, data_batch,
                                         self.runner.optim_wrapper,
                                         self.attack)
        self.runner.call_hook(
            'after_train_iter', batch_idx=idx, data_batch=data_batch,
            outputs=outputs)
        self._iter += 1


@LOOPS.register_module()
class AdversarialIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that trains on adversarial batches.

    Args:
        attack: attack config, default FastAT with the seed's
            ``eps=2/255, alpha=2.5/255`` ([0, 1] pixel units).
        Other args: as ``IterBasedTrainLoop``.
    """

    def __init__(self, runner, dataloader: Union[DataLoader, Dict],
                 max_iters: int, val_begin: int = 1, val_interval: int = 1000,
                 dynamic_intervals: Optional[List] = None,
                 attack: Optional[dict] = None) -> None:
        super().__init__(runner, dataloader, max_iters, val_begin,
                         val_interval, dynamic_intervals)
        self.attack = build_attack(
            dict(_DEFAULT_TRAIN_ATTACK) if attack is None else attack,
            'train_cfg.attack')
        _log_attack('adversarial training', self.attack)

    def run_iter(self, data_batch: Sequence[dict]) -> None:
        """One adversarial train step, with the usual hooks around it."""
        self.runner.call_hook(
            'before_train_iter', batch_idx=self._iter, data_batch=data_batch)
        outputs = adversarial_train_step(self.runner.model, data_batch,
                                         self.runner.optim_wrapper,
                                         self.attack)
        self.runner.call_hook(
            'after_train_iter', batch_idx=self._iter, data_batch=data_batch,
            outputs=outputs)
        self._iter += 1


def _tag_outputs(node) -> None:
    """Give output files in an evaluator config an ``_adv`` tag, in place.

    Without it the attacked pass of ``DumpDetResults`` (``--out``) or a
    metric's ``outfile_prefix`` would overwrite the clean one.
    """
    if isinstance(node, dict):
        for value in node.values():
            _tag_outputs(value)
        path = node.get('out_file_path')
        if isinstance(path, str):
            root, ext = osp.splitext(path)
            node['out_file_path'] = f'{root}_adv{ext}'
        prefix = node.get('outfile_prefix')
        if isinstance(prefix, str):
            node['outfile_prefix'] = f'{prefix}_adv'
    elif isinstance(node, (list, tuple)):
        for value in node:
            _tag_outputs(value)


def _adv_evaluator(runner, evaluator) -> Evaluator:
    """A second, independent evaluator for the attacked predictions."""
    if isinstance(evaluator, Evaluator):
        adv = copy.deepcopy(evaluator)
        for metric in adv.metrics:
            for attr in ('out_file_path', 'outfile_prefix'):
                value = getattr(metric, attr, None)
                if isinstance(value, str):
                    root, ext = osp.splitext(value) if attr == \
                        'out_file_path' else (value, '')
                    setattr(metric, attr, f'{root}_adv{ext}')
        return adv
    cfg = copy.deepcopy(evaluator)
    _tag_outputs(cfg)
    return runner.build_evaluator(cfg)


def merge_clean_adv(clean: Dict, adv: Dict,
                    extra: Optional[Dict] = None) -> Dict:
    """Clean metrics as they are, attacked ones under `ADV_PREFIX`, extras."""
    metrics = dict(clean)
    for key, value in adv.items():
        metrics[ADV_PREFIX + key] = value
    metrics.update(extra or {})
    return metrics


def format_side_by_side(clean: Dict, adv: Dict, title: str) -> str:
    """A text table: metric | clean | adversarial | change (numbers only)."""
    rows = [(k, float(v), float(adv[k])) for k, v in clean.items()
            if k in adv and isinstance(v, (int, float))
            and isinstance(adv[k], (int, float))]
    width = max([len('metric')] + [len(k) for k, _, _ in rows])
    lines = [title, f'{"metric":<{width}} | {"clean":>9} | {"adv":>9} | '
             f'{"change":>9}']
    lines.append('-' * len(lines[-1]))
    for key, c, a in rows:
        lines.append(f'{key:<{width}} | {c:9.4f} | {a:9.4f} | {a - c:+9.4f}')
    return '\n'.join(lines)


class _AdversarialEvalMixin:
    """Clean and attacked evaluation in one pass over the data.

    Needs ``self.runner``, ``self.dataloader``, ``self.evaluator`` and
    ``self.fp16`` (set by mmengine's ValLoop / TestLoop) and ``stage``.
    """

    stage = 'test'

    def _setup_adversarial(self, adv_evaluator: Evaluator, attack,
                           gt_frame: str, seed: int) -> None:
        self.attack = build_attack(attack, f'{self.stage}_cfg.attack')
        self.adv_evaluator = adv_evaluator
        dataset = self.dataloader.dataset
        if hasattr(dataset, 'metainfo'):
            self.adv_evaluator.dataset_meta = dataset.metainfo
        self.gt_flags = resolve_gt_frame(dataset, gt_frame,
                                         f'{self.stage}_dataloader')
        self.seed = int(seed)
        self._generator: Optional[torch.Generator] = None
        self._loss_sums = torch.zeros(3, dtype=torch.float64)
        _log_attack(f'adversarial {self.stage}', self.attack)

    def _context(self):
        return autocast(enabled=self.fp16)

    def _get_generator(self, device) -> torch.Generator:
        # One seeded stream per run: the attack's random starts do not
        # depend on what else consumed the global RNG.
        if self._generator is None:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def run(self) -> dict:
        """Evaluate clean and attacked; returns the merged metrics."""
        stage = self.stage
        self.runner.call_hook(f'before_{stage}')
        self.runner.call_hook(f'before_{stage}_epoch')
        self.runner.model.eval()
        self._generator = None
        self._loss_sums.zero_()
        for idx, data_batch in enumerate(self.dataloader):
            self.run_iter(idx, data_batch)
        size = len(self.dataloader.dataset)
        clean = self.evaluator.evaluate(size)
        adv = self.adv_evaluator.evaluate(size)
        sums = self._loss_sums.clone()
        all_reduce(sums)
        count = max(float(sums[2]), 1.0)
        extra = {f'{ADV_PREFIX}task_loss_clean': float(sums[0]) / count,
                 f'{ADV_PREFIX}task_loss': float(sums[1]) / count}
        metrics = merge_clean_adv(clean, adv, extra)
        print_log(
            format_side_by_side(
                dict(clean, task_loss=extra[f'{ADV_PREFIX}task_loss_clean']),
                dict(adv, task_loss=extra[f'{ADV_PREFIX}task_loss']),
                f'clean vs {self.attack!r}'),
            logger='current')
        self.runner.call_hook(f'after_{stage}_epoch', metrics=metrics)
        self.runner.call_hook(f'after_{stage}')
        return metrics

    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        """Predict clean, attack, predict attacked; feed both evaluators."""
        stage = self.stage
        self.runner.call_hook(
            f'before_{stage}_iter', batch_idx=idx, data_batch=data_batch)
        module = unwrap_model(self.runner.model)
        with torch.no_grad(), self._context():
            data = module.data_preprocessor(data_batch, False)
        inputs, samples = data['inputs'], data['data_samples']
        check_gt_present(samples, f'{stage}_dataloader',
                         label=self.gt_flags is None)
        # Copies made before predict writes its predictions into `samples`.
        adv_samples = [s.clone() for s in samples]
        attack_samples = gt_to_input_frame(samples, *(self.gt_flags or ()))

        with torch.no_grad(), self._context():
            outputs = module(inputs, samples, mode='predict')
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)

        adv_inputs = attack_batch(module, inputs, attack_samples,
                                  self.attack,
                                  self._get_generator(inputs.device),
                                  context=self._context)
        with torch.no_grad(), self._context():
            adv_outputs = module(adv_inputs, adv_samples, mode='predict')
            loss_clean, _ = module.parse_losses(
                module(inputs, attack_samples, mode='loss'))
            loss_adv, _ = module.parse_losses(
                module(adv_inputs, attack_samples, mode='loss'))
        self.adv_evaluator.process(
            data_samples=adv_outputs, data_batch=data_batch)
        n = inputs.shape[0]
        self._loss_sums += torch.tensor(
            [float(loss_clean) * n, float(loss_adv) * n, n],
            dtype=torch.float64)
        self.runner.call_hook(
            f'after_{stage}_iter', batch_idx=idx, data_batch=data_batch,
            outputs=outputs)


@LOOPS.register_module()
class AdversarialTestLoop(_AdversarialEvalMixin, TestLoop):
    """``TestLoop`` that reports clean and attacked metrics side by side.

    Args:
        attack: attack config, e.g. ``dict(type='PGD', eps=2/255,
            alpha=0.5/255, steps=20)`` (the seed's evaluation; [0, 1] pixel
            units). Required.
        gt_frame: how the test batch's gt boxes reach the input frame:
            'auto' (read the pipeline), 'input' or 'original' (see
            :mod:`.gt_frame`); 'label' for a classifier.
        seed: seed of the attack's random start.
        fp16: autocast the forwards, as ``TestLoop``.
    """

    stage = 'test'

    def __init__(self, runner, dataloader, evaluator, attack: dict = None,
                 gt_frame: str = 'auto', seed: int = 0,
                 fp16: bool = False) -> None:
        if attack is None:
            raise ValueError(
                'test_cfg.attack is required for AdversarialTestLoop, e.g. '
                "dict(type='PGD', eps=2/255, alpha=0.5/255, steps=20)")
        # Built first, from an untouched copy of the evaluator config.
        adv_evaluator = _adv_evaluator(runner, evaluator)
        super().__init__(runner, dataloader, evaluator, fp16=fp16)
        self._setup_adversarial(adv_evaluator, attack, gt_frame, seed)


@LOOPS.register_module()
class AdversarialValLoop(_AdversarialEvalMixin, ValLoop):
    """``ValLoop`` that reports clean and attacked metrics side by side.

    Same arguments as `AdversarialTestLoop` (``attack`` under
    ``val_cfg``). The clean metrics keep their names, so ``save_best``
    works as with ``ValLoop``.
    """

    stage = 'val'

    def __init__(self, runner, dataloader, evaluator, attack: dict = None,
                 gt_frame: str = 'auto', seed: int = 0,
                 fp16: bool = False) -> None:
        if attack is None:
            raise ValueError(
                'val_cfg.attack is required for AdversarialValLoop, e.g. '
                "dict(type='PGD', eps=2/255, alpha=0.5/255, steps=20)")
        # Built first, from an untouched copy of the evaluator config.
        adv_evaluator = _adv_evaluator(runner, evaluator)
        super().__init__(runner, dataloader, evaluator, fp16=fp16)
        self._setup_adversarial(adv_evaluator, attack, gt_frame, seed)
