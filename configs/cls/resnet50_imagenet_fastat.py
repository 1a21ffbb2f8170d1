# The seed's robust ImageNet baseline with ResNet-50 (as resnet18's).
_base_ = ['./resnet18_imagenet_fastat.py']
model = dict(
    backbone=dict(depth=50),
    in_channels=2048)
