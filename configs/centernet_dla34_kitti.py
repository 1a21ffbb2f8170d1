# Baseline: CenterNet DLA-34 on KITTI 2D (Car, Pedestrian, Cyclist),
# evaluated with the official KITTI easy/moderate/hard AP.
_base_ = [
    './_base_/models/centernet_dla34.py',
    './_base_/datasets/kitti_det.py',
    './_base_/schedules/adam_250e.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmprune'], allow_failed_imports=False)
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=3))
