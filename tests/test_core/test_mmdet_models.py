"""Discovery, masks and cost on real mmdet detectors (tiny configs, 64x64)."""

import pytest
import torch

from mmprune.core import CostModel, discover_groups, install_masks

from .nets import count_macs, randomise, slice_model

pytest.importorskip('mmdet')


def forward_fn(model, x):
    return model._forward(x)


def build(cfg):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    return MODELS.build(cfg)


RETINANET = dict(
    type='RetinaNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1]
    ),
    backbone=dict(
        type='ResNet',
        depth=18,
        num_stages=4,
        out_indices=(1, 2, 3),
        norm_cfg=dict(type='BN'),
        style='pytorch',
    ),
    neck=dict(
        type='FPN',
        in_channels=[128, 256, 512],
        out_channels=32,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5,
    ),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=3,
        in_channels=32,
        stacked_convs=2,
        feat_channels=32,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128],
        ),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True),
        loss_bbox=dict(type='L1Loss'),
    ),
)

CENTERNET_DCN = dict(
    type='CenterNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1]
    ),
    backbone=dict(type='ResNet', depth=18, norm_cfg=dict(type='BN')),
    neck=dict(
        type='CTResNetNeck',
        in_channels=512,
        num_deconv_filters=(32, 16, 8),
        num_deconv_kernels=(4, 4, 4),
        use_dcn=True,
    ),
    bbox_head=dict(
        type='CenterNetHead',
        num_classes=3,
        in_channels=8,
        feat_channels=8,
        loss_center_heatmap=dict(type='GaussianFocalLoss'),
        loss_wh=dict(type='L1Loss'),
        loss_offset=dict(type='L1Loss'),
    ),
    test_cfg=dict(topk=10, local_maximum_kernel=3, max_per_img=10),
)


def flat(out):
    return torch.cat([t.flatten() for level in out for t in level])


@pytest.mark.parametrize(
    'cfg,n_groups,kept',
    [
        (RETINANET, 18, ['bbox_head.retina_cls', 'bbox_head.retina_reg']),
        (
            CENTERNET_DCN,
            21,
            [
                'bbox_head.heatmap_head.2',
                'bbox_head.wh_head.2',
                'bbox_head.offset_head.2',
            ],
        ),
    ],
    ids=['retinanet_r18_fpn', 'centernet_r18_dcn'],
)
def test_real_detector(cfg, n_groups, kept):
    model = randomise(build(cfg), weights=False)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    plan = discover_groups(model, x, forward_fn)
    print(
        f'\n{cfg["type"]}: {len(plan.groups)} groups, '
        f'{sum(g.size for g in plan.groups.values())} channels, '
        f'unsupported={plan.unsupported}'
    )
    assert len(plan.groups) == n_groups
    assert plan.unsupported == []
    assert [n for n, _ in plan.kept] == kept  # final prediction convs only
    cm = CostModel(plan)
    assert count_macs(model, x, forward_fn) == cm.dense_macs

    ref = flat(forward_fn(model, x))
    ms = install_masks(model, plan)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in plan.groups:
            ms.mask(name).mask.copy_(
                torch.rand(ms.mask(name).mask.shape, generator=g)
            )
    b = {k: v.detach() for k, v in ms.binaries().items()}
    masked = flat(forward_fn(model, x))
    psi = cm.psi(b).item()
    assert 0.05 < psi < 0.6
    ms.remove()
    sliced = slice_model(model, plan, b)
    assert torch.allclose(
        masked, flat(forward_fn(sliced, x)), atol=1e-4, rtol=1e-4
    )
    assert not torch.allclose(masked, ref, atol=1e-3)
    assert count_macs(sliced, x, forward_fn) == round(cm.macs(b).item())
