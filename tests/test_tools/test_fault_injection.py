"""Fault injection: SIGKILL mid-epoch inside an epoch window, resume from
the last checkpoint, and end bit-identical to an uninterrupted run."""
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest
import torch

from tests.dropin import make_tiny_coco, tiny_config
from tests.test_engine.test_pruning_dropin import add_pruning

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: 4 images, batch 1: 4 iterations an epoch, 16 in all. Masks train in
#: epochs [1, 3) and freeze at the start of epoch 3.
EPOCHS, KILL_AT = 4, 10  # iteration 10 is the middle of epoch 2 (0-based)


def _config(data, work):
    cfg = add_pruning(tiny_config('retinanet_r50_fpn', data, work),
                      prune_start=1, prune_end=3, by_epoch=True, b='auto',
                      lag_integral=0.1, target_ramp=0.5)
    cfg.train_dataloader.batch_size = 1
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=EPOCHS,
                         val_interval=EPOCHS + 1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=True,
                                        interval=1, max_keep_ckpts=-1)
    cfg.log_processor = dict(by_epoch=True)
    cfg.optim_wrapper.mask_optimizer = dict(type='SGD', lr=0.01,
                                            momentum=0.9)
    cfg.custom_imports = dict(imports=['mmprune', 'tests.dist_probe'],
                              allow_failed_imports=False)
    cfg.custom_hooks.append(dict(type='KillAtIterHook', at=KILL_AT))
    cfg.randomness = dict(seed=0, deterministic=True)
    return cfg


def _train(path, *flags, kill=False):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    env.pop('MMPRUNE_KILL', None)
    if kill:
        env['MMPRUNE_KILL'] = '1'
    return subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), path, *flags],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    data = str(tmp_path / 'coco')
    make_tiny_coco(data, num_images=4)
    runs = {}
    for name in ('full', 'killed'):
        work = str(tmp_path / name)
        path = str(tmp_path / f'{name}.py')
        _config(data, work).dump(path)
        runs[name] = (work, path)

    proc = _train(runs['full'][1])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    proc = _train(runs['killed'][1], kill=True)
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    work = runs['killed'][0]
    # Killed in epoch 3 (1-based): epochs 1 and 2 are saved, nothing more.
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == \
        ['epoch_1.pth', 'epoch_2.pth']
    proc = _train(runs['killed'][1], '--resume')  # the latest checkpoint
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert 'resumed epoch: 2' in proc.stdout + proc.stderr

    a, b = (torch.load(osp.join(runs[n][0], f'epoch_{EPOCHS}.pth'),
                       weights_only=False) for n in ('full', 'killed'))
    sa, sb = a['state_dict'], b['state_dict']
    assert sa.keys() == sb.keys()
    masks = [k for k in sa if 'prune_masks' in k]
    assert masks, 'no mask tensors in the checkpoint'
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # The mask optimizer's momentum, bit for bit.
    _assert_same(a['optimizer'], b['optimizer'], 'optimizer')
    # Final psi and the pruning state, as the hook saved them.
    assert a['meta']['prune'] == b['meta']['prune']
    assert b['meta']['prune']['frozen']


def _assert_same(x, y, where):
    """Nested dicts / lists of tensors and numbers, equal bit for bit."""
    assert type(x) is type(y), where
    if isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            _assert_same(x[k], y[k], f'{where}.{k}')
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            _assert_same(u, v, f'{where}[{i}]')
    elif isinstance(x, torch.Tensor):
        assert torch.equal(x, y), where
    else:
        assert x == y, where
