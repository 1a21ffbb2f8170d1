# The seed's robustness settings (S.2) in [0, 1] units of the pixel range:
# FastAT training (random-start FGSM, eps 2/255, step 2.5/255) and PGD-20
# evaluation (eps 2/255, step 0.5/255). A classifier has no boxes, so the
# attack's ground truth is the label (gt_frame='label').
fastat_train_loop = dict(
    type='AdversarialEpochBasedTrainLoop',
    attack=dict(type='FastAT', eps=2 / 255, alpha=2.5 / 255))
pgd_test_loop = dict(
    type='AdversarialTestLoop',
    gt_frame='label',
    attack=dict(type='PGD', eps=2 / 255, alpha=0.5 / 255, steps=20,
                random_start=True))
