# The seed's exact form of in-train pruning, kept for reproduction: hinge
# L_HW = max(0, psi - 0.5) on the raw MACs ratio, b = 10, a constant target,
# masks unbounded (a mask at or below 0 gets no gradient again), exact
# channel counts, the window at the seed's fractions of its schedule
# (epochs 20..240 of 300 -> 17..200 of 250) and the seed's lr steps at
# 60/90/120 (from the baseline). On KITTI's schedule this stalls near
# psi 0.69 and leaves the cut to the projection at the freeze (README,
# "How the masks reach the target").
_base_ = ['./centernet_dla34_kitti.py']

optim_wrapper = dict(
    type='PruneOptimWrapper',
    mask_optimizer=dict(type='SGD', lr=0.01, momentum=0.0),
    mask_weight_decay=5e-4)
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
        prune_start=17,
        prune_end=200,
        by_epoch=True)
]
