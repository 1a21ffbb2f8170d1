"""The latency table CLI and the latency-cost benchmark's --quick path."""
import json
import os.path as osp
import subprocess
import sys

from mmprune.core import LatencyTable

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _run(args, timeout=600):
    proc = subprocess.run([sys.executable] + args, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_build_latency_table_cli_writes_a_table_the_hook_can_use(tmp_path):
    out = tmp_path / 'lut.json'
    proc = _run([osp.join('tools', 'analysis_tools', 'build_latency_table.py'),
                 osp.join('configs', 'demo', 'centernet_dla34_prune50_demo.py'),
                 '--threads', '1', '--shape', '32', '64', '--max-points', '2',
                 '--warmup', '0', '--runs', '1', '--out', str(out)])
    assert 'latency table:' in proc.stdout and str(out) in proc.stdout
    table = LatencyTable.load(str(out))
    assert table.meta['threads'] == 1
    assert table.meta['input_shape'] == [1, 3, 32, 64]
    assert table.meta['step'] == 16  # the demo hook's channel_multiple
    assert table.meta['config'].endswith('centernet_dla34_prune50_demo.py')
    # Every widths list is multiples of 16 plus the full width.
    for e in table.entries.values():
        widths = [c for c, _ in e['out']]
        assert all(c % 16 == 0 for c in widths[:-1]), widths


def test_latency_cost_quick_path_writes_json(tmp_path):
    out = tmp_path / 'lc.json'
    proc = _run([osp.join('benchmarks', 'latency_cost.py'), '--quick',
                 '--out', str(out)])
    assert 'latency_cost: predictor' in proc.stdout
    rep = json.loads(out.read_text())
    assert rep['quick'] is True
    parts = [r['part'] for r in rep['results']]
    assert parts[0] == 'dense' and parts.count('predictor') == 2
    pay = {r['cost']: r for r in rep['results'] if r['part'] == 'payoff'}
    assert set(pay) == {'macs', 'latency'}
    # Each arm lands on its own target in its own cost.
    assert 0.48 - 1e-6 <= pay['macs']['psi_macs'] <= 0.5 + 1e-6
    assert 0.48 - 1e-6 <= pay['latency']['psi_latency'] <= 0.5 + 1e-6
    for r in rep['results']:
        assert r['measured_ms'] > 0 and r['predicted_ms'] > 0
