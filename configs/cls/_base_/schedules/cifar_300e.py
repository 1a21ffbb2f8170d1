# The seed's CIFAR-10 schedule (S.1): 300 epochs, SGD lr 0.1, x0.1 every 80
# epochs (80, 160, 240); momentum 0.9 and weight decay 1e-4 as in He et al.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(type='MultiStepLR', by_epoch=True,
                       milestones=[80, 160, 240], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=10)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=128)
