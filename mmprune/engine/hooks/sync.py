"""State the pruning hook keeps equal across processes and model copies.

* `same_on_all_ranks`: rank 0's trace input on every rank, so all ranks
  build one plan and one cost model (a rank whose dataset starts with
  another image would trace another shape, which would give different
  projections and exported widths).
* `sync_ema_masks`: mmengine's ``EMAHook`` copies the model, masks
  included, and averages every float tensor (with ``update_buffers=True``
  the frozen binaries too) but never the boolean ``frozen`` flag; it swaps
  its copy into the model to validate and into the checkpoint it saves.
  Masks are not weights to average, so the live ones are copied into the
  EMA model before each swap (the pruning hook runs before EMAHook).
"""
from mmengine.dist import broadcast_object_list, get_rank, get_world_size


def same_on_all_ranks(inputs, samples):
    """``(inputs [1, 3, H, W], [data_sample])`` of rank 0, on every rank."""
    if get_world_size() < 2:
        return inputs, samples
    obj = [(inputs.cpu(), [s.cpu() for s in samples])] if get_rank() == 0 \
        else [None]
    broadcast_object_list(obj, src=0)
    x, ss = obj[0]
    return x.to(inputs.device), [s.to(inputs.device) for s in ss]


def sync_ema_masks(runner, maskset, attr: str) -> None:
    """Copy ``maskset``'s state into every EMA model's masks (``attr``)."""
    for h in runner.hooks:
        ema = getattr(h, 'ema_model', None)
        dst = getattr(getattr(ema, 'module', None), attr, None)
        if dst is not None and dst is not maskset:
            dst.load_state_dict(maskset.state_dict())


__all__ = ['same_on_all_ranks', 'sync_ema_masks']
