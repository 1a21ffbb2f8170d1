# Dense ResNet-20 on CIFAR-10 with the seed's schedule (the baseline).
_base_ = [
    './_base_/models/cifar_resnet20.py', './_base_/datasets/cifar10.py',
    './_base_/schedules/cifar_300e.py', './_base_/default_runtime.py'
]
