"""The logic behind ``tools/train.py`` and ``tools/test.py``.

The flags are mmdet's own (``--work-dir``, ``--resume``, ``--amp``,
``--cfg-options``, ``--launcher``, ``--show-dir`` ...), so an mmdet user's
muscle memory works unchanged. Both entry points import mmprune first, which
registers our components and makes mmengine checkpoints loadable under
torch >= 2.6 (see :mod:`mmprune.engine.checkpoint`).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from ..adversarial import apply_attack_option


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='folder for logs and checkpoints')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys, e.g. train_cfg.max_epochs=2')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def _load_cfg(args) -> Config:
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file {args.config} does not exist')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join(
            './work_dirs', osp.splitext(osp.basename(args.config))[0])
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    _cpu_process_group(cfg)
    return cfg


def _cpu_process_group(cfg: Config) -> None:
    """Join torchrun's process group over gloo when there is no GPU.

    mmengine's pytorch launcher calls ``torch.cuda.set_device``
    unconditionally, which fails on CPU torch; it skips its own set-up when
    a process group exists, so on CPU the entry points make one themselves
    (from torchrun's ``RANK`` / ``WORLD_SIZE`` / ``MASTER_*`` variables).
    """
    import torch
    import torch.distributed as dist
    if cfg.launcher == 'none' or torch.cuda.is_available() or \
            (dist.is_available() and dist.is_initialized()):
        return
    if cfg.launcher != 'pytorch':
        raise ValueError(
            f'--launcher {cfg.launcher} on a machine without a GPU: only '
            '--launcher pytorch (torchrun, gloo backend) runs on CPU')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR',
                           'MASTER_PORT') if k not in os.environ]
    if missing:
        raise ValueError(f'--launcher pytorch: {missing} not set; start '
                         'with torchrun or tools/dist_train.sh')
    dist.init_process_group('gloo')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = \
        'gloo'
    # mmengine gives DDP device_ids=[LOCAL_RANK], which only GPUs accept;
    # the CPU wrapper also runs SyncBN layers as per-rank BN (cpu_ddp.py).
    from .cpu_ddp import CPUDistributedDataParallel  # noqa: F401 (registers)
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel')
    if wrapper.get('type') == 'MMDistributedDataParallel':
        wrapper['type'] = 'CPUDistributedDataParallel'
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper


def parse_train_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse ``tools/train.py`` flags (mmdet's, same names and meanings)."""
    p = argparse.ArgumentParser(description='Train a detector (mmprune)')
    p.add_argument('config', help='train config file')
    p.add_argument('--amp', action='store_true',
                   help='automatic mixed precision (AmpOptimWrapper, or '
                   'PruneAmpOptimWrapper for a prune config)')
    p.add_argument('--auto-scale-lr', action='store_true',
                   help='scale the lr by the real / base batch size')
    p.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or from the latest one in the '
        'work dir when no path is given')
    _common(p)
    return p.parse_args(argv)


def build_train_cfg(args: argparse.Namespace) -> Config:
    """Turn parsed train flags into the runner config."""
    cfg = _load_cfg(args)
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        amp_type = {'OptimWrapper': 'AmpOptimWrapper',
                    'AmpOptimWrapper': 'AmpOptimWrapper',
                    'PruneOptimWrapper': 'PruneAmpOptimWrapper',
                    'PruneAmpOptimWrapper': 'PruneAmpOptimWrapper'}.get(wrapper)
        if amp_type is None:
            raise ValueError(
                f'--amp: optim_wrapper.type={wrapper!r} has no AMP form; '
                'expected OptimWrapper or PruneOptimWrapper')
        cfg.optim_wrapper.type = amp_type
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        import torch
        if amp_type == 'PruneAmpOptimWrapper' and \
                not torch.cuda.is_available():
            # CPU autocast is bf16 (PruneAmpOptimWrapper's CPU path).
            cfg.optim_wrapper.setdefault('dtype', 'bfloat16')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in \
                cfg.auto_scale_lr:
            raise KeyError('--auto-scale-lr needs auto_scale_lr.'
                           'base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(
                f'--resume {args.resume}: checkpoint file does not exist')
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def train_main(argv: Optional[List[str]] = None) -> Runner:
    """Run ``tools/train.py``; returns the runner after training."""
    import mmprune  # noqa: F401  (registers components before building)
    cfg = build_train_cfg(parse_train_args(argv))
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def parse_test_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse ``tools/test.py`` flags (mmdet's, plus ``--attack``)."""
    p = argparse.ArgumentParser(description='Test a detector (mmprune)')
    p.add_argument('config', help='test config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--out', help='dump predictions to this pickle file')
    p.add_argument('--show', action='store_true', help='show results')
    p.add_argument('--show-dir',
                   help='save drawn predictions under work_dir/timestamp/DIR')
    p.add_argument('--wait-time', type=float, default=2)
    p.add_argument(
        '--attack', choices=['pgd'], default=None,
        help='also evaluate under PGD (eps 2/255, alpha 0.5/255, 20 steps); '
        'attacked metrics get an "adv/" prefix')
    _common(p)
    return p.parse_args(argv)


def build_test_cfg(args: argparse.Namespace) -> Config:
    """Turn parsed test flags into the runner config."""
    cfg = _load_cfg(args)
    if args.attack is not None:
        apply_attack_option(cfg, args.attack)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(
            f'checkpoint file {args.checkpoint} does not exist')
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        hooks = cfg.default_hooks
        if 'visualization' not in hooks:
            raise KeyError('--show/--show-dir need default_hooks.visualization'
                           ' (mmdet DetVisualizationHook) in the config')
        hooks.visualization.draw = True
        hooks.visualization.show = args.show
        hooks.visualization.wait_time = args.wait_time
        if args.show_dir:
            hooks.visualization.test_out_dir = args.show_dir
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out {args.out}: expected a .pkl file')
        cfg.test_evaluator = [cfg.test_evaluator] if isinstance(
            cfg.test_evaluator, dict) else list(cfg.test_evaluator)
        cfg.test_evaluator.append(dict(type='DumpDetResults',
                                       out_file_path=args.out))
    return cfg


def test_main(argv: Optional[List[str]] = None) -> dict:
    """Run ``tools/test.py``; returns the metrics dict."""
    import mmprune  # noqa: F401
    cfg = build_test_cfg(parse_test_args(argv))
    runner = Runner.from_cfg(cfg)
    return runner.test()
