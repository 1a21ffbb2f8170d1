# The ImageNet ResNet-18 (mmdet's ResNet, torchvision layout) with a
# 1000-way linear classifier.
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ImgDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ),
                  norm_eval=False, style='pytorch'),
    num_classes=1000,
    in_channels=512)
