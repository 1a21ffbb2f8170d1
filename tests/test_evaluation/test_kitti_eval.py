"""Tests of kitti_eval_2d: hand-computed cases, properties, a loop reference.

Conventions used in the docstrings: ``n_gt`` is the number of valid (flag 0)
ground-truth boxes; the devkit keeps score thresholds from the sorted TP
scores (with ``n_gt <= 40`` every TP score is kept); ``p`` is the enveloped
precision array of 41 values; AP11 = 100 * sum(p[0::4]) / 11 and
AP40 = 100 * sum(p[1:]) / 40. So ``p = [1, 0, ...]`` gives 9.0909 / 0,
``p = [1, 1, 0, ...]`` gives 9.0909 / 2.5 and ``p = [x, x, 0, ...]`` gives
100x/11 / 100x/40.
"""
import numpy as np
import pytest

from mmprune.evaluation.functional import (
    kitti_eval_2d,
    kitti_result_lines,
    write_kitti_result_file,
)

DIFFS = ('easy', 'moderate', 'hard')
ONE = 100 / 11  # AP11 when only p[0] = 1


def gt(*objs):
    """Ground truth of one image from (name, bbox[, truncated, occluded])."""
    names, boxes, trunc, occ = [], [], [], []
    for o in objs:
        names.append(o[0])
        boxes.append(o[1])
        trunc.append(o[2] if len(o) > 2 else 0.0)
        occ.append(o[3] if len(o) > 3 else 0)
    return dict(name=np.array(names, dtype='<U16'),
                truncated=np.array(trunc, dtype=np.float64),
                occluded=np.array(occ, dtype=np.int64),
                bbox=np.array(boxes, dtype=np.float64).reshape(-1, 4))


def dt(*objs):
    """Detections of one image from (name, bbox, score)."""
    return dict(name=np.array([o[0] for o in objs], dtype='<U16'),
                bbox=np.array([o[1] for o in objs],
                              dtype=np.float64).reshape(-1, 4),
                score=np.array([o[2] for o in objs], dtype=np.float64))


# ----------------------------------------------------------------------------
# Reference: the devkit's structure, literally, with plain Python loops.
# ----------------------------------------------------------------------------
REF_MIN_HEIGHT = [40, 25, 25]
REF_MAX_OCC = [0, 1, 2]
REF_MAX_TRUNC = [0.15, 0.3, 0.5]
REF_IOU = {'Car': 0.7, 'Pedestrian': 0.5, 'Cyclist': 0.5}


def ref_overlap(d, g, criterion):
    """boxoverlap(det, gt, criterion) of the C++ devkit."""
    x1, y1 = max(d[0], g[0]), max(d[1], g[1])
    x2, y2 = min(d[2], g[2]), min(d[3], g[3])
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    a = (d[2] - d[0]) * (d[3] - d[1])
    b = (g[2] - g[0]) * (g[3] - g[1])
    if criterion == -1:
        return inter / (a + b - inter)
    return inter / a


def ref_clean_data(g, d, cls, diff):
    """cleanData: flags of ground truth and detections, DontCare boxes."""
    cur = cls.lower()
    ign_gt, ign_dt, dc, n_gt = [], [], [], 0
    for i in range(len(g['name'])):
        name = str(g['name'][i]).lower()
        box = g['bbox'][i]
        height = box[3] - box[1]
        if name == cur:
            valid = 1
        elif cur == 'pedestrian' and name == 'person_sitting':
            valid = 0
        elif cur == 'car' and name == 'van':
            valid = 0
        else:
            valid = -1
        ignore = (g['occluded'][i] > REF_MAX_OCC[diff]
                  or g['truncated'][i] > REF_MAX_TRUNC[diff]
                  or height < REF_MIN_HEIGHT[diff])
        if valid == 1 and not ignore:
            ign_gt.append(0)
            n_gt += 1
        elif valid == 0 or (ignore and valid == 1):
            ign_gt.append(1)
        else:
            ign_gt.append(-1)
    for i in range(len(g['name'])):
        if str(g['name'][i]).lower() == 'dontcare':
            dc.append(g['bbox'][i])
    for j in range(len(d['name'])):
        valid = 1 if str(d['name'][j]).lower() == cur else -1
        height = int(abs(d['bbox'][j][1] - d['bbox'][j][3]))  # int32_t
        if height < REF_MIN_HEIGHT[diff]:
            ign_dt.append(1)
        elif valid == 1:
            ign_dt.append(0)
        else:
            ign_dt.append(-1)
    return ign_gt, ign_dt, dc, n_gt


