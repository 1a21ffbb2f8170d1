"""BorderPad, and test pipelines that frame images as training does."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmdet.registry import TRANSFORMS
from mmengine.config import Config

import mmprune  # noqa: F401  (registers BorderPad)
from mmprune.datasets import make_synthetic_kitti
from mmprune.datasets.transforms import BorderPad

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: Training's random transforms, left out to compare the deterministic frame.
RANDOM = {'RandomAffine', 'RandomFlip', 'PhotoMetricDistortion'}


def test_border_pad_pads_bottom_right_and_records_the_image_box():
    img = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3) + 1
    out = BorderPad(size=(8, 4), pad_val=dict(img=0))(dict(img=img.copy()))
    assert out['img'].shape == (4, 8, 3)
    assert np.array_equal(out['img'][:3, :5], img)
    assert not out['img'][3:].any() and not out['img'][:, 5:].any()
    # [top, bottom, left, right] of the image in the canvas, as
    # RandomCenterCropPad writes it for CenterNetHead.
    assert out['border'].tolist() == [0, 3, 0, 5]
    assert out['border'].dtype == np.float32


@pytest.mark.parametrize('config,shape', [
    ('configs/centernet_dla34_kitti.py', (96, 320)),
    ('configs/demo/centernet_dla34_kitti_demo.py', (128, 416)),
])
def test_test_pipeline_frames_the_image_as_training(config, shape,
                                                    tmp_path):
    # The regression: a centre-padded test image sat 16 px right of and
    # below where every training image sits, and the demo lost up to 84
    # points of Car AP40 (README).
    root = str(tmp_path / 'kitti')
    make_synthetic_kitti(root, num_images=1, img_size=shape, seed=0)
    cfg = Config.fromfile(osp.join(ROOT, config))
    path = osp.join(root, 'training', 'image_2', '000000.png')
    label = osp.join(root, 'training', 'label_2', '000000.txt')

    def run(pipeline):
        steps = [t for t in pipeline if t['type'] not in RANDOM]
        # Only the image matters here: no boxes are loaded.
        steps = [t for t in steps if t['type'] != 'LoadAnnotations']
        pack = steps[-1]
        pack['meta_keys'] = ('img_shape', 'scale_factor')
        info = dict(img_path=path, img_id=0, label_path=label,
                    instances=[])
        return Compose([TRANSFORMS.build(t) for t in steps])(info)[
            'inputs'].float()

    train = run(cfg.train_dataloader.dataset.pipeline)
    test = run(cfg.test_dataloader.dataset.pipeline)
    assert train.shape == test.shape
    # The same pixels at the same place (test loads float32, train uint8).
    assert torch.allclose(train, test, atol=1.0)
