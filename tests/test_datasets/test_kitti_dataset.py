"""KittiDataset and the KITTI label reader: parsing, splits and bad input."""
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from mmprune.datasets import (
    KittiDataset,
    KittiLabelError,
    make_synthetic_kitti,
    read_label_file,
)
from mmprune.datasets.kitti_io import parse_label_line

LINES = [
    'Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 '
    '46.70 -1.59',
    'Van 0.30 1 2.00 100.00 150.00 200.00 230.00 2.0 1.9 5.0 1.0 1.0 20.0 2.0',
    'Pedestrian 0.10 2 0.50 300.00 120.00 330.00 210.00 1.7 0.6 0.8 1 1 9 0.5',
    'Person_sitting 0.00 0 0.10 400 150 430 200 1.2 0.6 0.8 1 1 9 0.1',
    'Truck 0.00 0 0.10 10 10 80 60 3 2 8 1 1 30 0.1',
    'DontCare -1 -1 -10 500.00 160.00 560.00 190.00 -1 -1 -1 -1000 -1000 '
    '-1000 -10',
]


def _write_frame(root, frame, lines, size=(64, 128)):
    img_dir = osp.join(root, 'training', 'image_2')
    lbl_dir = osp.join(root, 'training', 'label_2')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lbl_dir, exist_ok=True)
    Image.new('RGB', (size[1], size[0])).save(osp.join(img_dir,
                                                       frame + '.png'))
    with open(osp.join(lbl_dir, frame + '.txt'), 'w') as f:
        f.write(''.join(ln + '\n' for ln in lines))


def _dataset(root, **kw):
    kw.setdefault('split', 'trainval')
    return KittiDataset(data_root=str(root), pipeline=[], **kw)


def test_parse_instances_ignore_and_annos(tmp_path):
    _write_frame(tmp_path, '000007', LINES)
    ds = _dataset(tmp_path, test_mode=True)
    assert len(ds) == 1
    info = ds.get_data_info(0)
    assert info['img_id'] == '000007'
    assert (info['height'], info['width']) == (64, 128)
    inst = info['instances']
    # Car, Van(ignored as Car), Pedestrian, Person_sitting (ignored as
    # Pedestrian), DontCare (ignored, label -1); Truck is not an instance.
    assert [(i['bbox_label'], i['ignore_flag']) for i in inst] == [
        (0, 0), (0, 1), (1, 0), (1, 1), (-1, 1)]
    assert inst[0]['bbox'] == pytest.approx([587.01, 173.33, 614.12, 200.12])
    assert inst[1]['truncated'] == pytest.approx(0.30)
    assert inst[2]['occluded'] == 2
    assert inst[2]['alpha'] == pytest.approx(0.5)
    annos = info['kitti_annos']
    assert list(annos['name']) == ['Car', 'Van', 'Pedestrian',
                                   'Person_sitting', 'Truck', 'DontCare']
    assert annos['bbox'].shape == (6, 4)
    assert annos['occluded'].tolist() == [0, 1, 2, 0, 0, -1]


def test_custom_classes_change_labels(tmp_path):
    _write_frame(tmp_path, '000000', LINES)
    ds = _dataset(tmp_path, test_mode=True,
                  metainfo=dict(classes=('Pedestrian', 'Car')))
    inst = ds.get_data_info(0)['instances']
    assert [(i['bbox_label'], i['ignore_flag']) for i in inst] == [
        (1, 0), (1, 1), (0, 0), (0, 1), (-1, 1)]


def test_empty_label_file_is_an_image_without_objects(tmp_path):
    _write_frame(tmp_path, '000000', [])
    _write_frame(tmp_path, '000001', LINES[:1])
    ds = _dataset(tmp_path, test_mode=True)
    assert [ds.get_data_info(i)['instances'] == [] for i in range(2)] == [
        True, False]
    # Training drops frames without a usable box when asked to.
    train = _dataset(tmp_path, filter_cfg=dict(filter_empty_gt=True))
    assert [train.get_data_info(i)['img_id'] for i in range(len(train))] \
        == ['000001']


def test_seeded_ratio_split_is_deterministic_and_disjoint(tmp_path):
    for i in range(20):
        _write_frame(tmp_path, f'{i:06d}', LINES[:1])
    ids = {}
    for split in ('train', 'val', 'trainval'):
        ds = _dataset(tmp_path, split=split, test_mode=True)
        ids[split] = [ds.get_data_info(i)['img_id'] for i in range(len(ds))]
    assert len(ids['train']) == 15 and len(ids['val']) == 5
    assert set(ids['train']).isdisjoint(ids['val'])
    assert sorted(ids['train'] + ids['val']) == ids['trainval']
    again = _dataset(tmp_path, split='train', test_mode=True)
    assert [again.get_data_info(i)['img_id'] for i in range(15)] == \
        ids['train']
    other = _dataset(tmp_path, split='train', split_seed=1, test_mode=True)
    assert [other.get_data_info(i)['img_id'] for i in range(15)] != \
        ids['train']


