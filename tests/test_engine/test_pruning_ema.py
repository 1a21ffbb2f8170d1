"""In-train pruning under mmdet's EMAHook (YOLOX-S as shipped)."""
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

from mmprune.engine.export import export_pruned
from mmprune.engine.hooks import MASKS_ATTR, InTrainPruningHook
from tests.dropin import make_tiny_coco, tiny_config
from tests.test_engine.test_pruning_dropin import add_pruning


@pytest.mark.slow
def test_ema_keeps_live_binary_masks_in_swaps_and_checkpoints(tmp_path):
    data = str(tmp_path / 'coco')
    make_tiny_coco(data)
    work = str(tmp_path / 'w')
    cfg = add_pruning(tiny_config('yolox_s', data, work, max_iters=8),
                      prune_start=1, prune_end=6, b='auto')
    ema = [h for h in cfg.custom_hooks if h['type'] == 'EMAHook']
    assert ema and ema[0].get('update_buffers')  # YOLOX's, as shipped
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, InTrainPruningHook))
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook')
    live = {k: v.detach().clone() for k, v in hook.maskset.binaries().items()}
    assert hook.maskset.frozen and any((v == 0).any() for v in live.values())

    # Validation swaps the EMA weights in: the masks stay the live ones.
    hook.before_val_epoch(runner)
    ema_hook.before_val_epoch(runner)
    swapped = getattr(runner.model, MASKS_ATTR)
    for k, v in swapped.binaries().items():
        assert torch.equal(v, live[k]), k
    ema_hook.after_val_epoch(runner)

    # The saved checkpoint (EMA weights in state_dict) holds the live,
    # frozen 0 / 1 masks, in both its state dicts.
    ckpt = osp.join(work, 'iter_8.pth')
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    for sd in (state['state_dict'], state['ema_state_dict']):
        keys = [k for k in sd if '.frozen_binary' in k]
        assert keys
        for k in keys:
            assert set(sd[k].unique().tolist()) <= {0.0, 1.0}, k
        assert all(bool(sd[k]) for k in sd if k.endswith('.frozen'))
    # Export works from the EMA checkpoint, and matches the live masks.
    res = export_pruned(runner.cfg, ckpt, str(tmp_path / 'export'),
                        log=None)
    assert res.psi == pytest.approx(hook.current_psi())
