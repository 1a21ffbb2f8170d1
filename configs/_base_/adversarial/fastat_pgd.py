# The seed's robustness settings (S.2), in [0, 1] units of the pixel range:
# FastAT training (random-start FGSM, eps 2/255, step 2.5/255) and PGD
# evaluation (eps 2/255, step 0.5/255, 20 steps). Experiments take them with
#   train_cfg = {{_base_.fastat_train_loop}}
#   test_cfg = {{_base_.pgd_test_loop}}
# (the names do not clash with the other bases' keys).
fastat_train_loop = dict(
    type='AdversarialEpochBasedTrainLoop',
    attack=dict(type='FastAT', eps=2 / 255, alpha=2.5 / 255))
pgd_test_loop = dict(
    type='AdversarialTestLoop',
    attack=dict(type='PGD', eps=2 / 255, alpha=0.5 / 255, steps=20,
                random_start=True))