def ref_compute_statistics(g, d, dc, ign_gt, ign_dt, compute_fp, min_overlap,
                           thresh=0.0):
    """computeStatistics: TP, FP and the TP scores of one image."""
    no_det = -10000000
    n_det = len(d['name'])
    assigned = [False] * n_det
    below = [compute_fp and d['score'][j] < thresh for j in range(n_det)]
    tp = fp = 0
    v = []
    for i in range(len(g['name'])):
        if ign_gt[i] == -1:
            continue
        det_idx, valid_det, max_ov, assigned_ignored = -1, no_det, 0, False
        for j in range(n_det):
            if ign_dt[j] == -1 or assigned[j] or below[j]:
                continue
            ov = ref_overlap(d['bbox'][j], g['bbox'][i], -1)
            score = d['score'][j]
            if not compute_fp and ov > min_overlap and score > valid_det:
                det_idx, valid_det = j, score
            elif (compute_fp and ov > min_overlap
                  and (ov > max_ov or assigned_ignored) and ign_dt[j] == 0):
                max_ov, det_idx, valid_det = ov, j, 1
                assigned_ignored = False
            elif (compute_fp and ov > min_overlap and valid_det == no_det
                  and ign_dt[j] == 1):
                det_idx, valid_det, assigned_ignored = j, 1, True
        if valid_det == no_det and ign_gt[i] == 0:
            pass  # a false negative; precision does not need it
        elif valid_det != no_det and (ign_gt[i] == 1 or
                                      ign_dt[det_idx] == 1):
            assigned[det_idx] = True
        elif valid_det != no_det:
            tp += 1
            v.append(d['score'][det_idx])
            assigned[det_idx] = True
    if compute_fp:
        for j in range(n_det):
            if not (assigned[j] or ign_dt[j] == -1 or ign_dt[j] == 1
                    or below[j]):
                fp += 1
        nstuff = 0
        for box in dc:
            for j in range(n_det):
                if assigned[j] or ign_dt[j] in (-1, 1) or below[j]:
                    continue
                if ref_overlap(d['bbox'][j], box, 0) > min_overlap:
                    assigned[j] = True
                    nstuff += 1
        fp -= nstuff
    return tp, fp, v


def ref_get_thresholds(v, n_gt):
    """getThresholds: scores for 41 evenly spaced recall values."""
    v = sorted(v, reverse=True)
    t, current = [], 0.0
    for i in range(len(v)):
        left = (i + 1) / n_gt
        right = (i + 2) / n_gt if i < len(v) - 1 else left
        if (right - current) < (current - left) and i < len(v) - 1:
            continue
        t.append(v[i])
        current += 1.0 / (41 - 1.0)
    return t


def ref_eval_class(gts, dts, cls, diff, min_overlap):
    """eval_class: enveloped precision [41] of one class and difficulty."""
    cleaned, v, n_gt = [], [], 0
    for g, d in zip(gts, dts):
        ign_gt, ign_dt, dc, n = ref_clean_data(g, d, cls, diff)
        n_gt += n
        cleaned.append((ign_gt, ign_dt, dc))
        v += ref_compute_statistics(g, d, dc, ign_gt, ign_dt, False,
                                    min_overlap)[2]
    thresholds = ref_get_thresholds(v, n_gt)
    precision = [0.0] * 41
    for k, t in enumerate(thresholds):
        tp = fp = 0
        for (g, d), (ign_gt, ign_dt, dc) in zip(zip(gts, dts), cleaned):
            a, b, _ = ref_compute_statistics(g, d, dc, ign_gt, ign_dt, True,
                                             min_overlap, t)
            tp, fp = tp + a, fp + b
        precision[k] = tp / (tp + fp) if tp + fp > 0 else 0.0
    for k in range(len(thresholds)):
        precision[k] = max(precision[k:])
    return precision


def ref_kitti_eval(gts, dts, classes=('Car', 'Pedestrian', 'Cyclist')):
    """The reference's result dict, in kitti_eval_2d's key format."""
    out = {}
    for cls in classes:
        for di, diff in enumerate(DIFFS):
            p = ref_eval_class(gts, dts, cls, di, REF_IOU[cls])
            out[f'{cls}_AP11_{diff}'] = sum(p[0::4]) / 11 * 100
            out[f'{cls}_AP40_{diff}'] = sum(p[1:]) / 40 * 100
    return out


