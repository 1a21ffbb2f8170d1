# Robust in-train pruning: CenterNet DLA-34 pruned to 50 % MACs while it
# trains on FastAT adversarial batches (the seed's joint objective). The
# prune loss is added to the *adversarial* task loss: the adversarial train
# loop hands that loss to PruneOptimWrapper.update_params.
_base_ = ['./centernet_dla34_prune50.py']

train_cfg = dict(
    type='AdversarialEpochBasedTrainLoop',
    attack=dict(type='FastAT', eps=2 / 255, alpha=2.5 / 255))
test_cfg = dict(
    type='AdversarialTestLoop',
    attack=dict(type='PGD', eps=2 / 255, alpha=0.5 / 255, steps=20,
                random_start=True))
