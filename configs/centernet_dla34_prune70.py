# In-train pruning to 70 % of the baseline MACs (otherwise as prune50).
_base_ = ['./centernet_dla34_prune50.py']
custom_hooks = [
    dict(type='InTrainPruningHook', psi_target=0.7, b='auto', prune_start=10,
         prune_end=100, channel_multiple=16, by_epoch=True)
]