def test_imagesets_files_define_the_split(tmp_path):
    for i in range(4):
        _write_frame(tmp_path, f'{i:06d}', LINES[:1])
    os.makedirs(tmp_path / 'ImageSets')
    (tmp_path / 'ImageSets' / 'val.txt').write_text('000003\n000001\n')
    ds = _dataset(tmp_path, split='val', test_mode=True)
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == [
        '000003', '000001']
    (tmp_path / 'ImageSets' / 'train.txt').write_text('000000\nabc\n')
    with pytest.raises(ValueError, match=r'train.txt:2: .*abc'):
        _dataset(tmp_path, split='train', test_mode=True)


@pytest.mark.parametrize('line,match', [
    ('Car 0.0 0 0.1 1 2 3', r'lbl.txt:3: has 7 fields; expected 15'),
    ('Bus 0.0 0 0.1 1 2 3 4 1 1 1 1 1 1 0', r"lbl.txt:3: field 'type' is "
     r"'Bus'"),
    ('Car 0.0 0 0.1 1 2 x3 4 1 1 1 1 1 1 0', r"lbl.txt:3: field 'x2' is "
     r"'x3'; expected a number"),
    ('Car 0.0 5 0.1 1 2 3 4 1 1 1 1 1 1 0', r"field 'occluded' is '5'"),
    ('Car 1.5 0 0.1 1 2 3 4 1 1 1 1 1 1 0', r"field 'truncated' is '1.5'"),
    ('Car 0.0 0 0.1 9 2 3 4 1 1 1 1 1 1 0', r"field 'bbox'.*x1 <= x2"),
    ('Car 0.0 0 nan 1 2 3 4 1 1 1 1 1 1 0', r"field 'alpha'.*finite"),
])
def test_malformed_label_line_names_file_line_and_field(line, match):
    with pytest.raises(KittiLabelError, match=match):
        parse_label_line(line, 'lbl.txt', 3)


def test_malformed_file_reports_its_own_line(tmp_path):
    _write_frame(tmp_path, '000000', [LINES[0], '', 'Car 0 0 0 1 2 3'])
    path = str(tmp_path / 'training' / 'label_2' / '000000.txt')
    with pytest.raises(KittiLabelError, match=r'000000.txt:3: has 7 fields'):
        read_label_file(path)
    with pytest.raises(KittiLabelError, match=r'000000.txt:3'):
        _dataset(tmp_path, test_mode=True)


def test_missing_image_and_missing_folder_are_clear(tmp_path):
    _write_frame(tmp_path, '000000', LINES[:1])
    os.remove(tmp_path / 'training' / 'image_2' / '000000.png')
    with pytest.raises(FileNotFoundError, match=r'image .*000000.png'):
        _dataset(tmp_path, test_mode=True)
    with pytest.raises(FileNotFoundError, match=r'label folder .* does not '
                       r'exist'):
        _dataset(tmp_path / 'nowhere', test_mode=True)
    with pytest.raises(ValueError, match=r"split='test'"):
        _dataset(tmp_path, split='test')


def test_synthetic_generator_writes_valid_deterministic_kitti(tmp_path):
    ids = make_synthetic_kitti(str(tmp_path / 'a'), num_images=12,
                               img_size=(64, 208), seed=3)
    make_synthetic_kitti(str(tmp_path / 'b'), num_images=12,
                         img_size=(64, 208), seed=3)
    assert ids == [f'{i:06d}' for i in range(12)]
    names, truncs, occs = [], [], []
    for frame in ids:
        a = (tmp_path / 'a' / 'training' / 'label_2' / f'{frame}.txt')
        b = (tmp_path / 'b' / 'training' / 'label_2' / f'{frame}.txt')
        assert a.read_text() == b.read_text()
        objs = read_label_file(str(a))
        for o in objs:
            x1, y1, x2, y2 = o.bbox
            assert 0 <= x1 < x2 <= 207 and 0 <= y1 < y2 <= 63
        names += [o.type for o in objs]
        truncs += [o.truncated for o in objs if o.type != 'DontCare']
        occs += [o.occluded for o in objs if o.type != 'DontCare']
        img = np.asarray(Image.open(tmp_path / 'a' / 'training' / 'image_2'
                                    / f'{frame}.png'))
        assert img.shape == (64, 208, 3)
    # Every evaluated class, real truncation and occlusion, and DontCare.
    assert {'Car', 'Pedestrian', 'Cyclist', 'DontCare'} <= set(names)
    assert max(truncs) > 0.1 and min(truncs) == 0.0
    assert {0, 1, 2} <= set(occs) or {0, 2} <= set(occs)
