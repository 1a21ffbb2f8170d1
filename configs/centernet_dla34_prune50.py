# In-train pruning of CenterNet DLA-34 on KITTI to 50 % of the baseline MACs.
# Seed settings: b = 10, masks trained by SGD lr 0.01 with decay 5e-4, prune
# window at the seed's fractions of the schedule (epochs 20..240 of 300 ->
# 17..200 of 250). channel_multiple=16 rounds the kept widths at the freeze so
# the exported convs run at oneDNN/cuDNN-friendly widths (README, "Latency").
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
        prune_start=17,
        prune_end=200,
        channel_multiple=16,
        by_epoch=True)
]
