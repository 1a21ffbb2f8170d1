# ResNet-18 pruned in FastAT training to 0.5 of its MACs (a row of the
# seed's Table 2) with mmprune's dynamics. The seed states no window for
# ImageNet; this one is epochs 7..53 of 100 (the CIFAR configs' fractions),
# and the lr steps move from 30 / 60 / 90 to 60 / 80 so that the frozen
# model fine-tunes 7 epochs at 0.1 and 20 at 0.01 before 0.001.
# The seed's exact loss form: ./resnet18_imagenet_fastat_prune50_seed.py.
_base_ = ['./resnet18_imagenet_fastat.py']
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[60, 80],
                       gamma=0.1)
optim_wrapper = dict(
    type='PruneOptimWrapper',
    mask_optimizer=dict(type='SGD', lr=0.01, momentum=0.0),
    mask_weight_decay=5e-4)
custom_hooks = [
    dict(type='InTrainPruningHook', psi_target=0.5, b='auto',
         prune_start=7, prune_end=53, by_epoch=True)
]