# ----------------------------------------------------------------------------
# Random data
# ----------------------------------------------------------------------------
TYPES = ['Car', 'Car', 'Car', 'Pedestrian', 'Pedestrian', 'Cyclist', 'Van',
         'Person_sitting', 'Truck', 'Misc', 'DontCare']


def random_dataset(seed, n_images=12, grid=False, separated=False):
    """Small random KITTI-like data: every type, DontCare, small boxes.

    ``grid`` snaps coordinates to whole pixels (exact 25 / 40 px heights,
    IoU and score ties). ``separated`` gives every image non-overlapping
    ground truth in distinct cells, so no two boxes compete for a detection.
    """
    rng = np.random.default_rng(seed)
    gts, dts = [], []
    for _ in range(n_images):
        n = int(rng.integers(0, 9))
        names = rng.choice(TYPES, n)
        h = rng.choice([12.0, 24.0, 25.0, 26.0, 39.0, 40.0, 41.0, 60.0, 120.0],
                       n)
        if not grid:
            h = h + rng.uniform(-0.6, 0.6, n)
        w = h * rng.uniform(0.4, 1.8, n)
        if separated:
            x1 = np.arange(n) * 320.0 + rng.uniform(0, 60, n)
        else:
            x1 = rng.uniform(0, 500, n)
        y1 = rng.uniform(0, 150, n)
        box = np.stack([x1, y1, x1 + w, y1 + h], 1)
        if grid:
            box = np.round(box)
            box[:, 3] = box[:, 1] + h
        trunc = rng.choice([0.0, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7], n)
        occ = rng.integers(0, 4, n)
        is_dc = names == 'DontCare'
        trunc[is_dc], occ[is_dc] = -1.0, -1
        gts.append(dict(name=names.astype('<U16'), truncated=trunc,
                        occluded=occ, bbox=box.reshape(-1, 4)))

        det_names, det_boxes = [], []
        for k in range(n):
            if is_dc[k] or rng.random() < 0.2:
                continue
            for _ in range(int(rng.integers(1, 3))):
                jitter = rng.normal(0, 0.06, 4) * np.r_[w[k], h[k], w[k],
                                                        h[k]]
                b = box[k] + jitter
                det_names.append(
                    {'Van': 'Car', 'Truck': 'Car', 'Misc': 'Cyclist',
                     'Person_sitting': 'Pedestrian'}.get(
                        names[k], names[k]) if rng.random() < 0.85 else
                    rng.choice(['Car', 'Pedestrian', 'Cyclist']))
                det_boxes.append(np.round(b) if grid else b)
        for _ in range(int(rng.integers(0, 5))):
            hh = rng.uniform(10, 80)
            x = rng.uniform(0, 500) if not separated else \
                rng.uniform(0, 320 * max(n, 1))
            b = np.array([x, 200.0, x + hh * rng.uniform(0.5, 1.5),
                          200.0 + hh])
            det_names.append(rng.choice(['Car', 'Pedestrian', 'Cyclist']))
            det_boxes.append(np.round(b) if grid else b)
        m = len(det_names)
        score = rng.random(m)
        if grid:
            score = np.round(score, 1)  # many exact ties
        if separated:
            score = score + rng.uniform(0, 1e-6, m)  # no ties at all
        box_d = np.array(det_boxes, dtype=np.float64).reshape(-1, 4)
        box_d = np.concatenate([np.minimum(box_d[:, :2], box_d[:, 2:]),
                                np.maximum(box_d[:, :2], box_d[:, 2:])], 1)
        dts.append(dict(name=np.array(det_names, dtype='<U16'), bbox=box_d,
                        score=score))
    return gts, dts


def assert_close(a, b, tol=0.01):
    assert a.keys() >= b.keys()
    for k in b:
        assert abs(a[k] - b[k]) <= tol, (k, a[k], b[k])


