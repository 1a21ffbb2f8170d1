"""Two CPU processes (torchrun, gloo) on a SyncBN config: every rank has
the same masks, and rank 0's checkpoint resumes in one process."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

from tests.dropin import make_tiny_coco, tiny_config
from tests.test_engine.test_pruning_dropin import add_pruning

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _ddp_run(tmp_path, data, port):
    """8 iterations on 2 ranks (batch 1 each), window [1, 6), checkpoints
    at 4 and 8; returns the config path, work dir and both probes."""
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
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(port),
               OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), path, '2'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert 'SyncBN layer(s) (first: ' in proc.stdout + proc.stderr
    probes = [torch.load(osp.join(work, f'probe_rank{r}.pt'),
                         weights_only=False) for r in (0, 1)]
    return path, work, probes


def _resume_single(tmp_path, path, ckpt):
    """Resume ``ckpt`` in one process (no launcher); returns its probe."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    single = Config.fromfile(path)
    single.launcher = 'none'
    single.work_dir = str(tmp_path / 'single')
    single.resume, single.load_from = True, ckpt
    Runner.from_cfg(single).train()
    return single.work_dir, torch.load(
        osp.join(single.work_dir, 'probe_rank0.pt'), weights_only=False)


def _same_masks(a, b, where):
    assert a['iter'] == b['iter'] and a['psi'] == b['psi'], where
    for k in a['masks']:
        assert torch.equal(a['masks'][k], b['masks'][k]), (where, k)
        assert torch.equal(a['binaries'][k], b['binaries'][k]), (where, k)


@pytest.mark.slow
def test_two_cpu_ranks_train_identical_masks(tmp_path):
    data = str(tmp_path / 'coco')
    make_tiny_coco(data, num_images=4)
    path, work, (r0, r1) = _ddp_run(tmp_path, data, 29517)
    # One plan and one cost model: rank 0's trace input on both ranks.
    assert r0['shape'] == r1['shape'] and r0['dense'] == r1['dense']
    assert len(r0['rows']) == len(r1['rows']) == 8
    for a, b in zip(r0['rows'], r1['rows']):
        _same_masks(a, b, a['iter'])
    # The masks trained (psi fell) and froze on both ranks.
    assert r0['rows'][-1]['psi'] < 0.9
    assert r0['frozen'] and r1['frozen']

    # Rank 0's checkpoint from inside the window resumes in one process:
    # it starts from exactly the masks both ranks had after iteration 4,
    # then trains on through the freeze.
    _, s0 = _resume_single(tmp_path, path, osp.join(work, 'iter_4.pth'))
    at4 = r0['rows'][3]
    assert s0['start']['iter'] == 4 and at4['iter'] == 3  # 0-based rows
    _same_masks(dict(s0['start'], iter=3), at4, 'start')
    assert s0['shape'] == r0['shape'] and s0['dense'] == r0['dense']
    assert [r['iter'] for r in s0['rows']] == [4, 5, 6, 7]
    assert s0['frozen'] and s0['rows'][-1]['psi'] < 0.9


def _identical_images(root, num_images=4):
    """A tiny COCO set whose images (and boxes) are all image 0's."""
    make_tiny_coco(root, num_images=1)
    ann_file = osp.join(root, 'ann.json')
    with open(ann_file) as f:
        ann = json.load(f)
    first, boxes = ann['images'][0], ann['annotations']
    images, anns = [], []
    for i in range(num_images):
        name = f'{i:04d}.png'
        if i:
            shutil.copy(osp.join(root, 'images', first['file_name']),
                        osp.join(root, 'images', name))
        images.append(dict(first, id=i + 1, file_name=name))
        for b in boxes:
            anns.append(dict(b, id=len(anns) + 1, image_id=i + 1))
    with open(ann_file, 'w') as f:
        json.dump(dict(ann, images=images, annotations=anns), f)


@pytest.mark.slow
def test_rank0_checkpoint_continues_identically_in_one_process(tmp_path):
    """With every image the same, 2 ranks x batch 1 and 1 process x batch
    1 take the same steps (the all-reduced mean of two equal gradients is
    that gradient), so the resumed run must follow rank 0: masks and psi
    bit for bit, weights to float rounding."""
    data = str(tmp_path / 'coco')
    _identical_images(data)
    path, work, (r0, _) = _ddp_run(tmp_path, data, 29518)
    single_work, s0 = _resume_single(tmp_path, path,
                                     osp.join(work, 'iter_4.pth'))
    for a, b in zip(s0['rows'], r0['rows'][4:]):
        _same_masks(a, b, a['iter'])
    assert len(s0['rows']) == 4 and s0['frozen'] == r0['frozen'] is True
    a, b = (torch.load(osp.join(w, 'iter_8.pth'), weights_only=False)
            for w in (work, single_work))
    assert a['state_dict'].keys() == b['state_dict'].keys()
    # Masks and psi are bit-identical (above); weights agree to float
    # rounding: DDP's bucketed all-reduce rounds differently from a plain
    # backward in the last bits (seen: 1e-11 on a BN bias near 1e-10).
    for k in a['state_dict']:
        assert torch.allclose(a['state_dict'][k].double(),
                              b['state_dict'][k].double(),
                              rtol=1e-5, atol=1e-9), k
    assert a['meta']['prune'] == b['meta']['prune']
