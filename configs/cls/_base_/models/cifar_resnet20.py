# He et al.'s CIFAR ResNet-20 (3 stages of 3 basic blocks, 16/32/64
# channels). Shortcut B (1x1 projection where the width doubles) so that
# every stage's residual width can be pruned; 'A' is the paper's
# parameter-free form (mmprune/models/backbones/cifar_resnet.py).
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ImgDataPreprocessor',
        mean=[125.307, 122.961, 113.8575],
        std=[51.5865, 50.847, 51.255]),
    backbone=dict(type='CifarResNet', depth=20, shortcut='B'),
    num_classes=10,
    in_channels=64)
