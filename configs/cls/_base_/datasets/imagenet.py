# ImageNet-1k in mmpretrain's standard layout:
#   data/imagenet/train/<wnid>/*.JPEG, data/imagenet/val/<wnid>/*.JPEG
#   data/imagenet/meta/train.txt, data/imagenet/meta/val.txt
# ("<relative path> <class index>" per line). 8 GPUs x 32 = 256 per step.
# Training: Inception crop to 224 and flip; test: short edge 256, centre 224.
dataset_type = 'ImageListDataset'
data_root = 'data/imagenet'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomAreaCrop', size=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackClsInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortEdge', size=256),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackClsInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=5,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='meta/train.txt', data_prefix='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=32,
    num_workers=5,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='meta/val.txt', data_prefix='val', test_mode=True,
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='TopKAccuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
