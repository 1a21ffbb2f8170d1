"""The classification study's --quick path: every arm trains and is tested
clean and under PGD; the table and the plot are written."""
import json
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.slow
def test_quick_cls_study_writes_json_table_and_plot(tmp_path):
    out = tmp_path / 'study.json'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'benchmarks', 'cls_study.py'),
         '--quick', '--work-dir', str(tmp_path / 'w'), '--out', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'SUMMARY clean acc / PGD acc' in proc.stdout
    assert 'SUMMARY fastat acc / PGD acc' in proc.stdout
    # Trained without validating (tested once, after training): no run's
    # log holds a validation line.
    logs = list((tmp_path / 'w').rglob('*.log'))
    assert logs and not [f for f in logs if 'Epoch(val)' in f.read_text()]
    rep = json.loads(out.read_text())
    assert rep['quick'] is True and rep['settings'] == ['clean', 'fastat']
    for setting in ('clean', 'fastat'):
        run = rep['runs'][setting][0]
        psi = run['intrain@0.5']['psi']
        assert 0.48 - 1e-6 <= psi <= 0.5 + 1e-6
        for arm in ('dense', 'intrain@0.5', 'post_l1@0.5', 'post_bn@0.5',
                    'random@0.5'):
            assert 0.0 <= run[arm]['acc'] <= 100.0, (setting, arm)
            assert 0.0 <= run[arm]['pgd'] <= 100.0, (setting, arm)
        # Post-train arms are pruned to the in-train model's MACs.
        for arm in ('post_l1@0.5', 'post_bn@0.5', 'random@0.5'):
            assert psi - 0.02 - 1e-6 <= run[arm]['psi'] <= psi + 1e-6, arm
            assert run[arm]['macs_ratio'] == pytest.approx(run[arm]['psi'],
                                                           abs=1e-3)
    t1 = rep['table1'][0]
    assert t1['seed_b10']['b'] == 10 and t1['seed_b50']['b'] == 50
    for name in ('seed_b10', 'seed_b50', 'mmprune_auto'):
        assert 0 < t1[name]['psi_trained'] <= 1
        assert 'pgd' not in t1[name]
    assert (tmp_path / 'study.md').read_text().startswith('| setting |')
    assert (tmp_path / 'study.png').stat().st_size > 1000
