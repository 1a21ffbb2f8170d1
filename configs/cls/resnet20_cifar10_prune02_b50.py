# The seed's Table 1 with b = 50, the value it uses for extreme targets
# (psi 0.17 reported for ResNet-20).
_base_ = ['./resnet20_cifar10_prune02_b10.py']
custom_hooks = [
    dict(type='InTrainPruningHook', psi_target=0.2, b=50, loss_form='hinge',
         target_schedule='constant', normalize=False, revive=False,
         binarize='threshold', prune_start=20, prune_end=240, by_epoch=True)
]
