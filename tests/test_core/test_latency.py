"""cost='latency': the table's prediction, its gradients and the projection
against hand arithmetic, and the table builder on tiny nets."""
import json
import math

import pytest
import torch
from torch import nn

from mmprune.core import (
    CostModel,
    LatencyTable,
    MaskSet,
    channel_grid,
    device_description,
    discover_groups,
    install_masks,
    measure_latency_table,
    project_to_target,
)
from mmprune.core.latency import TABLE_FORMAT

from .nets import Chain, DCNBlock, cbr

X = torch.rand(1, 3, 8, 8)


def synthetic_table(plan, fn, step=1, other_ms=0.0):
    """A table whose layer ``l`` takes ``fn(l, c_in, c_out)`` ms, 'measured'
    at every multiple of ``step`` (per-channel layers: ``c_in == c_out``)."""
    entries, layers = {}, {}
    for lay in plan.layers.values():
        one = lay.kind == 'norm' or lay.depthwise
        ci, co = lay.in_channels, lay.out_channels
        full = fn(lay, ci, co)
        outs = channel_grid(co, step, 1 << 20)
        ins = channel_grid(ci, step, 1 << 20)
        entries[lay.name] = {
            'ms': full, 'one_axis': one,
            'out': [[c, fn(lay, c if one else ci, c)] for c in outs],
            'in': [[ci, full]] if one else [[c, fn(lay, c, co)] for c in ins],
        }
        layers[lay.name] = {'rows': [lay.name]}
    meta = dict(device_description('cpu'), input_shape=[1, 3, 8, 8],
                other_ms=other_ms)
    return LatencyTable.from_dict(dict(format=TABLE_FORMAT, meta=meta,
                                       entries=entries, layers=layers))


# ms per (c_in * c_out) of each conv, and per channel of each BN.
ALPHA = {'b1.0': 0.02, 'b2.0': 0.05, 'head': 0.01}
BETA = 0.1


def bilinear(lay, ci, co):
    return ALPHA[lay.name] * ci * co if lay.kind == 'conv' else BETA * co


def test_latency_psi_and_marginals_equal_hand_arithmetic():
    plan = discover_groups(Chain(), X)
    cm = CostModel(plan, cost='latency',
                   latency_table=synthetic_table(plan, bilinear,
                                                 other_ms=1.5))
    # Chain: b1.0 3->8, b1.1 BN 8, b2.0 8->6, b2.1 BN 6, head 6->4. The
    # 1.5 ms outside the layers follow the norms' time (14 channels dense).
    def hand(c1, c2):
        return (0.02 * 3 * c1 + BETA * c1 + 0.05 * c1 * c2 + BETA * c2
                + 0.01 * c2 * 4 + 1.5 * (c1 + c2) / 14)

    dense = hand(8, 6)
    assert cm.dense == pytest.approx(dense)
    b = cm.ones()
    b['b1.0'][:3] = 0
    b['b2.0'][:2] = 0
    assert float(cm.latency(b)) == pytest.approx(hand(5, 4))
    assert float(cm.psi(b)) == pytest.approx(hand(5, 4) / dense)
    g = cm.marginals()
    n1 = plan.groups['b1.0'].size
    # d/dc1 and d/dc2 of the hand formula, per unit of psi.
    g1 = (0.02 * 3 + BETA + 0.05 * 6 + 1.5 / 14) / dense
    g2 = (0.05 * 8 + BETA + 0.01 * 4 + 1.5 / 14) / dense
    assert torch.allclose(g[:n1], torch.full((n1,), g1, dtype=g.dtype))
    assert torch.allclose(g[n1:], torch.full((6,), g2, dtype=g.dtype))
    assert (g > 0).all() and g2 > g1  # the b2 channels cost more


