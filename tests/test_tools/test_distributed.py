"""Two CPU processes (torchrun, gloo) on a SyncBN config: every rank has
the same masks, and rank 0's checkpoint resumes in one process."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.dropin import make_tiny_coco, tiny_config
from tests.test_engine.test_pruning_dropin import add_pruning

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.slow
def test_two_cpu_ranks_train_identical_masks(tmp_path):
    data = str(tmp_path / 'coco')
    make_tiny_coco(data, num_images=4)
    work = str(tmp_path / 'work')
    cfg = add_pruning(tiny_config('retinanet_r50_fpn', data, work,
                                  max_iters=8),
                      prune_start=1, prune_end=6, b='auto')
    cfg.custom_imports = dict(imports=['mmprune', 'tests.dist_probe'],
                              allow_failed_imports=False)
    cfg.custom_hooks.append(dict(type='MaskProbeHook'))
    cfg.train_dataloader.batch_size = 1  # each rank: its own images
    # A SyncBN config: on CPU its layers run as per-rank BN (cpu_ddp.py).
    cfg.model.backbone.norm_cfg = dict(type='SyncBN', requires_grad=True)
    cfg.default_hooks.checkpoint.update(interval=4, max_keep_ckpts=-1)
    path = str(tmp_path / 'cfg.py')
    cfg.dump(path)
    env = dict(os.environ, PYTHON=sys.executable, PORT='29517',
               OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), path, '2'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert 'SyncBN layer(s) (first: ' in proc.stdout + proc.stderr
    r0, r1 = (torch.load(osp.join(work, f'probe_rank{r}.pt'),
                         weights_only=False) for r in (0, 1))
    # One plan and one cost model: rank 0's trace input on both ranks.
    assert r0['shape'] == r1['shape'] and r0['dense'] == r1['dense']
    assert len(r0['rows']) == len(r1['rows']) == 8
    for a, b in zip(r0['rows'], r1['rows']):
        assert a['iter'] == b['iter'] and a['psi'] == b['psi']
        for k in a['masks']:
            assert torch.equal(a['masks'][k], b['masks'][k]), (a['iter'], k)
            assert torch.equal(a['binaries'][k], b['binaries'][k])
    # The masks trained (psi fell) and froze on both ranks.
    assert r0['rows'][-1]['psi'] < 0.9
    assert r0['frozen'] and r1['frozen']

    # Rank 0's checkpoint from inside the window resumes in one process:
    # it starts from exactly the masks both ranks had after iteration 4,
    # then trains on through the freeze.
    from mmengine.config import Config
    from mmengine.runner import Runner
    single = Config.fromfile(path)
    single.launcher = 'none'
    single.work_dir = str(tmp_path / 'single')
    single.resume, single.load_from = True, osp.join(work, 'iter_4.pth')
    runner = Runner.from_cfg(single)
    runner.train()
    s0 = torch.load(osp.join(single.work_dir, 'probe_rank0.pt'),
                    weights_only=False)
    at4 = r0['rows'][3]
    assert s0['start']['iter'] == 4 and at4['iter'] == 3  # 0-based rows
    assert s0['start']['psi'] == at4['psi']
    for k in at4['masks']:
        assert torch.equal(s0['start']['masks'][k], at4['masks'][k]), k
        assert torch.equal(s0['start']['binaries'][k], at4['binaries'][k])
    assert s0['shape'] == r0['shape'] and s0['dense'] == r0['dense']
    assert [r['iter'] for r in s0['rows']] == [4, 5, 6, 7]
    assert s0['frozen'] and s0['rows'][-1]['psi'] < 0.9
