"""psi on hand-built nets: MACs by hand, and by independent counters on the
physically sliced nets."""

import pytest
import torch

from mmprune.core import CostModel, discover_groups, install_masks

from .nets import (
    Chain,
    Concat,
    DCNBlock,
    DWSeparable,
    DWUpsample,
    Residual,
    SharedHead,
    count_macs,
    randomise,
    slice_model,
)

X = torch.rand(1, 3, 8, 8)

# (net, kept channel indices per group, dense MACs, pruned MACs), per sample,
# input 3x8x8 (64 positions). Hand arithmetic: k*k * c_in * c_out * H*W.
CASES = {
    'chain': (
        Chain,
        {'b1.0': [0, 2, 3, 5, 7], 'b2.0': [1, 4]},
        # 9*3*8*64 + 9*8*6*64 + 1*6*4*64
        13824 + 27648 + 1536,
        # 9*3*5*64 + 9*5*2*64 + 1*2*4*64
        8640 + 5760 + 512,
    ),
    'residual': (
        Residual,
        {'stem.0': [0, 1, 4, 6], 'c1.0': [0, 2, 5]},
        # stem 9*3*8*64, c1 9*8*6*64, c2 9*6*8*64, head 8*4*64
        13824 + 27648 + 27648 + 2048,
        # stem 9*3*4*64, c1 9*4*3*64, c2 9*3*4*64, head 4*4*64
        6912 + 6912 + 6912 + 1024,
    ),
    'concat': (
        Concat,
        {'a.0': [1, 3], 'b.0': [0, 2, 5], 'fuse.0': [0, 1, 2, 4]},
        # a 9*3*4*64, b 1*3*6*64, fuse 9*10*5*64, head 5*2*64
        6912 + 1152 + 28800 + 640,
        # a 9*3*2*64, b 3*3*64, fuse 9*(2+3)*4*64, head 4*2*64
        3456 + 576 + 11520 + 512,
    ),
    'depthwise': (
        DWSeparable,
        {'stem.0': [0, 1, 2, 6, 7], 'pw.0': [0, 3, 4]},
        # stem 9*3*8*64, dw 9*8*64 (linear in C), pw 8*6*64, head 6*2*64
        13824 + 4608 + 3072 + 768,
        # stem 9*3*5*64, dw 9*5*64, pw 5*3*64, head 3*2*64
        8640 + 2880 + 960 + 384,
    ),
    'dw_deconv': (
        DWUpsample,
        {'stem.0': [2, 3, 7]},
        # stem 9*3*8*64, deconv 4*4*8 * 64 input px, head 8*2*256
        13824 + 8192 + 4096,
        # stem 9*3*3*64, deconv 16*3*64, head 3*2*256
        5184 + 3072 + 1536,
    ),
    'shared_head': (
        SharedHead,
        {'l0': [0, 1, 2, 3], 'head': [2, 5]},
        # l0 9*3*8*64, l1 9*3*8*16, head 9*8*6*(64+16), cls 6*2*80
        13824 + 3456 + 34560 + 960,
        # l0 9*3*4*64, l1 9*3*4*16, head 9*4*2*80, cls 2*2*80
        6912 + 1728 + 5760 + 320,
    ),
    'dcn': (
        DCNBlock,
        {'stem.0': [0, 3, 5, 6], 'dcn': [1, 2, 4]},
        # stem 9*3*8*64, dcn 9*8*6*64, offset conv 9*8*27*64, head 6*2*64
        13824 + 27648 + 124416 + 768,
        # stem 9*3*4*64, dcn 9*4*3*64, offset 9*4*27*64, head 3*2*64
        6912 + 6912 + 62208 + 384,
    ),
}


def binaries_for(plan, keep):
    out = {}
    for name, g in plan.groups.items():
        b = torch.zeros(g.size)
        b[keep[name]] = 1.0
        out[name] = b
    return out


