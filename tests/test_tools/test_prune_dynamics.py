"""benchmarks/prune_dynamics.py's simulation on a hand-built net."""
import os.path as osp
import sys

import torch

from mmprune.core import discover_groups
from tests.test_core.nets import Chain

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))

from prune_dynamics import simulate  # noqa: E402


def test_simulation_reaches_the_target_and_the_seed_form_is_selectable():
    plan = discover_groups(Chain().eval(), torch.rand(1, 3, 8, 8))
    res = simulate(plan, dict(type='InTrainPruningHook', psi_target=0.5),
                   lr=0.01, decay=5e-4, iters=400)
    assert abs(res['psi_at_freeze'] - 0.5) <= 0.03, res['curve']
    assert res['curve'][0]['psi'] == 1.0
    seed = simulate(plan, dict(psi_target=0.5, b=10, loss_form='hinge',
                               target_schedule='constant', normalize=False,
                               revive=False, binarize='threshold'),
                    lr=0.01, decay=5e-4, iters=400)
    assert seed['b'] == 10.0 and seed['hw_scale'] == 1.0