# ----------------------------------------------------------------------------
# Hand-computed cases
# ----------------------------------------------------------------------------
def test_perfect_detections():
    """50 images, each one Car, Pedestrian and Cyclist (easy), found exactly.

    n_gt = 50 per class: 40 of the first 49 TP scores are kept plus the last
    one, 41 thresholds, precision 1 at each: p = 1 everywhere, AP = 100.
    """
    gts, dts = [], []
    for i in range(50):
        objs = [('Car', [10, 10, 110, 70]), ('Pedestrian', [200, 10, 230, 90]),
                ('Cyclist', [300, 10, 360, 70])]
        gts.append(gt(*objs))
        dts.append(dt(*[(n, b, 0.3 + 0.01 * i + 0.001 * k)
                        for k, (n, b) in enumerate(objs)]))
    res = kitti_eval_2d(gts, dts)
    assert len(res) == 4 * 3 * 2
    for v in res.values():
        assert v == pytest.approx(100.0)


def test_single_correct_detection():
    """One valid Car (moderate and hard, 30 px tall) detected exactly.

    n_gt = 1, one TP, one threshold, p = [1, 0, ...]: AP11 = 9.0909 and
    AP40 = 0 (AP40 skips p[0]). Easy: 30 < 40 px, no valid box, AP 0.
    """
    res = kitti_eval_2d([gt(('Car', [10, 10, 60, 40]))],
                        [dt(('Car', [10, 10, 60, 40], 0.8))])
    assert res['Car_AP11_moderate'] == pytest.approx(9.0909, abs=1e-4)
    assert res['Car_AP40_moderate'] == 0.0
    assert res['Car_AP11_hard'] == pytest.approx(9.0909, abs=1e-4)
    assert res['Car_AP11_easy'] == 0.0
    assert res['Pedestrian_AP11_moderate'] == 0.0


def test_devkit_port_fixture():
    """The public fixture of the Python ports (mmdet3d test_kitti_eval).

    Car moderate has two valid boxes (31.2 and 39.8 px; the third Car has
    occluded=3 and the small Car detection 19.7 px is ignored): p = [1, 1],
    AP11 9.0909, AP40 2.5. Pedestrian / Cyclist: one valid box each, 9.0909
    and 0. Easy: every box is < 40 px, all 0. Overall AP40 moderate =
    (0 + 0 + 2.5) / 3.
    """
    boxes = [[674.9179, 165.48549, 693.23694, 193.42134],
             [676.21954, 165.70988, 691.63745, 193.83748],
             [389.4093, 182.48041, 421.49072, 202.13422],
             [232.0577, 186.16724, 301.94623, 217.4024],
             [758.6537, 172.98509, 816.32434, 212.76743],
             [532.37, 176.35, 542.68, 185.27],
             [559.62, 175.83, 575.4, 183.15]]
    g = dict(name=np.array(['Pedestrian', 'Cyclist', 'Car', 'Car', 'Car',
                            'DontCare', 'DontCare']),
             truncated=np.array([0., 0., 0., -1., -1., -1., -1.]),
             occluded=np.array([0, 0, 3, -1, -1, -1, -1]),
             bbox=np.array(boxes))
    d = dict(name=np.array(['Pedestrian', 'Cyclist', 'Car', 'Car', 'Car']),
             bbox=np.array(boxes[:5]),
             score=np.array([0.18151495, 0.57920843, 0.27795696, 0.23100418,
                             0.21541929]))
    res = kitti_eval_2d([g], [d])
    for diff in ('moderate', 'hard'):
        assert res[f'Car_AP11_{diff}'] == pytest.approx(ONE)
        assert res[f'Car_AP40_{diff}'] == pytest.approx(2.5)
        for cls in ('Pedestrian', 'Cyclist'):
            assert res[f'{cls}_AP11_{diff}'] == pytest.approx(ONE)
            assert res[f'{cls}_AP40_{diff}'] == 0.0
        assert res[f'Overall_AP40_{diff}'] == pytest.approx(2.5 / 3)
    assert all(res[f'{c}_AP11_easy'] == 0.0
               for c in ('Car', 'Pedestrian', 'Cyclist'))


def _dontcare_case(dc_box):
    """Two valid Cars found at 0.9 / 0.85, an extra Car box at 0.95."""
    g = gt(('Car', [0, 0, 80, 50]), ('Car', [300, 0, 380, 50]),
           ('DontCare', dc_box, -1, -1))
    d = dt(('Car', [0, 0, 80, 50], 0.9), ('Car', [300, 0, 380, 50], 0.85),
           ('Car', [100, 100, 200, 200], 0.95))
    return kitti_eval_2d([g], [d], classes=['Car'])


