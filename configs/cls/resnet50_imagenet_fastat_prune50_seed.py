# ResNet-50 pruned in FastAT training to 0.5 with the seed's exact form of
# in-train pruning: hinge L_HW on the raw MACs ratio with b = 10 (the
# seed's default; S.2 states no other), a constant target, masks from 1,
# unbounded, exact channel counts. The window keeps the CIFAR fractions.
_base_ = ['./resnet50_imagenet_fastat.py']
optim_wrapper = dict(
    type='PruneOptimWrapper',
    mask_optimizer=dict(type='SGD', lr=0.01, momentum=0.0),
    mask_weight_decay=5e-4)
custom_hooks = [
    dict(type='InTrainPruningHook', psi_target=0.5, b=10, loss_form='hinge',
         target_schedule='constant', normalize=False, revive=False,
         binarize='threshold', prune_start=7, prune_end=80, by_epoch=True)
]
