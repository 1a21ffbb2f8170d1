"""The export / measurement CLIs: export_pruned, get_flops, prune_report, and
the latency benchmark (run once at a tiny size; nothing is timed)."""
import json
import os
import os.path as osp
import runpy

import pytest
import torch
from mmengine.config import Config

from mmprune.core import CostModel
from mmprune.engine.export import load_masked_detector
from tests.dropin import ROOT, empty_dir, tiny_config
from tests.test_engine.test_export import masked_checkpoint, with_hook

DEMO = osp.join(ROOT, 'configs', 'demo', 'centernet_dla34_prune50_demo.py')
BASE = osp.join(ROOT, 'configs', 'centernet_dla34_kitti.py')


def tool(path):
    """The ``main`` of a script under tools/ or benchmarks/."""
    return runpy.run_path(osp.join(ROOT, path), run_name='tool')['main']


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """The CPU demo config (DLA-34, plain-conv neck) at a fixed 64 x 128
    trace shape, written to a file, and a masked checkpoint of it."""
    tmp = tmp_path_factory.mktemp('demo')
    cfg = Config.fromfile(DEMO)
    cfg.custom_hooks[0]['input_shape'] = (64, 128)
    path = str(tmp / 'demo.py')
    cfg.dump(path)
    ckpt = str(tmp / 'masked.pth')
    _, plan, b, _, _ = masked_checkpoint(Config.fromfile(path), ckpt,
                                         (64, 128))
    yield path, ckpt, CostModel(plan), b
    empty_dir(tmp)


def test_export_cli_then_get_flops(demo, tmp_path, capsys):
    cfg, ckpt, cm, b = demo
    out = str(tmp_path / 'export')
    res = tool('tools/export_pruned.py')([cfg, ckpt, '--out', out])
    printed = capsys.readouterr().out
    assert f'psi = {float(cm.psi(b)):.4f}' in printed
    assert 'params:' in printed and 'max |exported - masked|' in printed
    assert sorted(os.listdir(out)) == ['channels.json', 'config.py',
                                       'model.pth']
    assert res.input_shape == (1, 3, 64, 128)
    # mmengine's FlopAnalyzer, on the real dense and exported models.
    flops = tool('tools/analysis_tools/get_flops.py')
    dense = flops([cfg, ckpt, '--shape', '64', '128'])
    assert 'masks (prune_masks.*)' in capsys.readouterr().out
    small = flops([osp.join(out, 'config.py'), osp.join(out, 'model.pth'),
                   '--shape', '64', '128', '--json',
                   str(tmp_path / 'f.json')])
    assert dense['macs'] == cm.dense_macs
    assert small['macs'] == pytest.approx(float(cm.psi(b)) * dense['macs'],
                                          rel=0.01)
    assert small['params'] == res.params_after < dense['params']
    with open(tmp_path / 'f.json') as f:
        assert json.load(f)['macs'] == small['macs']


def test_export_cli_refuses_a_checkpoint_without_masks(demo, tmp_path):
    cfg, ckpt, _, _ = demo
    state = torch.load(ckpt, weights_only=True)
    state['state_dict'] = {k: v for k, v in state['state_dict'].items()
                           if not k.startswith('prune_masks.')}
    plain = str(tmp_path / 'plain.pth')
    torch.save(state, plain)
    with pytest.raises(SystemExit) as e:
        tool('tools/export_pruned.py')([cfg, plain, '--out',
                                        str(tmp_path / 'x')])
    assert 'plain.pth holds no masks' in str(e.value)


