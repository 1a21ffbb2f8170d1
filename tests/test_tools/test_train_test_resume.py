"""End to end: tools/train.py, tools/test.py and --resume on generated KITTI.

The flagship demo config is shrunk further (64 x 192 images, batch 2) so the
whole cycle takes seconds; everything else is the real pipeline: the
KittiDataset, CenterNet DLA-34, the KITTI metric and mmengine checkpoints
loaded with torch's weights-only unpickler.
"""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmprune.datasets import make_synthetic_kitti
from mmprune.engine.runner import cli

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'centernet_dla34_kitti_demo.py')


def _options(data_root, epochs):
    return [
        '--cfg-options',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2',
        'test_dataloader.batch_size=2',
        f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=3',
        'default_hooks.logger.interval=1', 'randomness.seed=0'
    ]


@pytest.fixture(scope='module')
def kitti_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('kitti'))
    # 6 frames -> 4 train (2 iterations of batch 2) and 2 val.
    make_synthetic_kitti(root, num_images=6, img_size=(64, 192), seed=1)
    return root


@pytest.mark.slow
def test_train_test_then_resume(kitti_root, tmp_path):
    work = str(tmp_path / 'work')
    runner = cli.train_main([DEMO, '--work-dir', work] +
                        _options(kitti_root, 1))
    assert runner.iter == 2 and runner.epoch == 1
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt)

    # The checkpoint holds mmengine's message hub; the weights-only loader
    # reads it because mmprune allow-lists exactly those types.
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert state['meta']['epoch'] == 1 and state['meta']['iter'] == 2
    assert 'message_hub' in state and 'param_schedulers' in state

    metrics = cli.test_main([DEMO, ckpt, '--work-dir', str(tmp_path / 'test')] +
                        _options(kitti_root, 1))
    for cls in ('Car', 'Pedestrian', 'Cyclist', 'Overall'):
        for diff in ('easy', 'moderate', 'hard'):
            value = metrics[f'kitti/{cls}_AP40_{diff}']
            assert 0.0 <= value <= 100.0

    # Resume from the epoch-1 checkpoint and train one more epoch: the
    # counters, optimizer state and schedule continue instead of restarting.
    resumed = cli.train_main([DEMO, '--work-dir', work, '--resume', ckpt] +
                         _options(kitti_root, 2))
    assert resumed.epoch == 2 and resumed.iter == 4
    assert osp.isfile(osp.join(work, 'epoch_2.pth'))
    adam = resumed.optim_wrapper.optimizer.state_dict()['state']
    assert int(next(iter(adam.values()))['step']) == 4

    # `--resume` with no path picks the latest checkpoint in the work dir.
    again = cli.train_main([DEMO, '--work-dir', work, '--resume'] +
                       _options(kitti_root, 3))
    assert again.epoch == 3 and again.iter == 6


def test_weights_only_load_needs_the_allow_list(tmp_path):
    """Without mmprune, torch >= 2.6 refuses mmengine's message hub."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('mmprune_ckpt_test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('iter', 3)
    path = str(tmp_path / 'ckpt.pth')
    torch.save({'meta': {'iter': 3}, 'message_hub': hub.state_dict()}, path)
    code = ('import torch, sys\n'
            'try:\n'
            f'    torch.load({path!r}, weights_only=True)\n'
            'except Exception as e:\n'
            '    print(type(e).__name__); sys.exit(3)\n')
    plain = subprocess.run([sys.executable, '-c', code],
                           capture_output=True, text=True)
    assert plain.returncode == 3 and 'UnpicklingError' in plain.stdout
    with_mmprune = subprocess.run(
        [sys.executable, '-c', 'import mmprune\n' + code],
        capture_output=True, text=True)
    assert with_mmprune.returncode == 0, with_mmprune.stdout
    # Anything beyond mmengine's types is still refused.
    torch.save({'bad': subprocess.Popen}, str(tmp_path / 'evil.pth'))
    import pickle
    with pytest.raises(pickle.UnpicklingError):
        torch.load(str(tmp_path / 'evil.pth'), weights_only=True)
