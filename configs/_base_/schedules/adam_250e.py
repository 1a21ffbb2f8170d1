# The seed's CenterNet KITTI schedule: Adam, 250 epochs, lr steps at 60/90/120.
# Change the decay with param_scheduler.0.gamma (e.g. --cfg-options
# param_scheduler.0.gamma=0.5).
max_epochs = 250
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1.25e-4, weight_decay=0.0),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[60, 90, 120],
        gamma=0.1)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=16)
