# In-train pruning to 70 % of the baseline MACs (otherwise as prune50).
_base_ = ['./centernet_dla34_prune50.py']
custom_hooks = [
    dict(type='InTrainPruningHook', psi_target=0.7, b=10, prune_start=17,
         prune_end=200, channel_multiple=16, by_epoch=True)
]
