# The seed's Table 1 on ResNet-56: target 0.2 with b = 10 (psi 0.21
# reported); otherwise as ./resnet20_cifar10_prune02_b10.py.
_base_ = ['./resnet20_cifar10_prune02_b10.py']
model = dict(backbone=dict(depth=56))
