# Dense ResNet-20 (1 input channel) on the 5,000 packaged MNIST digits at
# 16 x 16: the baseline of benchmarks/cls_study.py. A CPU-sized schedule:
# 6 epochs of 47 iterations, SGD lr 0.1, x0.1 at epoch 5.
_base_ = [
    './_base_/models/cifar_resnet20.py', './_base_/datasets/mnist5k.py',
    './_base_/default_runtime.py'
]
# MNIST's mean / std, (0.1307, 0.3081) x 255.
model = dict(
    data_preprocessor=dict(mean=[33.32], std=[78.57]),
    backbone=dict(in_channels=1))
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[5],
                       gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=6, val_interval=3)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(logger=dict(interval=20))