def test_latency_steps_between_measured_widths():
    # b1.0's latency steps every 4 output channels (measured at 4 and 8);
    # the rest is bilinear.
    def stairs(lay, ci, co):
        if lay.name == 'b1.0':
            return 10.0 * math.ceil(co / 4)
        return bilinear(lay, ci, co)

    def rest(c1):  # everything but b1.0, with b2.0 at its 6 channels
        return BETA * c1 + 0.05 * c1 * 6 + BETA * 6 + 0.01 * 6 * 4

    plan = discover_groups(Chain(), X)
    cm = CostModel(plan, cost='latency',
                   latency_table=synthetic_table(plan, stairs, step=4))
    dense = cm.dense
    assert dense == pytest.approx(20.0 + rest(8))
    b = cm.ones()
    b['b1.0'][:2] = 0  # 6 kept: halfway between the knots at 4 and 8
    assert float(cm.latency(b)) == pytest.approx(15.0 + rest(6))
    b['b1.0'][:4] = 0  # 4 kept: on a knot, the measured value
    assert float(cm.latency(b)) == pytest.approx(10.0 + rest(4))
    # At 8 kept the last channel costs the slope below the knot, 10 / 4 ms,
    # plus its share of the bilinear layers.
    g = cm.marginals()[:plan.groups['b1.0'].size]
    assert torch.allclose(g, torch.full_like(g, (2.5 + BETA + 0.3) / dense))


def test_noisy_curves_are_made_rising():
    # A measured curve that dips (timing noise) would give channels a
    # negative price; the model pools it to non-decreasing and adds a 1 %
    # width-proportional part, so every channel costs something.
    def noisy(lay, ci, co):
        if lay.name == 'b1.0':
            return {4: 12.0, 8: 10.0}[co]  # narrower measured slower
        return bilinear(lay, ci, co)

    plan = discover_groups(Chain(), X)
    cm = CostModel(plan, cost='latency',
                   latency_table=synthetic_table(plan, noisy, step=4))
    g = cm.marginals()
    assert (g > 0).all()
    # Pooled: 4 and 8 channels both take the mean, 11 ms, rescaled so the
    # full width is its measured 10 ms: the ratio at 4 is 0.99 + 0.01 / 2.
    b = cm.ones()
    b['b1.0'][:4] = 0
    r4 = 0.99 * 1.0 + 0.01 * 4 / 8
    assert float(cm.latency(b)) == pytest.approx(
        10.0 * r4 + BETA * 4 + 0.05 * 4 * 6 + BETA * 6 + 0.01 * 6 * 4)


def test_projection_meets_a_latency_target_on_blocks():
    net = nn.Sequential(cbr(3, 32), cbr(32, 32), nn.Conv2d(32, 4, 1))

    def blocks(lay, ci, co):
        up = lambda c: 8 * math.ceil(c / 8)  # noqa: E731
        if lay.kind == 'norm':
            return 0.05 * up(co)
        return 0.01 * up(ci) * up(co)

    plan = discover_groups(net, X)
    table = synthetic_table(plan, blocks, step=8, other_ms=0.3)
    cm = CostModel(plan, cost='latency', latency_table=table)
    ms = install_masks(net, plan)
    rep = project_to_target(ms, cm, 0.5, tol=0.02, channel_multiple=8)
    k1, k2 = rep.kept_after['0.0'], rep.kept_after['1.0']
    assert k1 % 8 == 0 and k2 % 8 == 0
    # Latency by hand at the kept counts (on the knots: exact).
    hand = (0.01 * 8 * k1 + 0.05 * k1 + 0.01 * k1 * k2 + 0.05 * k2
            + 0.01 * k2 * 8 + 0.3 * (k1 + k2) / 64)
    dense = 0.01 * 8 * 32 + 1.6 + 0.01 * 32 * 32 + 1.6 + 0.01 * 32 * 8 + 0.3
    assert cm.dense == pytest.approx(dense)
    assert rep.reached, rep.reason
    assert 0.48 <= hand / dense <= 0.5
    assert rep.psi_after == pytest.approx(hand / dense)


