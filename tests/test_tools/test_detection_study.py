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
