# Robust in-train pruning: CenterNet DLA-34 pruned to 50 % MACs while it
# trains on FastAT adversarial batches (the seed's joint objective). The
# prune loss is added to the *adversarial* task loss: the adversarial train
# loop hands that loss to PruneOptimWrapper.update_params.
_base_ = ['./centernet_dla34_prune50.py', './_base_/adversarial/fastat_pgd.py']

train_cfg = {{_base_.fastat_train_loop}}
test_cfg = {{_base_.pgd_test_loop}}
