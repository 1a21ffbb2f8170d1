# CPU demo of pruning to 50 % MACs together with FastAT training.
_base_ = ['./centernet_dla34_prune50_demo.py']

train_cfg = dict(
    type='AdversarialEpochBasedTrainLoop',
    attack=dict(type='FastAT', eps=2 / 255, alpha=2.5 / 255))
test_cfg = dict(
    type='AdversarialTestLoop',
    attack=dict(type='PGD', eps=2 / 255, alpha=0.5 / 255, steps=20,
                random_start=True))
