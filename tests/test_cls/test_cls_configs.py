"""Every configs/cls config trains 2 iterations and tests (PGD included)
on a tiny dataset made in a temp dir, through mmengine's runner."""
import glob
import os
import os.path as osp
import pickle

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

import mmprune  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', 'cls',
                                               '*.py')))


def _cifar10(root):
    """CIFAR-10's python layout with 5 train and 2 test images."""
    d = osp.join(root, 'cifar-10-batches-py')
    os.makedirs(d, exist_ok=True)
    rng = np.random.RandomState(0)

    def batch(n):
        return {'data': rng.randint(0, 256, (n, 3072), dtype=np.uint8),
                'labels': list(range(n))}

    for i in range(1, 6):
        with open(osp.join(d, f'data_batch_{i}'), 'wb') as f:
            pickle.dump(batch(1), f)
    with open(osp.join(d, 'test_batch'), 'wb') as f:
        pickle.dump(batch(2), f)
    with open(osp.join(d, 'batches.meta'), 'wb') as f:
        pickle.dump({'label_names': [f'c{i}' for i in range(10)]}, f)


def _imagenet(root):
    """ImageNet's folder layout and meta files with 4 + 2 JPEGs."""
    import cv2
    rng = np.random.RandomState(0)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, n in (('train', 4), ('val', 2)):
        lines = []
        for i in range(n):
            rel = f'n{i:08d}/img{i}.JPEG'
            os.makedirs(osp.join(root, split, osp.dirname(rel)),
                        exist_ok=True)
            cv2.imwrite(osp.join(root, split, rel),
                        rng.randint(0, 256, (40, 48, 3), dtype=np.uint8))
            lines.append(f'{rel} {i}')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')


def _tiny(cfg, tmp_path):
    """Point the config at tiny data; 2 iterations; prune window 0..1."""
    kind = cfg.train_dataloader.dataset.type
    root = str(tmp_path / 'data')
    for key in ('train_dataloader', 'test_dataloader', 'val_dataloader'):
        loader = cfg[key]
        loader.batch_size = 2
        loader.num_workers = 0
        loader.pop('persistent_workers', None)
        ds = loader.dataset
        if kind in ('Cifar10Dataset', 'ImageListDataset'):
            ds.data_root = root
        # A few images (of the real split for the packaged digits).
        ds.indices = 4 if key == 'train_dataloader' else 2
    if kind == 'Cifar10Dataset':
        _cifar10(root)
    elif kind == 'ImageListDataset':
        _imagenet(root)
        # 224-pixel crops are the real setting; 32 keeps the test small.
        for t in cfg.train_dataloader.dataset.pipeline:
            if t['type'] == 'RandomAreaCrop':
                t['size'] = 32
        for t in cfg.test_dataloader.dataset.pipeline:
            if t['type'] == 'ResizeShortEdge':
                t['size'] = 36
            if t['type'] == 'CenterCrop':
                t['crop_size'] = 32
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 2
    if 'attack' in cfg.test_cfg:
        cfg.test_cfg.attack.steps = 1
    for h in cfg.get('custom_hooks', []):
        if h['type'] == 'InTrainPruningHook':
            h.prune_start, h.prune_end = 0, 1
    sched = cfg.param_scheduler
    for s in (sched if isinstance(sched, list) else [sched]):
        s.milestones = [m for m in s.milestones if m < 1]
    cfg.work_dir = str(tmp_path / 'work')
    cfg.default_hooks.logger.interval = 1
    cfg.visualizer.name = f'vis_{tmp_path.name}'
    return cfg


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.basename(p) for p in CONFIGS])
def test_cls_config_trains_two_iterations(path, tmp_path):
    cfg = _tiny(Config.fromfile(path), tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    hook = next((h for h in runner.hooks
                 if type(h).__name__ == 'InTrainPruningHook'), None)
    if hook is not None:
        assert hook.maskset.frozen
        psi = hook.current_psi()
        assert 0 < psi <= 1
    metrics = runner.test()
    assert 'accuracy/top1' in metrics
    if 'attack' in cfg.test_cfg:
        assert 'adv/accuracy/top1' in metrics
