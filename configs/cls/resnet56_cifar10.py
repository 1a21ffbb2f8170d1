# Dense ResNet-56 on CIFAR-10 with the seed's schedule (the baseline).
_base_ = ['./resnet20_cifar10.py']
model = dict(backbone=dict(depth=56))
