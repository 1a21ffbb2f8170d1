# ResNet-56 pruned in training to 0.2 of its MACs with mmprune's dynamics
# (as ./resnet20_cifar10_prune02.py).
_base_ = ['./resnet20_cifar10_prune02.py']
model = dict(backbone=dict(depth=56))
