# In-train pruning of CenterNet DLA-34 on KITTI to 50 % of the baseline MACs,
# with the dynamics that reach the target by training (README, "How the
# masks reach the target"): the target falls cubically from 1 to 0.5 over
# the first 75 % of the window, L_HW is normalised per channel, b is sized
# to the window, pruned channels can come back, and the kept widths are
# multiples of 16 throughout (README, "Latency").
#
# Schedule. The seed steps Adam's lr at 60/90/120 and freezes at its
# epoch-200 equivalent, where the lr is 1.25e-7: the pruned model then gets
# no fine-tuning. Here the window is epochs 10..100 (3,960 iterations at
# 8 GPUs x 16 on KITTI's 5,610 training images) and the lr steps move to
# 150 and 200, so the frozen model fine-tunes 50 epochs at the full lr and
# 100 more at 1/10 and 1/100 (60 % of the schedule after the freeze).
# The seed's exact form: ./centernet_dla34_prune50_seed.py.
_base_ = ['./centernet_dla34_kitti.py']

param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=250, by_epoch=True,
         milestones=[150, 200], gamma=0.1)
]
optim_wrapper = dict(
    type='PruneOptimWrapper',
    mask_optimizer=dict(type='SGD', lr=0.01, momentum=0.0),
    mask_weight_decay=5e-4)
custom_hooks = [
    dict(
        type='InTrainPruningHook',
        psi_target=0.5,
        b='auto',
        prune_start=10,
        prune_end=100,
        channel_multiple=16,
        by_epoch=True)
]
