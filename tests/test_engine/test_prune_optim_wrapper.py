"""PruneOptimWrapper on non-finite losses: skip, warn, then stop."""
import pytest
import torch

from mmprune.core import CostModel, discover_groups, install_masks
from mmprune.engine.optimizers import PruneOptimWrapper
from mmprune.engine.optimizers.prune_optim_wrapper import MAX_NONFINITE_STEPS
from tests.test_core.nets import Chain


def _wrapper(cls=PruneOptimWrapper, psi=0.5, b=1.0, **kwargs):
    torch.manual_seed(0)
    net = Chain()
    x = torch.rand(2, 3, 16, 16)
    plan = discover_groups(net, x)
    masks = install_masks(net, plan, binarize='count', revive=True)
    wrapper = cls(optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                  **kwargs)
    wrapper.attach_pruning(masks, CostModel(plan), psi, b, 'band')
    wrapper.prune_active = True
    return net, x, masks, wrapper


def _snapshot(net):
    # Parameters only: BatchNorm's running stats move in any forward.
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def test_nonfinite_loss_skips_the_step_and_a_streak_stops_training():
    net, x, masks, wrapper = _wrapper()
    # A finite step moves the weights and the masks.
    before = _snapshot(net)
    wrapper.update_params(net(x).mean())
    after = _snapshot(net)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    mask_vals = [m.detach().clone() for m in masks.parameters()]
    # A NaN loss: nothing moves, nothing non-finite gets in.
    for _ in range(MAX_NONFINITE_STEPS - 1):
        wrapper.update_params(net(x).mean() * float('nan'))
        now = _snapshot(net)
        assert all(torch.equal(after[k], now[k]) for k in after)
        assert all(torch.equal(m, v)
                   for m, v in zip(masks.parameters(), mask_vals))
    assert wrapper.nonfinite_steps == MAX_NONFINITE_STEPS - 1
    # A finite step in between resets the streak.
    wrapper.update_params(net(x).mean())
    assert wrapper.nonfinite_steps == 0
    for _ in range(MAX_NONFINITE_STEPS - 1):
        wrapper.update_params(net(x).mean() * float('inf'))
    with pytest.raises(FloatingPointError, match=f'{MAX_NONFINITE_STEPS} '
                       'steps in a row'):
        wrapper.update_params(net(x).mean() * float('nan'))


def test_amp_wrapper_on_cpu_bf16_moves_masks_and_guards_nonfinite():
    from mmprune.engine.optimizers import PruneAmpOptimWrapper
    net, x, masks, wrapper = _wrapper(
        PruneAmpOptimWrapper, 0.3, 50.0, dtype='bfloat16',
        mask_optimizer=dict(type='SGD', lr=0.5))
    before = [m.detach().clone() for m in masks.parameters()]
    with wrapper.optim_context(net):
        y = net(x)
    # The forward really ran under bf16 autocast.
    assert y.dtype == torch.bfloat16
    wrapper.update_params(y.float().mean())
    moved = [m.detach().clone() for m in masks.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, moved))
    # No loss scaler on CPU: a NaN step is skipped by the wrapper itself.
    with wrapper.optim_context(net):
        y = net(x)
    wrapper.update_params(y.float().mean() * float('nan'))
    assert all(torch.equal(m, v) for m, v in zip(masks.parameters(), moved))
    assert wrapper.nonfinite_steps == 1


def test_amp_flag_on_cpu_picks_bf16_and_fp16_is_refused():
    import os.path as osp

    from mmprune.engine.optimizers import PruneAmpOptimWrapper
    from mmprune.engine.runner import cli
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = cli.build_train_cfg(cli.parse_train_args([
        osp.join(root, 'configs', 'demo', 'centernet_dla34_prune50_demo.py'),
        '--amp']))
    assert cfg.optim_wrapper.type == 'PruneAmpOptimWrapper'
    if not torch.cuda.is_available():
        assert cfg.optim_wrapper.dtype == 'bfloat16'
        with pytest.raises(ValueError, match="needs dtype='bfloat16'"):
            PruneAmpOptimWrapper(optimizer=torch.optim.SGD(
                Chain().parameters(), lr=0.1), dtype='float16')