def test_false_positive_inside_dontcare_is_not_counted():
    """The 0.95 box lies in a DontCare region: inter / own area = 1 > 0.7.

    Thresholds 0.9, 0.85 (n_gt = 2). It is not an FP: p = [1, 1],
    AP11 9.0909, AP40 2.5.
    """
    res = _dontcare_case([90, 90, 210, 210])
    assert res['Car_AP11_moderate'] == pytest.approx(ONE)
    assert res['Car_AP40_moderate'] == pytest.approx(2.5)


def test_dontcare_overlap_must_exceed_threshold():
    """DontCare covers exactly 70% of the 0.95 box: 0.7 is not > 0.7.

    It stays an FP: precision 1/2 at 0.9 and 2/3 at 0.85, envelope
    p = [2/3, 2/3]: AP11 = 6.0606, AP40 = 1.6667.
    """
    res = _dontcare_case([100, 100, 170, 200])
    assert res['Car_AP11_moderate'] == pytest.approx(200 / 3 / 11)
    assert res['Car_AP40_moderate'] == pytest.approx(200 / 3 / 40)


@pytest.mark.parametrize('other, expected', [('Van', ONE), ('Truck', ONE / 2)])
def test_van_detected_as_car_is_ignored(other, expected):
    """A Car detection (0.95) on a Van is consumed, not an FP; on a Truck
    it is an FP.

    One valid Car found at 0.9: one threshold 0.9. Van: p = [1], AP11
    9.0909. Truck (not a neighbour class): precision 1/2, AP11 4.5455.
    """
    g = gt(('Car', [0, 0, 80, 50]), (other, [200, 0, 300, 60]))
    d = dt(('Car', [0, 0, 80, 50], 0.9), ('Car', [200, 0, 300, 60], 0.95))
    res = kitti_eval_2d([g], [d], classes=('Car', ))
    assert res['Car_AP11_easy'] == pytest.approx(expected)
    assert res['Car_AP40_easy'] == 0.0


@pytest.mark.parametrize('ped_height, ap40', [(24, 0.0), (26, 2.5)])
def test_small_detection_of_other_class_absorbs_ground_truth(ped_height,
                                                             ap40):
    """Car A (26 px, moderate) is covered by a Pedestrian box at 0.9 and by
    a Car box at 0.6; Car B (50 px) is found at 0.8. n_gt = 2.

    Pedestrian box 24 px < 25: ignored (flag 1) *before* the class test, so
    it is a candidate for A (IoU 24/26 > 0.7) and, scoring highest, absorbs
    A: no TP for A, TP scores [0.8], p = [1]: AP11 9.0909, AP40 0.
    Pedestrian box 26 px: another class (flag -1), A takes the Car box, TP
    scores [0.8, 0.6], p = [1, 1]: AP11 9.0909, AP40 2.5.
    """
    g = gt(('Car', [100, 100, 180, 126]), ('Car', [300, 100, 380, 150]))
    d = dt(('Pedestrian', [100, 101, 180, 101 + ped_height], 0.9),
           ('Car', [100, 100, 180, 126], 0.6),
           ('Car', [300, 100, 380, 150], 0.8))
    res = kitti_eval_2d([g], [d], classes=['Car'])
    assert res['Car_AP11_moderate'] == pytest.approx(ONE)
    assert res['Car_AP40_moderate'] == pytest.approx(ap40)


def test_ties_in_score_keep_detections_at_threshold():
    """Two valid Cars and a third Car box, all scored 0.5.

    TP scores [0.5, 0.5] -> thresholds [0.5, 0.5]. A box is dropped only
    when score < threshold, so all three count: TP 2, FP 1, p = [2/3, 2/3]:
    AP11 6.0606, AP40 1.6667.
    """
    g = gt(('Car', [0, 0, 80, 50]), ('Car', [300, 0, 380, 50]))
    d = dt(('Car', [0, 0, 80, 50], 0.5), ('Car', [300, 0, 380, 50], 0.5),
           ('Car', [600, 0, 680, 50], 0.5))
    res = kitti_eval_2d([g], [d], classes=['Car'])
    assert res['Car_AP11_easy'] == pytest.approx(200 / 3 / 11)
    assert res['Car_AP40_easy'] == pytest.approx(200 / 3 / 40)


