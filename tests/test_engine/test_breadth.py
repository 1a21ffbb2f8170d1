"""Breadth: more of mmdet's shipped families, each trained with the README's
snippet, exported, and checked against the masked model (tests/breadth.py).

With the six drop-in detectors (test_pruning_dropin.py, test_export.py) this
makes the README's table of families: two-stage with a mask head, cascade,
grouped-conv backbones (RegNetX, ResNeXt), GroupNorm heads (ATSS, TOOD,
GFL, FCOS-HRNet), HRNet, DETR, SOLOv2 and SSDLite.
"""
import pytest

from tests.breadth import run_family
from tests.dropin import FAMILIES

#: The breadth families, plus the two RoI-head families whose random-mask
#: export test_export.py already covers, here trained for real.
NAMES = sorted(FAMILIES) + ['mask_rcnn_r50_fpn', 'cascade_rcnn_r50_fpn']

#: What the tracer reports as not modelled (and so keeps); every other
#: family must trace with nothing unknown.
UNMODELLED = {
    # Task decomposition: a bmm with per-sample layer-attention weights.
    'tood_r50': ('bmm', 'sigmoid outside any module'),
    # nn.MultiheadAttention (no layer handler) and LayerNorm.
    'detr_r50': ('MultiheadAttention has parameters', 'LayerNorm'),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_family_prunes_exports_and_matches(name, tmp_path):
    r = run_family(name, str(tmp_path))
    if name in UNMODELLED:
        for text in UNMODELLED[name]:
            assert any(text in u for u in r['unsupported_all']), text
    else:
        assert r['unsupported_all'] == []
    if 'rcnn' in name:
        assert any(k.startswith('neck.fpn_convs.0.conv: roi_head.')
                   and 'buffer' in k for k in r['kept_all']), r['kept_all']
    # The freeze landed on the target band (projection at most 2 % below).
    assert 0.5 - 0.02 - 1e-9 <= r['psi'] <= 0.5 + 1e-9, r['psi']
    assert r['export_psi'] == pytest.approx(r['psi'])
    assert r['params_ratio'] < 1.0
    # The export's own check, one row per output at its own scale.
    assert r['export_output_diffs']
    for d in r['export_output_diffs']:
        assert d['max_abs'] <= 1e-4 * max(1.0, d['scale']), d
    # A fresh input, compared here rather than by the export.
    assert r['same_shapes']
    for d in r['fresh_input_diffs']:
        assert d['max_abs'] <= 1e-4 * max(1.0, d['scale']), d
    # MACs counted by forward hooks on the exported model's real shapes.
    assert r['macs_counted'] == pytest.approx(r['macs_expected'], rel=0.01)
