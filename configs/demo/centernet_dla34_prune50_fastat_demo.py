# CPU demo of pruning to 50 % MACs together with FastAT training.
_base_ = ['./centernet_dla34_prune50_demo.py', '../_base_/adversarial/fastat_pgd.py']

train_cfg = {{_base_.fastat_train_loop}}
test_cfg = {{_base_.pgd_test_loop}}
