# CIFAR-10, python version: data/cifar10/cifar-10-batches-py/data_batch_1..5
# and test_batch (the archive cifar-10-python.tar.gz unpacked). Batch 128 on
# one GPU, as in He et al.
dataset_type = 'Cifar10Dataset'
data_root = 'data/cifar10'
train_pipeline = [
    dict(type='RandomPadCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackClsInputs'),
]
test_pipeline = [dict(type='PackClsInputs')]
train_dataloader = dict(
    batch_size=128,
    num_workers=4,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=256,
    num_workers=4,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='test',
                 test_mode=True, pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='TopKAccuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
