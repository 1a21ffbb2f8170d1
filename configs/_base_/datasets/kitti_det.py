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
# Test in the frame the network trained in: resized to input_size, padded at
# the bottom / right. BorderPad (mmprune) is mmdet's Pad plus the `border`
# meta that CenterNetHead subtracts; boxes go back to the original image via
# scale_factor. mmdet's centre pad (RandomCenterCropPad, test mode) belongs
# to its own centre-crop training; after this Resize / RandomAffine / Pad
# training it cost the demo up to 84 points of Car AP40 (README).
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=input_size, keep_ratio=True),
    dict(type='BorderPad', size=input_size, pad_val=dict(img=(0, 0, 0))),
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
        # A bad image or label file stops the run naming it; True skips
        # such files with a counted warning instead (training only).
        skip_bad_samples=False,
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
