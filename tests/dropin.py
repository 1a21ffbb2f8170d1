"""Shared test helpers: a tiny COCO dataset and mmdet's shipped configs, shrunk.

The drop-in tests take configs exactly as mmdet ships them (inside the wheel,
``mmdet/.mim/configs``), add mmprune's pruning snippet and train a few
iterations on a generated dataset. Only what the machine needs changes:
data, input size, batch size and schedule; the model, the optimizer and the
detector's own hooks stay as shipped.
"""
import json
import os
import os.path as osp
import shutil

import cv2
import mmdet
import numpy as np
from mmengine.config import Config


def empty_dir(path) -> None:
    """Delete what ``path`` holds and keep the directory itself.

    The directory stays so that pytest never hands its numbered name to a
    later test: names derived from it (visualizer and logger instances,
    which mmengine keeps per process) must stay unique.
    """
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)


MMDET_CONFIGS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: name -> config file, as shipped by mmdet 3.3 (and ours for DLA-34).
DETECTORS = {
    'retinanet_r50_fpn': 'retinanet/retinanet_r50_fpn_1x_coco.py',
    'faster_rcnn_r50_fpn': 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'fcos_r50': 'fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
    'yolox_s': 'yolox/yolox_s_8xb8-300e_coco.py',
    'centernet_r18_dcnv2': 'centernet/centernet_r18-dcnv2_8xb16-crop512-140e_coco.py',
    'centernet_dla34': osp.join(ROOT, 'configs', 'centernet_dla34_kitti.py'),
    # RoI-head cost checks (not in the drop-in pruning runs).
    'mask_rcnn_r50_fpn': 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'cascade_rcnn_r50_fpn': 'cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py',
}

#: More families for the breadth test (test_breadth.py): trained with the
#: snippet, exported, compared. Each brings a structure the six above lack.
FAMILIES = {
    'retinanet_regnetx_800mf': 'regnet/retinanet_regnetx-800MF_fpn_1x_coco.py',
    'faster_rcnn_x101_32x4d':
    'faster_rcnn/faster-rcnn_x101-32x4d_fpn_1x_coco.py',
    'atss_r50': 'atss/atss_r50_fpn_1x_coco.py',
    'tood_r50': 'tood/tood_r50_fpn_1x_coco.py',
    'gfl_r50': 'gfl/gfl_r50_fpn_1x_coco.py',
    'fcos_hrnetv2p_w18': 'hrnet/fcos_hrnetv2p-w18-gn-head_4xb4-1x_coco.py',
    'detr_r50': 'detr/detr_r50_8xb2-150e_coco.py',
    'solov2_r50': 'solov2/solov2_r50_fpn_1x_coco.py',
    'ssdlite_mbv2': 'ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py',
}

# The documented snippet, as a test applies it to a loaded config.
SNIPPET_HOOK = dict(type='InTrainPruningHook', psi_target=0.5, b='auto',
                    prune_start=2, prune_end=36, by_epoch=False)


def add_pruning(cfg, **hook_overrides):
    """Apply the README's snippet (keeping every optim_wrapper key)."""
    cfg.custom_imports = dict(imports=['mmprune'], allow_failed_imports=False)
    amp = cfg.optim_wrapper.get('type') == 'AmpOptimWrapper'
    cfg.optim_wrapper.type = 'PruneAmpOptimWrapper' if amp else \
        'PruneOptimWrapper'
    hook = dict(SNIPPET_HOOK, **hook_overrides)
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [hook]
    return cfg


def make_tiny_coco(root, num_images=4, size=64, classes=('car', 'person'),
                   seed=0):
    """Write a COCO-format dataset of coloured boxes; returns the ann file.

    Images are ``size`` x ``size`` PNGs under ``root/images``; each holds 1-3
    filled rectangles, one annotation each (box and its polygon mask).
    """
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    images, anns = [], []
    for i in range(num_images):
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            w, h = rng.integers(size // 5, size // 2, 2)
            x, y = rng.integers(0, size - w), rng.integers(0, size - h)
            colour = [int(c) for c in rng.integers(120, 255, 3)]
            cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)),
                          colour, -1)
            x0, y0, x1, y1 = float(x), float(y), float(x + w), float(y + h)
            anns.append(dict(id=len(anns) + 1, image_id=i + 1,
                             category_id=int(rng.integers(1, 3)),
                             bbox=[x0, y0, float(w), float(h)],
                             segmentation=[[x0, y0, x1, y0, x1, y1, x0, y1]],
                             area=float(w * h), iscrowd=0))
        name = f'{i:04d}.png'
        cv2.imwrite(osp.join(root, 'images', name), img)
        images.append(dict(id=i + 1, file_name=name, width=size,
                           height=size))
    cats = [dict(id=i + 1, name=n) for i, n in enumerate(classes)]
    ann_file = osp.join(root, 'ann.json')
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)
    return ann_file


