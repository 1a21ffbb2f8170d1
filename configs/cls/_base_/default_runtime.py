# mmdet's runtime (the classifier path lives in mmdet's scope: see
# mmprune/datasets/classification.py for why not mmpretrain).
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['mmprune'], allow_failed_imports=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3))
