# The seed's robust ImageNet baseline (S.2): ResNet-18 trained 100 epochs on
# FastAT batches (eps 2/255, step 2.5/255), lr 0.1 /10 every 30 epochs,
# tested clean and under PGD-20 (eps 2/255, step 0.5/255).
_base_ = [
    './_base_/models/resnet18.py', './_base_/datasets/imagenet.py',
    './_base_/schedules/imagenet_100e.py', './_base_/default_runtime.py',
    './_base_/adversarial.py'
]
train_cfg = dict(
    _delete_=True,
    type='AdversarialEpochBasedTrainLoop',
    attack={{_base_.fastat_train_loop.attack}},
    max_epochs=100,
    val_interval=5)
test_cfg = {{_base_.pgd_test_loop}}
