# ResNet-50 with the seed's exact form of in-train pruning at 0.5; otherwise
# as ./resnet18_imagenet_fastat_prune50_seed.py.
_base_ = ['./resnet18_imagenet_fastat_prune50_seed.py']
model = dict(backbone=dict(depth=50), in_channels=2048)