def test_image_without_ground_truth():
    """Image 0: one Car found at 0.9. Image 1: no objects, a Car box at 0.95
    (an FP). Image 2: nothing at all.

    Threshold 0.9: TP 1, FP 1: p = [1/2], AP11 4.5455.
    """
    empty = dict(name=np.array([]), truncated=np.array([]),
                 occluded=np.array([]), bbox=np.zeros((0, 4)))
    gts = [gt(('Car', [0, 0, 80, 50])), empty, empty]
    dts = [dt(('Car', [0, 0, 80, 50], 0.9)),
           dt(('Car', [0, 0, 80, 50], 0.95)),
           dict(name=np.array([]), bbox=np.zeros((0, 4)),
                score=np.array([]))]
    res = kitti_eval_2d(gts, dts)
    assert res['Car_AP11_easy'] == pytest.approx(ONE / 2)


def test_class_without_detections_scores_zero():
    """Car and Pedestrian found (n_gt = 1 each, AP11 9.0909), Cyclist has a
    valid box but no detection: AP 0. Overall AP11 = 2 * 9.0909 / 3."""
    g = gt(('Car', [0, 0, 80, 50]), ('Pedestrian', [200, 0, 230, 60]),
           ('Cyclist', [400, 0, 450, 60]))
    d = dt(('Car', [0, 0, 80, 50], 0.9),
           ('Pedestrian', [200, 0, 230, 60], 0.7))
    res = kitti_eval_2d([g], [d])
    assert res['Cyclist_AP11_easy'] == 0.0
    assert res['Cyclist_AP40_hard'] == 0.0
    assert res['Pedestrian_AP11_easy'] == pytest.approx(ONE)
    assert res['Overall_AP11_easy'] == pytest.approx(2 * ONE / 3)


@pytest.mark.parametrize('height, easy, moderate', [
    (40.0, ONE, ONE),      # 40 < 40 is false: valid for easy (C++ rule)
    (39.99, 0.0, ONE),
    (25.0, 0.0, ONE),      # 25 < 25 is false: valid for moderate
    (24.99, 0.0, 0.0),
])
def test_min_height_boundaries_follow_cpp(height, easy, moderate):
    """A Car box exactly 40 px (or 25 px) tall passes easy (moderate), as
    in evaluate_object.cpp; the Python ports (<=) would drop it. One valid
    box detected exactly: AP11 9.0909 where it passes, else 0.
    Below 25 px, the detection is also ignored (flag 1)."""
    box = [10, 100, 90, 100 + height]
    res = kitti_eval_2d([gt(('Car', box))], [dt(('Car', box, 0.9))],
                        classes=['Car'])
    assert res['Car_AP11_easy'] == pytest.approx(easy)
    assert res['Car_AP11_moderate'] == pytest.approx(moderate)


@pytest.mark.parametrize('x2, matched', [(70, False), (71, True)])
def test_iou_must_exceed_threshold(x2, matched):
    """Car [0,0,100,100] vs detection [0,0,x2,100]: IoU = x2/100. 0.70 is
    not > 0.7 (no TP, AP 0); 0.71 is (AP11 9.0909)."""
    res = kitti_eval_2d([gt(('Car', [0, 0, 100, 100]))],
                        [dt(('Car', [0, 0, x2, 100], 0.9))], classes=['Car'])
    assert res['Car_AP11_easy'] == pytest.approx(ONE if matched else 0.0)


def test_custom_iou_threshold():
    """The IoU-0.7 detection above matches once the Car threshold is 0.5."""
    args = ([gt(('Car', [0, 0, 100, 100]))],
            [dt(('Car', [0, 0, 70, 100], 0.9))])
    assert kitti_eval_2d(*args, classes=['Car'],
                         iou_thresholds={'Car': 0.5})['Car_AP11_easy'] == \
        pytest.approx(ONE)
    assert kitti_eval_2d(*args, classes=['Car'],
                         iou_thresholds=[0.69])['Car_AP11_easy'] == \
        pytest.approx(ONE)


# ----------------------------------------------------------------------------
# Cross-check against the loop reference
# ----------------------------------------------------------------------------
@pytest.mark.parametrize('seed, grid', [(0, False), (1, False), (2, True),
                                        (3, True), (4, False), (5, True)])
def test_matches_loop_reference(seed, grid):
    """Vectorised result == literal devkit loops within 0.01 AP."""
    gts, dts = random_dataset(seed, n_images=14, grid=grid)
    ours = kitti_eval_2d(gts, dts)
    ref = ref_kitti_eval(gts, dts)
    assert_close(ours, ref)
    assert any(v > 0 for v in ref.values())


