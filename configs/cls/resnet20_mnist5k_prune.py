# ResNet-20 on the packaged MNIST digits, pruned in training to 50 % of its
# MACs with mmprune's dynamics: masks train in epochs 1..4 and freeze at 4;
# the frozen model fine-tunes 1 epoch at lr 0.1 and 1 at 0.01.
# benchmarks/cls_study.py sets psi_target per arm.
_base_ = ['./resnet20_mnist5k.py']
optim_wrapper = dict(
    type='PruneOptimWrapper',
    mask_optimizer=dict(type='SGD', lr=0.01, momentum=0.0),
    mask_weight_decay=5e-4)
custom_hooks = [
    dict(type='InTrainPruningHook', psi_target=0.5, b='auto', prune_start=1,
         prune_end=4, by_epoch=True)
]
