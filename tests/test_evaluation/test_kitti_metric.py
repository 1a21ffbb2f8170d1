"""Tests of KittiMetric: process + compute_metrics, file output, errors."""
import numpy as np
import pytest
import torch
from mmdet.registry import METRICS
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

import mmprune.evaluation  # noqa: F401  (registers KittiMetric)
from mmprune.evaluation.functional import kitti_eval_2d

CLASSES = ('Car', 'Pedestrian', 'Cyclist')


def annos(*objs):
    """A ``kitti_annos`` dict from (name, bbox, truncated, occluded)."""
    return dict(
        name=np.array([o[0] for o in objs], dtype='<U16'),
        truncated=np.array([o[2] for o in objs], dtype=np.float64),
        occluded=np.array([o[3] for o in objs], dtype=np.int64),
        alpha=np.full(len(objs), -10.0),
        bbox=np.array([o[1] for o in objs], dtype=np.float64).reshape(-1, 4))


def sample(img_id, preds, kitti_annos=None):
    """A packed data sample dict, as the Evaluator hands it to process()."""
    out = dict(img_id=img_id, ori_shape=(375, 1242), pred_instances=dict(
        bboxes=torch.tensor([p[0] for p in preds],
                            dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor([p[1] for p in preds], dtype=torch.float32),
        labels=torch.tensor([p[2] for p in preds], dtype=torch.int64)))
    if kitti_annos is not None:
        out['kitti_annos'] = kitti_annos
    return out


def two_images():
    """Image 000000: Car (valid everywhere), Van, DontCare, Pedestrian 30 px.
    Image 000001: Car 30 px (moderate only), no detection for it."""
    a0 = annos(('Car', [10, 10, 110, 70], 0.0, 0),
               ('Van', [200, 10, 300, 80], 0.0, 0),
               ('DontCare', [400, 10, 500, 60], -1.0, -1),
               ('Pedestrian', [600, 10, 620, 40], 0.0, 0))
    p0 = [([10, 10, 110, 70], 0.9, 0),    # Car TP
          ([200, 10, 300, 80], 0.95, 0),  # Car on the Van: ignored
          ([410, 20, 490, 50], 0.85, 0),  # inside DontCare: ignored
          ([600, 10, 620, 40], 0.6, 1),   # Pedestrian TP
          ([700, 10, 760, 70], 0.5, 2)]   # Cyclist FP
    a1 = annos(('Car', [50, 50, 120, 80], 0.0, 0))
    p1 = []
    return [sample('000000', p0, a0), sample('000001', p1, a1)]


def make_metric(**kwargs):
    metric = METRICS.build(dict(type='KittiMetric', **kwargs))
    metric.dataset_meta = dict(classes=CLASSES)
    return metric


def test_process_and_compute_metrics():
    """Car easy: n_gt = 1 (image 1's Car is 30 px), one TP at 0.9, the Van
    and DontCare boxes are not FPs: p = [1], AP11 9.0909, AP40 0.
    Car moderate: n_gt = 2, TP scores [0.9]: still p = [1], AP11 9.0909.
    Pedestrian moderate (30 px): AP11 9.0909; easy: no valid box, 0.
    Cyclist: no ground truth, 0. Values equal kitti_eval_2d on the same
    arrays; evaluate() adds the 'kitti/' prefix."""
    metric = make_metric()
    samples = two_images()
    metric.process({}, samples[:1])
    metric.process({}, samples[1:])
    res = metric.evaluate(size=2)
    assert len(res) == 4 * 3 * 2
    assert all(k.startswith('kitti/') for k in res)
    one = 100 / 11
    assert res['kitti/Car_AP11_easy'] == pytest.approx(one)
    assert res['kitti/Car_AP40_easy'] == 0.0
    assert res['kitti/Car_AP11_moderate'] == pytest.approx(one)
    assert res['kitti/Pedestrian_AP11_moderate'] == pytest.approx(one)
    assert res['kitti/Pedestrian_AP11_easy'] == 0.0
    assert res['kitti/Cyclist_AP11_hard'] == 0.0
    assert res['kitti/Overall_AP11_moderate'] == pytest.approx(2 * one / 3)

    dts = []
    for s in samples:
        p = s['pred_instances']
        dts.append(dict(name=np.array(CLASSES)[p['labels'].numpy()],
                        bbox=p['bboxes'].numpy(), score=p['scores'].numpy()))
    direct = kitti_eval_2d([s['kitti_annos'] for s in samples], dts)
    assert {f'kitti/{k}': v for k, v in direct.items()} == res


def test_det_data_sample_objects_are_accepted():
    """A DetDataSample (not yet a dict) with kitti_annos in its metainfo."""
    ds = DetDataSample(metainfo=dict(
        img_id='000007', kitti_annos=annos(('Car', [0, 0, 80, 50], 0., 0))))
    ds.pred_instances = InstanceData(
        bboxes=torch.tensor([[0., 0., 80., 50.]]), scores=torch.tensor([.7]),
        labels=torch.tensor([0]))
    metric = make_metric(classes=['Car'])
    metric.process({}, [ds])
    res = metric.compute_metrics(metric.results)
    assert set(res) == {f'{c}_AP{k}_{d}' for c in ('Car', 'Overall')
                        for k in (11, 40)
                        for d in ('easy', 'moderate', 'hard')}
    assert res['Car_AP11_easy'] == pytest.approx(100 / 11)


def test_default_classes_are_the_kitti_ones_of_the_dataset():
    """Dataset classes (Car, Van): only Car is a KITTI class."""
    metric = METRICS.build(dict(type='KittiMetric'))
    metric.dataset_meta = dict(classes=('Car', 'Van'))
    metric.process({}, [sample('000000', [([0, 0, 80, 50], 0.5, 1)],
                               annos(('Van', [0, 0, 80, 50], 0., 0)))])
    res = metric.compute_metrics(metric.results)
    assert {k.split('_')[0] for k in res} == {'Car', 'Overall'}


def test_format_only_writes_one_file_per_image(tmp_path):
    """16-column lines, Car/Pedestrian/Cyclist names from the labels, an
    empty file for the image without detections, and no metrics."""
    out = tmp_path / 'results'
    metric = make_metric(format_only=True, outfile_prefix=str(out))
    metric.process({}, two_images())
    assert metric.compute_metrics(metric.results) == {}
    assert sorted(p.name for p in out.iterdir()) == ['000000.txt',
                                                      '000001.txt']
    lines = (out / '000000.txt').read_text().splitlines()
    assert len(lines) == 5
    assert all(len(line.split()) == 16 for line in lines)
    assert lines[0].split() == ['Car', '-1', '-1', '-10', '10.00', '10.00',
                                '110.00', '70.00', '-1', '-1', '-1', '-1000',
                                '-1000', '-1000', '-10', '0.900000']
    assert [line.split()[0] for line in lines] == [
        'Car', 'Car', 'Car', 'Pedestrian', 'Cyclist']
    assert (out / '000001.txt').read_text() == ''


def test_format_only_needs_no_labels(tmp_path):
    metric = make_metric(format_only=True, outfile_prefix=str(tmp_path))
    metric.process({}, [sample(12, [([1, 2, 3, 4], 0.5, 2)])])
    metric.compute_metrics(metric.results)
    assert (tmp_path / '000012.txt').read_text().startswith('Cyclist -1 -1')


def test_missing_kitti_annos_is_a_clear_error():
    metric = make_metric()
    with pytest.raises(KeyError, match="meta_keys=.*'kitti_annos'"):
        metric.process({}, [sample('000000', [([0, 0, 1, 1], 0.5, 0)])])


def test_bad_configuration_and_inputs():
    with pytest.raises(ValueError,
                       match="KittiMetric: class 'Tram' has no IoU"):
        METRICS.build(dict(type='KittiMetric', classes=['Tram']))
    with pytest.raises(ValueError, match='needs outfile_prefix'):
        METRICS.build(dict(type='KittiMetric', format_only=True))
    metric = make_metric()
    with pytest.raises(ValueError, match='expected indices into'):
        metric.process({}, [sample('000000', [([0, 0, 1, 1], 0.5, 3)],
                                   annos())])
    metric = make_metric(classes=['Tram'], iou_thresholds={'Tram': 0.5})
    metric.process({}, [sample('000000', [], annos())])
    with pytest.raises(ValueError, match='not in the dataset classes'):
        metric.compute_metrics(metric.results)


def test_kitti_dataset_meta_reaches_the_metric(tmp_path):
    """End to end with KittiDataset: PackDetInputs keeps kitti_annos, and
    predictions equal to the (non-ignored) ground truth give the same AP as
    kitti_eval_2d on the label files themselves."""
    from mmdet.datasets.transforms import LoadAnnotations, PackDetInputs

    from mmprune.datasets.kitti import KittiDataset
    from mmprune.datasets.kitti_io import objects_to_annos, read_label_file
    from mmprune.datasets.synthetic_kitti import make_synthetic_kitti

    ids = make_synthetic_kitti(str(tmp_path), num_images=6)
    ds = KittiDataset(
        data_root=str(tmp_path), split='trainval', test_mode=True,
        pipeline=[LoadAnnotations(with_bbox=True),
                  PackDetInputs(meta_keys=('img_id', 'ori_shape',
                                           'kitti_annos'))])
    metric = make_metric()
    metric.dataset_meta = ds.metainfo
    gts, dts = [], []
    for i in range(len(ds)):
        ds_sample = ds[i]['data_samples']
        pred = ds_sample.gt_instances.clone()
        pred.scores = torch.linspace(0.9, 0.1, len(pred))
        ds_sample.pred_instances = pred
        metric.process({}, [ds_sample.to_dict()])
        frame = ds_sample.img_id
        gts.append(objects_to_annos(read_label_file(
            str(tmp_path / 'training' / 'label_2' / f'{frame}.txt'))))
        dts.append(dict(name=np.array(CLASSES)[pred.labels.numpy()],
                        bbox=pred.bboxes.numpy(),
                        score=pred.scores.numpy()))
    assert sorted(r['img_id'] for r in metric.results) == sorted(ids)
    res = metric.compute_metrics(metric.results)
    assert res == kitti_eval_2d(gts, dts)
    assert res['Car_AP40_moderate'] > 0


def test_capped_ap_is_logged_with_the_level_and_count():
    """Two images hold 2 valid Cars (moderate), 1 Pedestrian and no
    Cyclist: the metric warns that their AP40 cannot exceed 2.5, 0 and 0."""
    from mmengine.logging import MMLogger
    metric = make_metric()
    metric.process({}, two_images())
    logger = MMLogger.get_instance('kitti_cap_test')
    records = []
    handler = __import__('logging').Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        metric.evaluate(size=2)
    finally:
        logger.removeHandler(handler)
    text = ' '.join(r.getMessage() for r in records
                    if r.levelname == 'WARNING')
    assert 'Car moderate: 2 boxes, AP40 <= 2.5' in text
    assert 'Pedestrian moderate: 1 boxes, AP40 <= 0.0' in text
    assert 'Cyclist hard: 0 boxes, AP40 <= 0.0' in text
