"""Bad samples: a truncated or corrupt PNG and a bad label line each name
the file; ``skip_bad_samples=True`` skips them with a counted warning."""
import os.path as osp

import pytest
from mmdet.utils import register_all_modules
from mmengine.logging import MMLogger

from mmprune.datasets import BadSampleError, KittiDataset, make_synthetic_kitti
from mmprune.datasets.classification import ImageListDataset

PIPELINE = [dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='PackDetInputs')]


@pytest.fixture(autouse=True, scope='module')
def _mmdet_scope():
    register_all_modules()  # the pipelines name mmdet's transforms


def _png(root, frame):
    return osp.join(root, 'training', 'image_2', f'{frame}.png')


def _label(root, frame):
    return osp.join(root, 'training', 'label_2', f'{frame}.txt')


@pytest.fixture()
def root(tmp_path):
    root = str(tmp_path / 'kitti')
    make_synthetic_kitti(root, num_images=6, img_size=(48, 96), seed=0)
    return root


def _truncate(path):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])  # header intact, pixel data cut


def _dataset(root, **kw):
    return KittiDataset(data_root=root, split='trainval', pipeline=PIPELINE,
                        filter_cfg=None, **kw)


def _log(tmp_path, name):
    path = str(tmp_path / f'{name}.log')
    MMLogger.get_instance(name, log_file=path)  # becomes 'current'
    return path


def test_bad_label_line_names_file_and_line(root):
    with open(_label(root, '000002'), 'a') as f:
        f.write('Car 0.0 0 0.1 10 10 oops 40 1 1 1 1 1 1 0.1\n')
    with pytest.raises(BadSampleError, match=r'000002\.txt:\d+: field '
                       r"'x2' is 'oops'.*skip_bad_samples=True"):
        _dataset(root)


def test_corrupt_png_is_named_at_load(root):
    with open(_png(root, '000004'), 'wb') as f:
        f.write(b'not a png at all' * 8)
    with pytest.raises(BadSampleError, match=r'000004\.png is not a readable'):
        _dataset(root)


def test_truncated_png_is_named_in_the_pipeline(root):
    _truncate(_png(root, '000003'))
    ds = _dataset(root)  # the header still reads: the frame is listed
    assert len(ds) == 6
    ds[2]  # a good frame loads
    with pytest.raises(BadSampleError, match=r'000003\.png is not a '
                       r'decodable image .*truncated'):
        ds[3]


def test_skip_bad_samples_skips_counts_and_logs(root, tmp_path):
    log = _log(tmp_path, 'skip_train')
    with open(_label(root, '000001'), 'a') as f:
        f.write('Car 0.0 0\n')
    _truncate(_png(root, '000005'))
    ds = _dataset(root, skip_bad_samples=True)
    ids = [ds.get_data_info(i)['img_id'] for i in range(len(ds))]
    assert ids == ['000000', '000002', '000003', '000004', '000005']
    assert ds.num_skipped == 1
    # Index 4 is frame 000005: skipped, and another frame comes instead.
    out = ds[4]
    assert ds.num_skipped >= 2  # the redraw may hit 000005 again
    assert osp.basename(out['data_samples'].img_path) != '000005.png'
    with open(log) as f:
        text = f.read()
    assert '000001.txt has a bad line' in text
    assert '1 bad sample(s) skipped so far' in text
    assert '000005.png is not a decodable image' in text
    assert '2 bad sample(s) skipped so far' in text


def test_skip_never_hides_a_pipeline_bug(root):
    """The file decodes, so a failing transform raises its own error."""
    pipeline = PIPELINE[:2] + [dict(type='Resize', scale='not a scale'),
                               PIPELINE[2]]
    ds = KittiDataset(data_root=root, split='trainval', pipeline=pipeline,
                      filter_cfg=None, skip_bad_samples=True)
    with pytest.raises(Exception) as err:
        ds[0]
    assert not isinstance(err.value, BadSampleError)
    assert ds.num_skipped == 0


def test_skip_does_not_apply_at_test_time(root):
    _truncate(_png(root, '000000'))
    ds = _dataset(root, skip_bad_samples=True, test_mode=True)
    with pytest.raises(BadSampleError, match='applies to training only'):
        ds[0]


def test_image_list_bad_line_and_truncated_image(tmp_path):
    import cv2
    import numpy as np
    img = (np.arange(16 * 16 * 3) % 255).astype('uint8').reshape(16, 16, 3)
    for name in ('a', 'b'):
        cv2.imwrite(str(tmp_path / f'{name}.png'), img)
    _truncate(str(tmp_path / 'b.png'))
    ann = tmp_path / 'list.txt'
    ann.write_text('a.png 0\nb.png 1\nc.png x\n')
    with pytest.raises(BadSampleError, match=r'list.txt:3: expected'):
        ImageListDataset(ann_file=str(ann), data_root=str(tmp_path))
    ds = ImageListDataset(ann_file=str(ann), data_root=str(tmp_path),
                          skip_bad_samples=True,
                          pipeline=[dict(type='LoadImageFromFile')])
    assert len(ds) == 2 and ds.num_skipped == 1
    assert ds[1]['img_path'].endswith('a.png')  # b.png skipped
    assert ds.num_skipped >= 2  # the redraw may hit b.png again
