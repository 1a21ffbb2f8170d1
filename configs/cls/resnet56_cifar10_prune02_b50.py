# The seed's Table 1 on ResNet-56 with b = 50 (psi 0.18 reported);
# otherwise as ./resnet20_cifar10_prune02_b50.py.
_base_ = ['./resnet20_cifar10_prune02_b50.py']
model = dict(backbone=dict(depth=56))