def test_get_flops_counts_deformable_convs(tmp_path):
    """DCN on (mmcv ModulatedDeformConv2dPack): FlopAnalyzer alone does not
    know it; with our handle the count is the cost model's, also after
    export."""
    cfg = with_hook(tiny_config('centernet_r18_dcnv2', str(tmp_path),
                                str(tmp_path / 'w')), (64, 64))
    path = str(tmp_path / 'ct.py')
    cfg.dump(path)
    ckpt = str(tmp_path / 'm.pth')
    _, plan, b, _, _ = masked_checkpoint(Config.fromfile(path), ckpt,
                                         (64, 64))
    cm = CostModel(plan)
    flops = tool('tools/analysis_tools/get_flops.py')
    dense = flops([path, ckpt, '--shape', '64', '64'])
    assert dense['by_operator']['deform_conv'] > 0
    assert dense['macs'] == cm.dense_macs
    out = str(tmp_path / 'out')
    tool('tools/export_pruned.py')([path, ckpt, '--out', out])
    small = flops([osp.join(out, 'config.py'), '--shape', '64', '64'])
    assert small['macs'] == pytest.approx(float(cm.psi(b)) * cm.dense_macs,
                                          rel=0.01)


def test_get_flops_at_the_base_config_with_dcn():
    res = tool('tools/analysis_tools/get_flops.py')([BASE, '--shape', '64',
                                                      '64'])
    md_shape = res['input_shape']
    assert md_shape == [1, 3, 64, 64]
    # DLA-34 + DLA-Up with DCN: 16 deformable convs in the neck.
    assert res['by_operator']['deform_conv'] > 0
    assert res['macs'] < res['flops_total']


def _work_dir(demo, root):
    """A training work dir as mmengine leaves it: the dumped config, a
    checkpoint, last_checkpoint, and scalars.json lines."""
    cfg, ckpt, _, _ = demo
    os.makedirs(osp.join(root, '20240101_000000', 'vis_data'))
    Config.fromfile(cfg).dump(osp.join(root, 'demo.py'))
    target = osp.join(root, 'iter_4.pth')
    with open(ckpt, 'rb') as f, open(target, 'wb') as g:
        g.write(f.read())
    with open(osp.join(root, 'last_checkpoint'), 'w') as f:
        f.write(target)
    lines = [dict(lr=0.1, loss=2.0, psi=1.0 - 0.1 * i, loss_hw=0.2 - 0.05 * i,
                  iter=i + 1, epoch=1) for i in range(4)]
    lines.insert(2, {'kitti/Car_AP40_easy': 0.0, 'step': 1})  # a val line
    with open(osp.join(root, '20240101_000000', 'vis_data', 'scalars.json'),
              'w') as f:
        f.write('\n'.join(json.dumps(x) for x in lines) + '\n')
    return root


