# CPU demo of FastAT: the demo baseline (128 x 416 synthetic KITTI, plain
# convs in the neck) trained on FastAT adversarial batches, with the seed's
# eps = 2/255 and alpha = 2.5/255 ([0, 1] pixel units). The test loop reports
# clean and PGD (eps 2/255, alpha 0.5/255, 20 steps) KITTI AP side by side;
# a FastAT step costs about two clean ones.
_base_ = ['./centernet_dla34_kitti_demo.py', '../_base_/adversarial/fastat_pgd.py']

train_cfg = {{_base_.fastat_train_loop}}
test_cfg = {{_base_.pgd_test_loop}}