def test_matches_loop_reference_many_thresholds():
    """150 images: n_gt > 40 valid Cars, so the 41-point sampling actually
    skips scores. Car only, to keep the reference fast."""
    gts, dts = random_dataset(11, n_images=150)
    ours = kitti_eval_2d(gts, dts, classes=['Car'])
    ref = ref_kitti_eval(gts, dts, classes=['Car'])
    assert_close(ours, ref)
    n_valid = sum(int(((g['name'] == 'Car') & (g['occluded'] <= 2) &
                       (g['truncated'] <= 0.5) &
                       (g['bbox'][:, 3] - g['bbox'][:, 1] >= 25)).sum())
                  for g in gts)
    assert n_valid > 80


# ----------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------
@pytest.mark.parametrize('seed', [20, 21, 22])
def test_invariant_to_image_and_box_order(seed):
    """Permuting images, and boxes inside images, changes nothing when no
    two ground-truth boxes compete for a detection and scores are distinct
    (the devkit itself breaks such ties by file order)."""
    gts, dts = random_dataset(seed, n_images=20, separated=True)
    base = kitti_eval_2d(gts, dts)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(gts))

    def shuffle(a):
        p = rng.permutation(len(a['name']))
        return {k: np.asarray(v)[p] for k, v in a.items()}

    res = kitti_eval_2d([shuffle(gts[i]) for i in perm],
                        [shuffle(dts[i]) for i in perm])
    assert_close(res, base, tol=1e-9)
    assert any(v > 0 for v in base.values())


@pytest.mark.parametrize('seed', [30, 31, 32])
def test_duplicate_detection_never_raises_ap(seed):
    """Appending a copy of a detection (same box, same score) can only add
    an FP or nothing (separated layout: no other box can take the copy)."""
    gts, dts = random_dataset(seed, n_images=20, separated=True)
    base = kitti_eval_2d(gts, dts)
    rng = np.random.default_rng(seed)
    for i in range(len(dts)):
        m = len(dts[i]['name'])
        if m == 0:
            continue
        j = int(rng.integers(m))
        dts[i] = {k: np.concatenate([v, v[j:j + 1]])
                  for k, v in dts[i].items()}
    res = kitti_eval_2d(gts, dts)
    for k in base:
        assert res[k] <= base[k] + 1e-9, k
    assert any(res[k] < base[k] for k in base)


@pytest.mark.parametrize('seed', range(40, 46))
def test_ap40_at_most_ap11_plus_10(seed):
    """With a non-increasing envelope, sum(p[1:]) / 40 <= 1.1 * AP11 / 100,
    hence AP40 <= AP11 + 10; also every AP is within [0, 100]."""
    gts, dts = random_dataset(seed, n_images=25, grid=seed % 2 == 0)
    res = kitti_eval_2d(gts, dts)
    for k, v in res.items():
        assert 0.0 <= v <= 100.0
        if '_AP40_' in k:
            assert v <= res[k.replace('_AP40_', '_AP11_')] + 10 + 1e-9


# ----------------------------------------------------------------------------
# Inputs and result lines
# ----------------------------------------------------------------------------
def test_input_errors_name_image_and_key():
    g, d = gt(('Car', [0, 0, 10, 10])), dt(('Car', [0, 0, 10, 10], 0.5))
    with pytest.raises(ValueError, match='1 images but dt_annos has 2'):
        kitti_eval_2d([g], [d, d])
    with pytest.raises(KeyError, match=r"dt_annos\[1\] lacks .*'score'"):
        kitti_eval_2d([g, g], [d, {'name': d['name'], 'bbox': d['bbox']}])
    bad = dict(g, bbox=np.zeros((1, 5)))
    with pytest.raises(ValueError,
                       match=r"gt_annos\[0\]\['bbox'\] has shape \(1, 5\); "
                             r'expected \(1, 4\)'):
        kitti_eval_2d([bad], [d])
    with pytest.raises(ValueError, match=r'gt_annos\[0\] object 0 .*x1 <= x2'):
        kitti_eval_2d([gt(('Car', [10, 0, 0, 10]))], [d])
    with pytest.raises(ValueError, match='non-finite'):
        kitti_eval_2d([g], [dt(('Car', [0, 0, np.nan, 10], 0.5))])
    with pytest.raises(ValueError, match="class 'Van' has no IoU threshold"):
        kitti_eval_2d([g], [d], classes=['Van'])
    with pytest.raises(ValueError, match=r'expected a value in \[0, 1\)'):
        kitti_eval_2d([g], [d], classes=['Car'], iou_thresholds=[1.0])
    with pytest.raises(ValueError, match='gt_annos is empty'):
        kitti_eval_2d([], [])


