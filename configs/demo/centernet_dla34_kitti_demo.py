# CPU-sized demo of the flagship: the same model, data pipeline and metric
# as ../centernet_dla34_kitti.py, on the synthetic KITTI data at 128 x 416
# with a schedule of a few minutes on 2 cores.
_base_ = ['../centernet_dla34_kitti.py']

data_root = 'data/kitti_synth/'
input_size = (416, 128)
max_epochs = 12

# A train step on a batch of 8 takes 1.7 s with plain 3x3 convs in the neck,
# 4.0 s with DCNv2Torch and 21.9 s with mmcv's CPU DCN kernel, so the CPU
# demo uses the neck's plain-conv form. The flagship configs keep DCNv2.
model = dict(neck=dict(use_dcn=False))

# Seeded; short runs still vary a lot with the seed and the thread count
# (README, "The two commands").
randomness = dict(seed=0)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=input_size, keep_ratio=True),
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
# The base's test pipeline, at this input size (the frame the demo trains in).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=input_size, keep_ratio=True),
    dict(type='BorderPad', size=input_size, pad_val=dict(img=(0, 0, 0))),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'border',
                   'scale_factor', 'kitti_annos'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=40),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[10], gamma=0.1)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
