# CPU demo of in-train pruning to 50 % MACs: the demo baseline plus the
# pruning snippet. The window opens after one epoch and closes at epoch 8,
# which leaves four epochs (two before the lr step at 10) to fine-tune the
# frozen, projected masks. b='auto' scales the prune
# loss to the window's length (a few hundred iterations here, ~100k in the
# full run), so the masks reach the target in a CPU-sized run.
_base_ = ['./centernet_dla34_kitti_demo.py']

optim_wrapper = dict(
    type='PruneOptimWrapper',
    mask_optimizer=dict(type='SGD', lr=0.01, momentum=0.0),
    mask_weight_decay=5e-4)
custom_hooks = [
    dict(
        type='InTrainPruningHook',
        psi_target=0.5,
        b='auto',
        # No group below half its channels. The costliest group per channel
        # is the neck's 64-channel output (it feeds the head's three 64->256
        # 3x3 convs); with 0.25 it went to 16 channels and Pedestrian and
        # Cyclist AP fell to 0 (README, "The two commands").
        min_channels=0.5,
        # As the flagship: kept widths in multiples of 16 (README, Latency).
        channel_multiple=16,
        prune_start=1,
        prune_end=8,
        by_epoch=True)
]