def test_result_lines_have_16_columns(tmp_path):
    d = dt(('Car', [1.234, 2.0, 30.5, 40.25], 0.87654321),
           ('Pedestrian', [5, 6, 7, 8], 0.1))
    lines = kitti_result_lines(d)
    assert lines[0] == ('Car -1 -1 -10 1.23 2.00 30.50 40.25 -1 -1 -1 '
                        '-1000 -1000 -1000 -10 0.876543')
    assert all(len(line.split()) == 16 for line in lines)
    path = tmp_path / 'sub' / '000001.txt'
    write_kitti_result_file(str(path), d)
    assert path.read_text().splitlines() == lines
    write_kitti_result_file(str(tmp_path / 'empty.txt'),
                            dt())
    assert (tmp_path / 'empty.txt').read_text() == ''


# ----------------------------------------------------------------------------
# The devkit's cap below 41 boxes (kitti_caps)
# ----------------------------------------------------------------------------
def _perfect(n_gt):
    """One image per Cyclist, 50 px tall, each found exactly (distinct
    scores)."""
    gts, dts = [], []
    for i in range(n_gt):
        box = np.array([[10.0, 10.0, 40.0, 60.0]])
        gts.append(dict(name=np.array(['Cyclist']), truncated=np.zeros(1),
                        occluded=np.zeros(1, dtype=np.int64), bbox=box))
        dts.append(dict(name=np.array(['Cyclist']), bbox=box.copy(),
                        score=np.array([0.99 - i * 1e-3])))
    return gts, dts


@pytest.mark.parametrize('n_gt, ap40, ap11', [
    (20, 19 / 40, 5 / 11),   # samples 0..19 are 1; AP11 hits 0, 4, .., 16
    (40, 39 / 40, 10 / 11),  # samples 0..39; AP11 misses only sample 40
    (41, 1.0, 1.0),          # enough boxes: every sample reached
])
def test_perfect_detections_are_capped_below_41_boxes(n_gt, ap40, ap11):
    """Hand count of the devkit's getThresholds: with n <= 40 boxes every TP
    score is kept and recall advances 1/40 per kept score, so only the first
    n of the 41 precision samples are non-zero. The loop reference agrees."""
    from mmprune.evaluation.functional import ap40_cap, capped_levels
    gts, dts = _perfect(n_gt)
    ours = kitti_eval_2d(gts, dts, classes=['Cyclist'])
    ref = ref_kitti_eval(gts, dts, classes=('Cyclist',))
    assert ours['Cyclist_AP40_moderate'] == pytest.approx(100 * ap40)
    assert ours['Cyclist_AP11_moderate'] == pytest.approx(100 * ap11)
    assert ref['Cyclist_AP40_moderate'] == pytest.approx(100 * ap40)
    assert ap40_cap(n_gt) == pytest.approx(100 * ap40)
    lines = capped_levels(gts, ['Cyclist'])
    if n_gt <= 40:
        assert f'Cyclist moderate: {n_gt} boxes, AP40 <= {100 * ap40:.1f}' \
            in lines
    else:
        assert lines == []


def test_valid_gt_counts_follow_the_difficulty_filters():
    """Hand count: a 30 px box is moderate but not easy; occluded 2 is hard
    only; truncated 0.4 is hard only; the neighbour class never counts."""
    from mmprune.evaluation.functional import valid_gt_counts
    g = dict(name=np.array(['Car', 'Car', 'Car', 'Car', 'Van']),
             truncated=np.array([0.0, 0.0, 0.0, 0.4, 0.0]),
             occluded=np.array([0, 0, 2, 0, 0]),
             bbox=np.array([[0, 0, 50, 50], [0, 0, 50, 30], [0, 0, 50, 50],
                            [0, 0, 50, 50], [0, 0, 50, 50]], dtype=float))
    n = valid_gt_counts([g, g], ['Car'])
    assert n == {('Car', 'easy'): 2, ('Car', 'moderate'): 4,
                 ('Car', 'hard'): 8}