def tiny_config(name, data_root, work_dir, size=64, max_iters=4):
    """mmdet's shipped config ``name``, with tiny data and an iter schedule."""
    path = DETECTORS[name] if name in DETECTORS else FAMILIES[name]
    if not osp.isabs(path):
        path = osp.join(MMDET_CONFIGS, path)
    cfg = Config.fromfile(path)
    classes = ('car', 'person')
    model = cfg.model
    # Heads are built for the tiny dataset's classes; nothing else changes.
    for key in ('bbox_head', 'roi_head'):
        head = model.get(key)
        if head is None:
            continue
        if key == 'roi_head':
            boxes = head.bbox_head
            for b in (boxes if isinstance(boxes, list) else [boxes]):
                b.num_classes = len(classes)
            if head.get('mask_head') is not None:
                head.mask_head.num_classes = len(classes)
        else:
            head.num_classes = len(classes)
    masks = model.get('mask_head') is not None or (
        model.get('roi_head') or {}).get('mask_head') is not None
    if model.get('mask_head') is not None:  # SOLO family
        model.mask_head.num_classes = len(classes)
    # Two-stage: exactly 40 proposals per image (no NMS suppression), so
    # the RoI budget (test_cfg.rpn.max_per_img) is what really runs, in the
    # trace and in every independent count.
    rpn = (model.get('test_cfg') or {}).get('rpn')
    if rpn is not None:
        rpn.nms_pre, rpn.max_per_img = 40, 40
        rpn.nms = dict(type='nms', iou_threshold=1.0)
    # Training samples 512 RoIs from up to 2000 proposals per image per
    # stage, which on 64 px images is most of a step's time. 64 RoIs from
    # 100 proposals train the same layers; every MACs count is of the
    # test-time budget above, which this leaves alone.
    train_cfg = model.get('train_cfg') or {}
    if train_cfg.get('rpn_proposal') is not None:
        train_cfg.rpn_proposal.max_per_img = 100
    rcnn_train = train_cfg.get('rcnn') or []
    for stage in (rcnn_train if isinstance(rcnn_train, list)
                  else [rcnn_train]):
        if 'num' in stage.get('sampler', {}):
            stage.sampler.num = 64
    # Pretrained backbones would need a download; train from scratch.
    model.backbone.init_cfg = None
    if model.get('data_preprocessor', {}).get('batch_augments'):
        model.data_preprocessor.batch_augments = None
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=masks),
        dict(type='Resize', scale=(size, size), keep_ratio=True),
        dict(type='PackDetInputs')
    ]
    dataset = dict(type='CocoDataset', data_root=data_root,
                   ann_file='ann.json', data_prefix=dict(img='images/'),
                   metainfo=dict(classes=classes), pipeline=pipeline,
                   filter_cfg=dict(filter_empty_gt=True))
    # An iteration loop over a DefaultSampler restarts the dataloader at
    # the end of every pass, and mmengine sleeps 2 s at each restart: with
    # 4 images at batch 2 that was half of a 38-iteration test. The
    # InfiniteSampler yields the same batches without restarts. A test that
    # switches to an epoch loop must switch back to DefaultSampler.
    cfg.train_dataloader = dict(
        batch_size=2, num_workers=0, persistent_workers=False,
        sampler=dict(type='InfiniteSampler', shuffle=False),
        dataset=dataset)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                         val_interval=max_iters + 1)
    for key in ('val_dataloader', 'test_dataloader', 'val_cfg', 'test_cfg',
                'val_evaluator', 'test_evaluator'):
        cfg[key] = None
    cfg.param_scheduler = []
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=max_iters, by_epoch=False)
    cfg.default_hooks.pop('visualization', None)
    cfg.log_processor = dict(by_epoch=False)
    # Detector-specific hooks that assume an epoch loop or many GPUs.
    cfg.custom_hooks = [
        h for h in cfg.get('custom_hooks', [])
        if h['type'] not in ('YOLOXModeSwitchHook', 'SyncNormHook')
    ]
    cfg.work_dir = work_dir
    # mmdet names its visualizer 'visualizer'; mmengine keeps one instance
    # per name and process, so in-process runs would share the first run's
    # vis_data folder.
    cfg.visualizer.name = f'visualizer_{work_dir}'
    cfg.randomness = dict(seed=0)
    cfg.env_cfg = dict(cudnn_benchmark=False,
                       dist_cfg=dict(backend='gloo'))
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=16)
    cfg.launcher = 'none'
    return cfg
