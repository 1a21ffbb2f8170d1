# ResNet-50 pruned in FastAT training to 0.7 of its MACs (a row of the
# seed's Table 2); otherwise as ./resnet18_imagenet_fastat_prune70.py.
_base_ = ['./resnet18_imagenet_fastat_prune70.py']
model = dict(backbone=dict(depth=50), in_channels=2048)
