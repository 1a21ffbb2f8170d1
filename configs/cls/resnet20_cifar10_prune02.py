# ResNet-20 pruned in training to 0.2 of its MACs with mmprune's dynamics
# (README, "How the masks reach the target"): the target falls cubically
# over the first 75 % of the window, L_HW is normalised per channel, b is
# sized to the window ('auto'), pruned channels can come back.
#
# Schedule. The seed freezes at epoch 240, where its third lr step leaves
# 1e-4: the frozen model gets almost no fine-tuning. Here the window is
# epochs 20..160 and the lr steps move to 180 and 240, so the frozen model
# trains 20 epochs at 0.1, 60 at 0.01 and 60 at 0.001 (47 % of the
# schedule after the freeze). The seed's exact form: *_prune02_b10.py.
_base_ = ['./resnet20_cifar10.py']
param_scheduler = dict(type='MultiStepLR', by_epoch=True,
                       milestones=[180, 240], gamma=0.1)
optim_wrapper = dict(
    type='PruneOptimWrapper',
    mask_optimizer=dict(type='SGD', lr=0.01, momentum=0.0),
    mask_weight_decay=5e-4)
custom_hooks = [
    dict(type='InTrainPruningHook', psi_target=0.2, b='auto',
         prune_start=20, prune_end=160, by_epoch=True)
]
