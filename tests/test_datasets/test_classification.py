"""Classification datasets and transforms: the packaged digits and their
fixed stratified split, CIFAR-10's and ImageNet's layouts, the packing."""
import os.path as osp
import pickle

import numpy as np
import pytest
import torch

from mmprune.datasets import (
    Cifar10Dataset,
    DigitsDataset,
    ImageListDataset,
    digits_split,
)
from mmprune.datasets.transforms import PackClsInputs, RandomPadCrop


def test_mnist5k_split_is_stratified_and_fixed():
    train = DigitsDataset(source='mnist5k', split='train')
    test = DigitsDataset(source='mnist5k', split='test')
    assert (len(train), len(test)) == (4000, 1000)
    ids_train = {train.get_data_info(i)['source_idx']
                 for i in range(len(train))}
    ids_test = {test.get_data_info(i)['source_idx'] for i in range(len(test))}
    assert not ids_train & ids_test
    assert len(ids_train | ids_test) == 5000
    labels = np.array([test.get_data_info(i)['gt_label']
                       for i in range(len(test))])
    assert np.bincount(labels).tolist() == [100] * 10
    img = train.get_data_info(0)['img']
    assert img.shape == (28, 28, 1) and img.dtype == np.uint8
    assert img.max() > 200  # strokes are near white: 0..255 grey
    again = DigitsDataset(source='mnist5k', split='test')
    assert [again.get_data_info(i)['source_idx'] for i in range(5)] == \
        [test.get_data_info(i)['source_idx'] for i in range(5)]


def test_sklearn_digits_source():
    ds = DigitsDataset(source='sklearn8x8', split='test',
                       pipeline=[PackClsInputs()])
    labels = np.array([ds.get_data_info(i)['gt_label']
                       for i in range(len(ds))])
    # 1,797 images, 174..183 per class: 35..37 per class in the test split.
    assert 350 <= len(ds) <= 370
    assert all(35 <= c <= 37 for c in np.bincount(labels, minlength=10))
    item = ds[0]
    assert tuple(item['inputs'].shape) == (1, 8, 8)
    assert item['data_samples'].gt_label.tolist() == [labels[0]]
    assert item['data_samples'].img_shape == (8, 8)


def test_split_counts_by_hand():
    labels = np.array([0] * 10 + [1] * 5)
    train, test = digits_split(labels, 0.2, seed=3)
    assert len(test) == 2 + 1 and len(train) == 8 + 4
    assert sorted(labels[test].tolist()) == [0, 0, 1]


@pytest.mark.parametrize('kwargs, key', [
    (dict(source='cifar'), 'source'), (dict(split='val'), 'split'),
    (dict(test_fraction=1.0), 'test_fraction')])
def test_bad_digits_arguments(kwargs, key):
    with pytest.raises(ValueError, match=f'DigitsDataset.{key}'):
        DigitsDataset(**kwargs)


def test_cifar10_layout(tmp_path):
    d = tmp_path / 'cifar-10-batches-py'
    d.mkdir()
    img = np.zeros((32, 32, 3), np.uint8)
    img[0, 1] = (10, 20, 30)  # one RGB pixel at row 0, column 1
    row = img.transpose(2, 0, 1).reshape(-1)  # CIFAR rows: R plane, G, B
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        with open(d / name, 'wb') as f:
            pickle.dump({'data': row[None], 'labels': [7]}, f)
    ds = Cifar10Dataset(split='train', data_root=str(tmp_path))
    assert len(ds) == 5
    item = ds.get_data_info(0)
    assert item['gt_label'] == 7
    assert item['img'][0, 1].tolist() == [10, 20, 30]
    with pytest.raises(FileNotFoundError, match='cifar-10-batches-py'):
        Cifar10Dataset(split='test', data_root=str(tmp_path / 'none'))


def test_image_list_bad_line_names_file_and_line(tmp_path):
    ann = tmp_path / 'train.txt'
    ann.write_text('a/1.JPEG 3\nb/2.JPEG three\n')
    with pytest.raises(ValueError, match=r'train.txt:2: expected'):
        ImageListDataset(ann_file=str(ann), data_root=str(tmp_path))
    ann.write_text('a/1.JPEG 3\n')
    ds = ImageListDataset(ann_file=str(ann), data_root=str(tmp_path),
                          data_prefix='train')
    assert ds.get_data_info(0)['img_path'] == osp.join(str(tmp_path),
                                                       'train', 'a/1.JPEG')


def test_pad_crop_and_pack():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    out = RandomPadCrop(crop_size=4, padding=1).transform(dict(img=img))
    assert out['img'].shape == (4, 4, 1)
    packed = PackClsInputs().transform(dict(out, gt_label=3))
    assert packed['inputs'].shape == (1, 4, 4)
    assert packed['inputs'].dtype == torch.uint8
    assert packed['data_samples'].gt_label.tolist() == [3]


def test_train_per_class_keeps_the_split_stratified():
    ds = DigitsDataset(source='mnist5k', split='train', test_fraction=0.1,
                       train_per_class=300)
    labels = np.array([ds.get_data_info(i)['gt_label']
                       for i in range(len(ds))])
    assert np.bincount(labels).tolist() == [300] * 10
    test = DigitsDataset(source='mnist5k', split='test', test_fraction=0.1,
                         train_per_class=300)
    assert len(test) == 500  # the test split is unchanged
    ids = {ds.get_data_info(i)['source_idx'] for i in range(len(ds))}
    assert not ids & {test.get_data_info(i)['source_idx']
                      for i in range(len(test))}
    with pytest.raises(ValueError, match='DigitsDataset.train_per_class'):
        DigitsDataset(train_per_class=0)
