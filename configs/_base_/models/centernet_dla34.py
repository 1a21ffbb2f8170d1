# CenterNet with the DLA-34 backbone and the DLA-Up neck ("DLASeg" of
# Objects as Points): 64 channels at stride 4, DCNv2 in the IDA-Up nodes.
model = dict(
    type='CenterNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='DLA',
        depth=34,
        norm_cfg=dict(type='BN'),
        # Set an ImageNet checkpoint you have (original or timm naming):
        # init_cfg=dict(type='Pretrained', checkpoint='path/to/dla34.pth')
        init_cfg=None),
    neck=dict(
        type='DLAUpNeck',
        in_channels=(16, 32, 64, 128, 256, 512),
        first_level=2,
        out_channels=64,
        use_dcn=True,
        # mmcv's DCNv2 layer (same weights and keys) with a fast CPU forward;
        # on CUDA it runs mmcv's kernel. dict(type='DCNv2') for mmcv's own.
        dcn_cfg=dict(type='DCNv2Torch')),
    bbox_head=dict(
        type='CenterNetHead',
        num_classes=3,
        in_channels=64,
        feat_channels=256,  # CenterNet's head_conv for DLA
        loss_center_heatmap=dict(type='GaussianFocalLoss', loss_weight=1.0),
        loss_wh=dict(type='L1Loss', loss_weight=0.1),
        loss_offset=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=None,
    test_cfg=dict(topk=100, local_maximum_kernel=3, max_per_img=100))
