# Robust baseline: CenterNet DLA-34 on KITTI trained with FastAT (Wong et
# al., ICLR 2020), the seed's setting: random-start FGSM with eps = 2/255 and
# step alpha = 2.5/255, in [0, 1] units of the pixel range (the loop
# multiplies by 255: mmdet's images are 0..255 before normalisation). The
# perturbation is applied in pixel space, before mean/std, never in padding.
# Robustness is reported with the seed's PGD (eps 2/255, alpha 0.5/255,
# 20 steps) next to the clean KITTI AP; the clean keys keep their names and
# the attacked ones get an `adv/` prefix.
_base_ = ['./centernet_dla34_kitti.py', './_base_/adversarial/fastat_pgd.py']

train_cfg = {{_base_.fastat_train_loop}}
test_cfg = {{_base_.pgd_test_loop}}