def test_table_builder_on_a_tiny_net(tmp_path):
    net = Chain().eval()
    plan = discover_groups(net, X)
    seen = []
    table = measure_latency_table(
        net, plan, lambda: net(X), input_shape=X.shape, step=4, warmup=0,
        runs=1, progress=lambda d, t: seen.append((d, t)))
    meta = table.meta
    assert meta['device'] == 'cpu' and meta['torch'] == torch.__version__
    assert meta['threads'] == torch.get_num_threads()
    assert meta['input_shape'] == [1, 3, 8, 8] and meta['other_ms'] >= 0
    by_layer = {n: table.entries[r['rows'][0]] for n, r in
                table.layers.items()}
    assert set(by_layer) == {'b1.0', 'b1.1', 'b2.0', 'b2.1', 'head'}
    # Widths: multiples of 4 and the full width; fixed axes (the image's 3
    # channels, the head's 4 outputs) only at full width.
    assert [c for c, _ in by_layer['b1.0']['in']] == [3]
    assert [c for c, _ in by_layer['b1.0']['out']] == [4, 8]
    assert [c for c, _ in by_layer['b2.0']['in']] == [4, 8]
    assert [c for c, _ in by_layer['b2.0']['out']] == [4, 6]
    assert [c for c, _ in by_layer['head']['out']] == [4]
    assert by_layer['b1.1']['one_axis'] and not by_layer['b2.0']['one_axis']
    assert all(t > 0 for e in by_layer.values() for _, t in e['out'])
    # one progress step per timing, ending at the total
    assert seen and seen[-1][0] == seen[-1][1] == meta['timings']
    path = tmp_path / 'lut.json'
    table.save(str(path))
    again = LatencyTable.load(str(path))
    assert again.to_dict() == json.loads(path.read_text())
    cm = CostModel(plan, cost='latency', latency_table=again)
    # Each call's full-width time is timed inside the model, in the same
    # forwards as the total, so the dense prediction is that total.
    calls = [t for r in table.layers.values() for t in r['ms']]
    assert len(calls) == 5 and all(t > 0 for t in calls)
    assert meta['layers_ms'] == pytest.approx(sum(calls))
    assert cm.dense == pytest.approx(max(meta['dense_ms'],
                                         meta['layers_ms']))
    assert float(cm.psi(cm.ones())) == pytest.approx(1.0)


def test_dcn_is_timed_with_its_offset_conv():
    pytest.importorskip('mmcv.ops')
    net = DCNBlock().eval()
    plan = discover_groups(net, X)
    table = measure_latency_table(net, plan, lambda: net(X),
                                  input_shape=X.shape, step=4, warmup=0,
                                  runs=1)
    assert table.layers['dcn.conv_offset'] == {'included_in': 'dcn'}
    e = table.entries[table.layers['dcn']['rows'][0]]
    assert [c for c, _ in e['in']] == [4, 8]
    CostModel(plan, cost='latency', latency_table=table)  # all rows found


def test_foreign_and_bad_tables_are_named(tmp_path):
    plan = discover_groups(Chain(), X)
    table = synthetic_table(plan, bilinear)
    msg = table.foreign(device_description('cpu', threads=99), (1, 3, 16, 16))
    assert '99 thread(s)' in msg and 'input 1x3x16x16' in msg
    assert 'input 1x3x8x8' in msg  # the table's own description too
    assert table.foreign(device_description('cpu'), (1, 3, 8, 8)) == ''
    with pytest.raises(FileNotFoundError, match='build_latency_table'):
        LatencyTable.load(str(tmp_path / 'none.json'))
    bad = tmp_path / 'bad.json'
    bad.write_text('{\n "format": \n')
    with pytest.raises(ValueError, match='bad.json: line 3'):
        LatencyTable.load(str(bad))
    d = table.to_dict()
    del d['layers']['b2.0']
    with pytest.raises(ValueError, match=r"no entry .*'b2.0'"):
        CostModel(plan, cost='latency',
                  latency_table=LatencyTable.from_dict(d))
    with pytest.raises(ValueError, match='needs a latency_table'):
        CostModel(plan, cost='latency')


def test_maskset_binaries_feed_the_latency_cost():
    net = Chain()
    plan = discover_groups(net, X)
    cm = CostModel(plan, cost='latency',
                   latency_table=synthetic_table(plan, bilinear))
    ms = MaskSet(plan)
    with torch.no_grad():
        ms.mask('b2.0').mask[:3] = 0.0
    psi = cm.psi(ms.binaries())
    assert float(psi) < 1.0
    psi.backward()  # differentiable through the STE
    assert ms.mask('b2.0').mask.grad is not None