def test_prune_report_for_work_dir_and_export(demo, tmp_path):
    cfg, ckpt, cm, b = demo
    work = _work_dir(demo, str(tmp_path / 'work'))
    report = tool('tools/analysis_tools/prune_report.py')
    paths = report([work])
    assert sorted(paths) == ['curves', 'json', 'kept_ratio', 'markdown']
    for key in ('curves', 'kept_ratio'):
        with open(paths[key], 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(paths['json']) as f:
        rep = json.load(f)
    assert rep['kind'] == 'work_dir' and rep['psi'] == pytest.approx(
        float(cm.psi(b)))
    assert rep['totals']['macs_dense'] == cm.dense_macs
    assert rep['totals']['macs'] == round(float(cm.macs(b)))
    assert [s['iter'] for s in rep['scalars']] == [1, 2, 3, 4]
    assert rep['scalars'][-1]['psi'] == pytest.approx(0.7)
    names = {r['name'] for r in rep['layers']}
    assert names == {n for n, lay in cm.plan.layers.items()
                     if lay.kind != 'norm'}
    with open(paths['markdown']) as f:
        md = f.read()
    assert f'psi = {float(cm.psi(b)):.4f}' in md and '| **total** |' in md
    assert '| backbone.base_layer.0 | Conv2d | 3/3 |' in md

    # The export of the work dir's checkpoint reports the same table and
    # finds the curves in the work dir.
    out = str(tmp_path / 'export')
    tool('tools/export_pruned.py')([osp.join(work, 'demo.py'),
                                    osp.join(work, 'iter_4.pth'), '--out',
                                    out, '--no-verify'])
    paths2 = report([out, '--out', str(tmp_path / 'rep2')])
    with open(paths2['json']) as f:
        rep2 = json.load(f)
    assert rep2['kind'] == 'export'
    assert rep2['layers'] == rep['layers'] and rep2['totals'] == rep['totals']
    assert rep2['scalars'] == rep['scalars']


def test_prune_report_errors(tmp_path):
    report = tool('tools/analysis_tools/prune_report.py')
    with pytest.raises(SystemExit, match='expected the one config file'):
        report([str(tmp_path)])
    d = tmp_path / 'bad'
    os.makedirs(d / 'r' / 'vis_data')
    (d / 'r' / 'vis_data' / 'scalars.json').write_text('{"psi": 1}\n{oops\n')
    from mmprune.engine.report import read_scalars
    with pytest.raises(ValueError, match=r'scalars.json:1: record with psi'):
        read_scalars(str(d))
    (d / 'r' / 'vis_data' / 'scalars.json').write_text('{"psi": 1, '
                                                       '"iter": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r'scalars.json:2: not a JSON'):
        read_scalars(str(d))


def test_latency_benchmark_runs(capsys):
    out = tool('benchmarks/latency.py')([
        '--config', DEMO, '--shape', '64', '128', '--psi', '0.5', '--runs',
        '1', '--warmup', '0', '--neck', 'config'
    ])
    (res, ) = out['results']
    assert res['use_dcn'] is False
    (p, ) = res['pruned']
    assert 0.48 <= p['psi'] <= 0.5
    assert p['macs'] < 0.51 * res['macs_dense']
    assert p['params'] < res['params_dense']
    assert 'project_to_target' in out['masks']
    assert 'latency neck=config (no DCN)' in capsys.readouterr().out


def test_latency_benchmark_from_checkpoint_masks(demo, tmp_path):
    """--masks starts the projection from a pruning run's masks; masks that
    do not fit the traced groups are refused by name."""
    path, ckpt, cm, b = demo
    bench = tool('benchmarks/latency.py')
    out = bench(['--config', DEMO, '--shape', '64', '128', '--psi', '0.5',
                 '--runs', '1', '--warmup', '0', '--masks', ckpt,
                 '--channel-multiple', '1'])
    (p, ) = out['results'][0]['pruned']
    assert out['masks'].startswith(f'trained: the masks of {ckpt}')
    assert 0.49 <= p['psi'] <= 0.5
    # The checkpoint's binaries are the start: its pruned channels stay
    # pruned unless the projection restores them (psi was below 0.5).
    assert float(cm.psi(b)) < 0.49 and p['projection']['restored'] > 0
    state = torch.load(ckpt, weights_only=False)
    gone = next(k for k in state['state_dict'] if k.startswith('prune_masks'))
    del state['state_dict'][gone]
    bad = str(tmp_path / 'bad.pth')
    torch.save(state, bad)
    group = gone.split('.')[2]
    with pytest.raises(ValueError, match=r'do not match the channel groups'
                       rf'.*{group}'):
        bench(['--config', DEMO, '--shape', '64', '128', '--psi', '0.5',
               '--runs', '1', '--warmup', '0', '--masks', bad])


def test_dcn_cpu_benchmark_runs(capsys):
    out = tool('benchmarks/dcn_cpu.py')([
        '--shape', '4', '6', '8', '12', '--runs', '1', '--warmup', '0'])
    (r, ) = out['results']
    assert r['shape'] == [4, 6, 8, 12]
    assert set(r['median_ms']) == {'mmcv', 'torch', 'conv'}
    assert 0 < r['max_abs_diff'] < 1e-4  # fractional offsets, same layer
    assert 'dcn_cpu [4, 6, 8, 12]: mmcv' in capsys.readouterr().out


def test_masked_detector_traces_at_the_hook_shape(demo):
    cfg, ckpt, cm, b = demo
    md = load_masked_detector(cfg, ckpt)
    assert tuple(md.inputs.shape) == (1, 3, 64, 128) and not md.from_data
    assert md.maskset.frozen
    assert all(torch.equal(md.binaries()[g], b[g]) for g in b)


def test_onnx_export_of_pruned_and_dense_matches_pytorch(demo, tmp_path):
    cfg, ckpt, _, _ = demo
    out = str(tmp_path / 'export')
    tool('tools/export_pruned.py')([cfg, ckpt, '--out', out])
    onnx_path = str(tmp_path / 'onnx' / 'model.onnx')
    rep = tool('tools/deploy/export_onnx.py')([
        out, '--out', onnx_path, '--dense', '--runs', '1', '--warmup', '0'])
    assert rep['shape'] == [64, 128]
    for arm in ('pruned', 'dense'):
        assert osp.isfile(rep[arm]['onnx'])
        assert rep[arm]['max_abs_diff'] <= 1e-4 * 100  # checked per output
    # The pruned graph really is smaller (mmrazor #494: same-size ONNX).
    assert rep['pruned']['size_mb'] < 0.9 * rep['dense']['size_mb']
    assert rep['pruned']['params'] < rep['dense']['params']
    import onnx
    model = onnx.load(onnx_path)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17


def test_onnx_export_of_dcnv2torch_and_refusal_of_mmcv_dcn(tmp_path):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from mmprune.engine.deploy import check_exportable, compare_onnx, export_onnx
    init_default_scope('mmdet')
    cfg = Config.fromfile(BASE)  # the flagship: DLA-Up with DCNv2Torch
    assert cfg.model.neck.get('use_dcn', True)
    model = MODELS.build(cfg.model).eval()
    path = str(tmp_path / 'flagship.onnx')
    ref = export_onnx(model, (64, 128), path)
    import onnx
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert 'GridSample' in ops  # the deformable sampling, no custom op
    for d in compare_onnx(path, ref, (64, 128)):
        assert d['max_abs'] <= 1e-4 * max(1.0, d['scale']), d
    mmcv_dcn = MODELS.build(tiny_config('centernet_r18_dcnv2',
                                        str(tmp_path), str(tmp_path / 'w'))
                            .model)
    with pytest.raises(ValueError, match='no ONNX op'):
        check_exportable(mmcv_dcn)


@pytest.mark.parametrize('name', ['faster_rcnn_r50_fpn', 'mask_rcnn_r50_fpn',
                                  'cascade_rcnn_r50_fpn'])
def test_roi_heads_count_once_per_roi_like_flop_analyzer(name, tmp_path):
    """psi's dense cost equals mmengine's FlopAnalyzer (get_flops) on
    two-stage detectors: RoI-head layers run once per proposal (40 here:
    test_cfg.rpn.max_per_img, with no NMS suppression)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from mmprune.engine.hooks.in_train_pruning_hook import trace_detector
    cfg = with_hook(tiny_config(name, str(tmp_path), str(tmp_path / 'w')),
                    (64, 64))
    path = str(tmp_path / 'det.py')
    cfg.dump(path)
    init_default_scope('mmdet')
    model = MODELS.build(Config.fromfile(path).model).eval()
    from mmprune.engine.export import example_batch
    x, samples = example_batch(cfg, model, (64, 64))
    plan = trace_detector(model, x, samples)
    roi = [n for n, lay in plan.layers.items() if n.startswith('roi_head')]
    assert roi and all(plan.layers[n].rows in (40, 1) for n in roi)
    assert any(plan.layers[n].rows == 40 for n in roi)
    flops = tool('tools/analysis_tools/get_flops.py')
    counted = flops([path, '--shape', '64', '64'])
    assert CostModel(plan).dense_macs == pytest.approx(counted['macs'],
                                                       rel=0.01)
