# KITTI 2D object detection, read straight from the KITTI layout:
#   data_root/training/image_2/*.png, data_root/training/label_2/*.txt
#   data_root/ImageSets/{train,val}.txt (optional; else a seeded 0.75/0.25 split)
dataset_type = 'KittiDataset'
data_root = 'data/kitti/'
backend_args = None
classes = ('Car', 'Pedestrian', 'Cyclist')
# (width, height) of the network input, as in CenterNet's KITTI setup.
input_size = (1280, 384)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion'),
    dict(type='Resize', scale=input_size, keep_ratio=True),
    # CenterNet's KITTI augmentation: random scale +-0.4 and shift +-0.1,
    # no rotation or shear.
    dict(
        type='RandomAffine',
        max_rotate_degree=0.0,
        max_shear_degree=0.0,
        scaling_ratio_range=(0.6, 1.4),
        max_translate_ratio=0.1,
        border=(0, 0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=input_size, pad_val=dict(img=(0, 0, 0))),
    dict(type='PackDetInputs')
]
# Test at the original resolution; the centre pad to a multiple of 32 writes
# the `border` meta that CenterNetHead subtracts to map boxes back.
test_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True, backend_args=backend_args),
    dict(
        type='RandomCenterCropPad',
        ratios=None,
        border=None,
        mean=[0, 0, 0],
        std=[1, 1, 1],
        to_rgb=True,
        test_mode=True,
        test_pad_mode=['logical_or', 31],
        test_pad_add_pix=1),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'border',
                   'scale_factor', 'kitti_annos'))
]

train_dataloader = dict(
    batch_size=16,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        metainfo=dict(classes=classes),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        metainfo=dict(classes=classes),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(type='KittiMetric')
test_evaluator = val_evaluator
