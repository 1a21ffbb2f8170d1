# The CPU demo with the seed's exact form of the prune loss (see
# ../centernet_dla34_prune50_seed.py): b = 10, hinge, constant target,
# unnormalised, exact counts. In a window of a few hundred iterations the
# masks barely move, and the projection at the freeze makes the whole cut.
_base_ = ['./centernet_dla34_prune50_demo.py']
custom_hooks = [
    dict(
        type='InTrainPruningHook',
        psi_target=0.5,
        b=10,
        loss_form='hinge',
        target_schedule='constant',
        normalize=False,
        revive=False,
        binarize='threshold',
        min_channels=0.5,
        prune_start=1,
        prune_end=8,
        by_epoch=True)
]
