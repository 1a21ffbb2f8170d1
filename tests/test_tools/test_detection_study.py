"""The detection study's --quick path: every arm trains, tests and reports."""
import json
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.slow
def test_quick_study_writes_its_json(tmp_path):
    out = tmp_path / 'study.json'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'benchmarks', 'detection_study.py'),
         '--quick', '--work-dir', str(tmp_path / 'w'), '--out', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'SUMMARY Car AP40 moderate clean' in proc.stdout
    # Trained without validating (tested once, after training): no run's
    # log holds a validation line.
    logs = list((tmp_path / 'w').rglob('*.log'))
    assert logs and not [f for f in logs if 'Epoch(val)' in f.read_text()]
    rep = json.loads(out.read_text())
    assert rep['quick'] is True and len(rep['runs']) == 1
    run = rep['runs'][0]
    for arm in ('dense', 'intrain', 'post_l1', 'post_bn'):
        for cls in ('Car', 'Pedestrian', 'Cyclist'):
            assert 0.0 <= run[arm][cls] <= 100.0, (arm, cls)
    # The post-train arms are pruned to the MACs the in-train model has.
    psi = run['intrain']['psi']
    assert 0.48 - 1e-6 <= psi <= 0.5 + 1e-6
    for arm in ('post_l1', 'post_bn'):
        assert psi - 0.02 - 1e-6 <= run[arm]['psi'] <= psi + 1e-6, arm
    assert set(rep['summary']) == {'dense', 'intrain', 'post_l1', 'post_bn'}
    assert rep['summary']['intrain']['Car']['std'] == 0.0

    # --resume keeps every arm the file holds (the same wall_s: not re-run)
    # and runs only the missing one.
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'benchmarks', 'detection_study.py'),
         '--quick', '--work-dir', str(tmp_path / 'w'), '--out', str(out),
         '--resume', '--arms', 'dense', 'intrain', 'post_l1',
         'post_l1_floor'],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.read_text())
    assert again['partial'] is False
    for arm in ('dense', 'intrain', 'post_l1', 'post_bn'):
        assert again['runs'][0][arm] == run[arm], arm
    floor = again['runs'][0]['post_l1_floor']
    assert floor['max_layer_ratio'] == 0.5 and floor['wall_s'] > 0

    # A resumed file must share the study's settings.
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'benchmarks', 'detection_study.py'),
         '--quick', '--work-dir', str(tmp_path / 'w'), '--out', str(out),
         '--resume', '--test-images', '8'],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode != 0
    assert 'test_images=None but this run has test_images=8' in proc.stderr

    # The recovery probe reuses the study's dense checkpoints: the quick
    # study freezes at epoch 1 of 2, so the probe fine-tunes 1 and 2 epochs.
    rec = tmp_path / 'recovery.json'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'benchmarks', 'posttrain_recovery.py'),
         '--quick', '--psi', str(psi), '--work-dir', str(tmp_path / 'w'),
         '--out', str(rec)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(rec.read_text())
    assert rep['freeze'] == 1 and rep['finetune_epochs'] == [1, 2]
    run = rep['runs'][0]
    assert set(run) == {'seed', 'dense', 'post_l1_ft1', 'post_l1_ft2'}
    for n in (1, 2):
        arm = run[f'post_l1_ft{n}']
        assert arm['finetune_epochs'] == n
        assert psi - 0.02 - 1e-6 <= arm['psi'] <= psi + 1e-6
    for arm in ('dense', 'post_l1_ft1', 'post_l1_ft2'):
        for cls in ('Car', 'Pedestrian', 'Cyclist'):
            iou, hit = run[arm][f'iou_{cls}'], run[arm][f'hit_{cls}']
            if run[arm][f'n_{cls}']:
                assert 0.0 <= hit <= 1.0 and 0.0 <= iou <= 1.0, (arm, cls)
            else:
                assert iou is None and hit is None, (arm, cls)
