# ResNet-18 pruned in FastAT training to 0.7 of its MACs (a row of the
# seed's Table 2); otherwise as ./resnet18_imagenet_fastat_prune50.py.
_base_ = ['./resnet18_imagenet_fastat_prune50.py']
custom_hooks = [
    dict(type='InTrainPruningHook', psi_target=0.7, b='auto',
         prune_start=7, prune_end=53, by_epoch=True)
]