@pytest.mark.parametrize('case', sorted(CASES))
def test_psi_matches_hand_count_and_sliced_net(case):
    net_cls, keep, dense, pruned = CASES[case]
    net = randomise(net_cls())
    plan = discover_groups(net, X)
    assert set(plan.groups) == set(keep)
    cm = CostModel(plan)
    assert cm.dense_macs == dense
    b = binaries_for(plan, keep)
    assert cm.macs(b).item() == pruned
    assert cm.psi(b).item() == pytest.approx(pruned / dense, rel=1e-12)
    assert cm.psi(cm.ones()).item() == 1.0
    # Independent: count MACs with forward hooks on the dense and the
    # physically sliced nets.
    assert count_macs(net, X) == dense
    assert count_macs(slice_model(net, plan, b), X) == pruned
    rows = cm.breakdown(b)
    assert sum(r.macs for r in rows) == pruned
    assert sum(r.macs_dense for r in rows) == dense


@pytest.mark.parametrize('case', sorted(set(CASES) - {'dcn'}))
def test_psi_matches_mmengine_flop_analyzer(case):
    from mmengine.analysis import FlopAnalyzer

    net_cls, keep, dense, pruned = CASES[case]
    net = randomise(net_cls())
    plan = discover_groups(net, X)
    sliced = slice_model(net, plan, binaries_for(plan, keep))

    def conv_linear(model):
        fa = FlopAnalyzer(model, (X,))
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        ops = fa.by_operator()
        return ops.get('conv', 0) + ops.get('linear', 0)

    assert conv_linear(net) == dense
    assert conv_linear(sliced) == pruned
    psi = CostModel(plan).psi(binaries_for(plan, keep)).item()
    assert psi == pytest.approx(
        conv_linear(sliced) / conv_linear(net), rel=1e-12
    )


def test_breakdown_rows_for_concat():
    net = randomise(Concat())
    plan = discover_groups(net, X)
    cm = CostModel(plan)
    rows = {
        r.name: r for r in cm.breakdown(binaries_for(plan, CASES['concat'][1]))
    }
    assert set(rows) == {'a.0', 'b.0', 'fuse.0', 'head'}
    f = rows['fuse.0']
    assert (f.in_kept, f.in_total, f.out_kept, f.out_total) == (5, 10, 4, 5)
    assert (f.macs_dense, f.macs) == (28800, 11520)
    assert (f.params_dense, f.params) == (9 * 10 * 5, 9 * 5 * 4)
    h = rows['head']
    assert (h.in_kept, h.out_kept, h.params_dense, h.params) == (4, 2, 12, 10)


def test_params_cost():
    net = Chain()
    plan = discover_groups(net, X)
    cm = CostModel(plan, cost='params')
    # weights 9*3*8 + 9*8*6 + 6*4, head bias 4
    assert cm.dense_params == 216 + 432 + 24 + 4 == cm.dense
    b = binaries_for(plan, CASES['chain'][1])
    # 9*3*5 + 9*5*2 + 2*4 + 4
    assert cm.params(b).item() == 135 + 90 + 8 + 4
    assert cm.psi(b).item() == pytest.approx(237 / 676)
    n_params = sum(
        p.numel()
        for n, p in slice_model(net, plan, b).named_parameters()
        if 'b1.1' not in n and 'b2.1' not in n
    )
    assert n_params == 237
    with pytest.raises(ValueError, match='cost must be one of'):
        CostModel(plan, cost='flops')


def test_psi_is_differentiable_through_masks():
    net = Chain()
    plan = discover_groups(net, X)
    cm = CostModel(plan)
    ms = install_masks(net, plan)
    with torch.no_grad():
        ms.mask('b1.0').mask.fill_(0.9)
    psi = cm.psi(ms.binaries())
    psi.backward()
    # d psi / dB of a b1.0 channel = (9*3*64 + 9*6*64) / 43008; the STE passes
    # it inside (0, 1). b2.0 masks sit at 1.0, the edge: no gradient.
    g = ms.mask('b1.0').mask.grad
    assert torch.allclose(g, torch.full((8,), (1728 + 3456) / 43008))
    assert ms.mask('b2.0').mask.grad.abs().sum().item() == 0.0


def test_binaries_must_cover_plan():
    plan = discover_groups(Chain(), X)
    cm = CostModel(plan)
    with pytest.raises(KeyError, match='missing'):
        cm.psi({'b1.0': torch.ones(8)})
    with pytest.raises(ValueError, match='shape'):
        cm.psi({'b1.0': torch.ones(7), 'b2.0': torch.ones(6)})
