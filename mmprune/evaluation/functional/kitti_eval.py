"""KITTI 2D detection AP (easy / moderate / hard), as the official devkit.

This reproduces ``evaluate_object.cpp`` of the KITTI object devkit for the 2D
box metric (see ``docs/KITTI_EVAL.md`` of the project for the specification):
difficulty filters, neighbour-class and DontCare handling, the greedy
matching with strict ``>`` IoU thresholds, the 41-sample score thresholds,
the precision envelope, and AP11 / AP40.

The devkit matches ground truth to detections with a sequential loop per
image and per score threshold. Here the same greedy is run for all images
and all thresholds at once: the k-th matchable ground-truth box of every image
is processed in one vectorised round, so the Python loop runs over rounds
(the largest number of matchable boxes in one image), not over images or
thresholds. numpy only; no registry and no mmdet import.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    'DIFFICULTIES', 'KITTI_IOU_THRESHOLDS', 'kitti_eval_2d',
    'resolve_iou_thresholds'
]

#: Difficulty names, in the order of the devkit's tables.
DIFFICULTIES = ('easy', 'moderate', 'hard')
#: Per difficulty: a box shorter than this (pixels) fails the level.
MIN_HEIGHT = (40.0, 25.0, 25.0)
#: Per difficulty: the largest ``occluded`` level that passes.
MAX_OCCLUSION = (0, 1, 2)
#: Per difficulty: the largest ``truncated`` fraction that passes.
MAX_TRUNCATION = (0.15, 0.3, 0.5)
#: The devkit's 2D-box IoU thresholds; a match needs IoU strictly above.
KITTI_IOU_THRESHOLDS = {'Car': 0.7, 'Pedestrian': 0.5, 'Cyclist': 0.5}
#: Ground-truth type that is ignored (not a miss) when evaluating a class.
NEIGHBOUR_CLASS = {'car': 'van', 'pedestrian': 'person_sitting'}
#: Number of recall samples, hence the length of the precision array.
N_SAMPLE_PTS = 41

_GT_KEYS = ('name', 'truncated', 'occluded', 'bbox')
_DT_KEYS = ('name', 'bbox', 'score')
_NO_MATCH = np.iinfo(np.int64).max
_NO_DETECTION = -10000000.0
_PAIR_CHUNK = 1 << 17

ThresholdSpec = Optional[Union[Mapping[str, float], Sequence[float]]]


# ----------------------------------------------------------------------------
# Input checks and packing
# ----------------------------------------------------------------------------
def _names(value, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0:
        return np.zeros(0, dtype='<U1')
    if arr.ndim != 1:
        raise ValueError(f'{where} has shape {arr.shape}; expected a 1-D '
                         'array of type names [N]')
    if arr.dtype.kind == 'U':
        return arr
    if arr.dtype.kind == 'O' and all(isinstance(v, str) for v in arr):
        return arr.astype(str)
    raise TypeError(f'{where} has dtype {arr.dtype}; expected strings such '
                    "as 'Car'")


def _vector(value, n: int, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f'{where} is not numeric ({err}); expected a float '
                        f'array of shape ({n},)') from None
    if arr.size == 0 and n == 0:
        return arr.reshape(0)
    if arr.shape != (n, ):
        raise ValueError(f'{where} has shape {arr.shape}; expected ({n},), '
                         'one value per name')
    return arr


def _boxes(value, n: int, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f'{where} is not numeric ({err}); expected a float '
                        f'array of shape ({n}, 4)') from None
    if arr.size == 0 and n == 0:
        return arr.reshape(0, 4)
    if arr.shape != (n, 4):
        raise ValueError(f'{where} has shape {arr.shape}; expected ({n}, 4): '
                         'one x1 y1 x2 y2 row (pixels) per name')
    return arr


def _require(anno, idx: int, kind: str, keys: Sequence[str]) -> None:
    if not isinstance(anno, Mapping):
        raise TypeError(f'{kind}[{idx}] is a {type(anno).__name__}; expected '
                        f'a dict with keys {list(keys)}')
    missing = [k for k in keys if k not in anno]
    if missing:
        raise KeyError(f'{kind}[{idx}] lacks the key(s) {missing}; expected '
                       f'{list(keys)} (has {sorted(anno)})')


def _check_dt(anno, idx: int, kind: str = 'dt_annos'):
    _require(anno, idx, kind, _DT_KEYS)
    names = _names(anno['name'], f"{kind}[{idx}]['name']")
    n = len(names)
    bbox = _boxes(anno['bbox'], n, f"{kind}[{idx}]['bbox']")
    score = _vector(anno['score'], n, f"{kind}[{idx}]['score']")
    bad = ~(np.isfinite(bbox).all(1) & np.isfinite(score))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f'{kind}[{idx}] detection {j} has a non-finite box '
                         f'or score ({bbox[j].tolist()}, {score[j]}); '
                         'expected finite numbers')
    return names, bbox, score


def _check_gt(anno, idx: int):
    _require(anno, idx, 'gt_annos', _GT_KEYS)
    names = _names(anno['name'], f"gt_annos[{idx}]['name']")
    n = len(names)
    bbox = _boxes(anno['bbox'], n, f"gt_annos[{idx}]['bbox']")
    trunc = _vector(anno['truncated'], n, f"gt_annos[{idx}]['truncated']")
    occ = _vector(anno['occluded'], n, f"gt_annos[{idx}]['occluded']")
    bad = ~(np.isfinite(bbox).all(1) & np.isfinite(trunc) & np.isfinite(occ))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f'gt_annos[{idx}] object {j} has a non-finite '
                         'bbox, truncated or occluded value; expected finite '
                         'numbers')
    # Label files never hold inverted boxes; one here means a wrong format
    # (e.g. x, y, w, h) upstream, which would silently ruin every IoU.
    inv = (bbox[:, 2] < bbox[:, 0]) | (bbox[:, 3] < bbox[:, 1])
    if inv.any():
        j = int(np.flatnonzero(inv)[0])
        raise ValueError(f'gt_annos[{idx}] object {j} ({names[j]}) has bbox '
                         f'{bbox[j].tolist()}; expected x1 <= x2 and '
                         'y1 <= y2 (x1 y1 x2 y2 pixels)')
    return names, bbox, trunc, occ


def resolve_iou_thresholds(
        classes: Sequence[str],
        iou_thresholds: ThresholdSpec = None) -> List[float]:
    """The IoU threshold of each class, checked (a match needs IoU above).

    Args:
        classes: class names (case-insensitive, no duplicates).
        iou_thresholds: None for the devkit's, a dict class -> IoU that
            overrides some, or one IoU per class. Each must be in [0, 1).

    Raises a ValueError naming the class when it has no threshold.
    """
    return _resolve_classes(classes, iou_thresholds)[1]


def _resolve_classes(classes: Sequence[str],
                     iou_thresholds: ThresholdSpec) -> Tuple[list, list]:
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise TypeError(f'classes={classes!r}; expected a sequence of class '
                        "names such as ('Car', 'Pedestrian', 'Cyclist')")
    classes = list(classes)
    if not classes:
        raise ValueError('classes is empty; expected at least one class')
    lowered = [str(c).lower() for c in classes]
    if len(set(lowered)) != len(lowered):
        raise ValueError(f'classes={classes} lists a class twice')
    table = {k.lower(): v for k, v in KITTI_IOU_THRESHOLDS.items()}
    if iou_thresholds is None:
        pass
    elif isinstance(iou_thresholds, Mapping):
        table.update({str(k).lower(): v for k, v in iou_thresholds.items()})
    elif isinstance(iou_thresholds, (Sequence, np.ndarray)) and \
            not isinstance(iou_thresholds, str):
        if len(iou_thresholds) != len(classes):
            raise ValueError(
                f'iou_thresholds has {len(iou_thresholds)} values for '
                f'{len(classes)} classes {classes}; expected one per class '
                'or a dict class -> threshold')
        table.update(dict(zip(lowered, iou_thresholds)))
    else:
        raise TypeError(f'iou_thresholds={iou_thresholds!r}; expected None, '
                        'a dict class -> IoU or a list with one IoU per '
                        'class')
    thrs = []
    for name, low in zip(classes, lowered):
        if low not in table:
            raise ValueError(
                f'class {name!r} has no IoU threshold; the devkit evaluates '
                f'{tuple(KITTI_IOU_THRESHOLDS)}. Pass iou_thresholds='
                f'{{{name!r}: ...}} to evaluate another type')
        thr = float(table[low])
        if not 0.0 <= thr < 1.0:
            raise ValueError(f'IoU threshold of {name!r} is {thr}; expected '
                             'a value in [0, 1)')
        thrs.append(thr)
    return classes, thrs


class _Packed:
    """All images' boxes concatenated, sorted by image (private)."""

    def __init__(self, gt_annos, dt_annos, classes: List[str]):
        if not isinstance(gt_annos, Sequence) or \
                not isinstance(dt_annos, Sequence):
            raise TypeError('gt_annos and dt_annos must be lists with one '
                            'dict per image')
        if len(gt_annos) != len(dt_annos):
            raise ValueError(f'gt_annos has {len(gt_annos)} images but '
                             f'dt_annos has {len(dt_annos)}; expected one '
                             'entry per image in both, in the same order')
        if not gt_annos:
            raise ValueError('gt_annos is empty; expected at least one image')
        gts = [_check_gt(a, i) for i, a in enumerate(gt_annos)]
        dts = [_check_dt(a, i) for i, a in enumerate(dt_annos)]
        self.n_img = len(gts)
        ng = np.array([len(g[0]) for g in gts], dtype=np.int64)
        nd = np.array([len(d[0]) for d in dts], dtype=np.int64)

        # Names become small integer codes once, so every per-class test is
        # an integer comparison. The devkit compares names case-insensitively.
        lower = [c.lower() for c in classes]
        vocab = list(dict.fromkeys(
            lower + [NEIGHBOUR_CLASS[c] for c in lower
                     if c in NEIGHBOUR_CLASS] + ['dontcare']))
        self.code = {name: i for i, name in enumerate(vocab)}
        self.g_img = np.repeat(np.arange(self.n_img), ng)
        self.g_code = self._encode([g[0] for g in gts])
        self.g_box = np.concatenate([g[1] for g in gts]).reshape(-1, 4)
        self.g_trunc = np.concatenate([g[2] for g in gts])
        self.g_occ = np.concatenate([g[3] for g in gts])
        # C++: double height = y2 - y1 (ground truth boxes are not inverted).
        self.g_height = self.g_box[:, 3] - self.g_box[:, 1]
        self.d_img = np.repeat(np.arange(self.n_img), nd)
        self.d_code = self._encode([d[0] for d in dts])
        self.d_box = np.concatenate([d[1] for d in dts]).reshape(-1, 4)
        self.d_score = np.concatenate([d[2] for d in dts])
        # C++ stores |y1 - y2| in an int32; for a whole-pixel MIN_HEIGHT,
        # int(h) < m is the same test as h < m, so the float is kept.
        self.d_height = np.abs(self.d_box[:, 3] - self.d_box[:, 1])

    def _encode(self, name_lists: List[np.ndarray]) -> np.ndarray:
        names = np.concatenate(name_lists) if name_lists else np.zeros(0)
        if names.size == 0:
            return np.zeros(0, dtype=np.int64)
        uniq, inv = np.unique(names, return_inverse=True)
        lut = np.array([self.code.get(str(u).lower(), -1) for u in uniq],
                       dtype=np.int64)
        return lut[inv.reshape(-1)]


# ----------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------
def _pairs_within_images(img_a: np.ndarray, img_b: np.ndarray,
                         n_img: int) -> Tuple[np.ndarray, np.ndarray]:
    """Every (a, b) index pair of the same image, ordered by image, a, b.

    ``img_a`` [A] and ``img_b`` [B] are image indices sorted ascending.
    """
    ca = np.bincount(img_a, minlength=n_img)
    cb = np.bincount(img_b, minlength=n_img)
    npair = ca * cb
    total = int(npair.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    start_a = np.cumsum(ca) - ca
    start_b = np.cumsum(cb) - cb
    p_img = np.repeat(np.arange(n_img), npair)
    offset = np.arange(total) - np.repeat(np.cumsum(npair) - npair, npair)
    width = cb[p_img]
    return start_a[p_img] + offset // width, start_b[p_img] + offset % width


def _overlap(det: np.ndarray, other: np.ndarray, own_area: bool) -> np.ndarray:
    """Row-wise overlap of ``det`` [P, 4] with ``other`` [P, 4].

    IoU, or intersection / area of ``det`` when ``own_area`` (the DontCare
    rule). Plain float arithmetic with no +1 pixel, in the devkit's order of
    operations so that ties against the thresholds resolve identically.
    """
    w = np.minimum(det[:, 2], other[:, 2]) - np.maximum(det[:, 0], other[:, 0])
    h = np.minimum(det[:, 3], other[:, 3]) - np.maximum(det[:, 1], other[:, 1])
    ok = (w > 0) & (h > 0)
    inter = w * h
    det_area = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    if own_area:
        denom = det_area
    else:
        denom = det_area + (other[:, 2] - other[:, 0]) * \
            (other[:, 3] - other[:, 1]) - inter
    out = np.zeros(len(det))
    out[ok] = inter[ok] / denom[ok]
    return out


# ----------------------------------------------------------------------------
# Matching
# ----------------------------------------------------------------------------
def _greedy_match(p_gt: np.ndarray, p_det: np.ndarray, g_img: np.ndarray,
                  priority: Tuple[np.ndarray, ...],
                  allowed: Optional[np.ndarray]):
    """The devkit's greedy assignment, for every image and column at once.

    Args:
        p_gt: [P] ground-truth index of each candidate pair, non-decreasing
            (the devkit visits ground truth in label-file order).
        p_det: [P] detection index of each pair.
        g_img: [Ng] image index of every ground-truth box.
        priority: lexsort keys (least significant first) ranking the pairs of
            one ground-truth box; the first available pair is taken.
        allowed: [P, T] bool, whether a pair may be used in column ``t``
            (a score threshold), or None for all pairs in one column.

    Returns:
        ``(seg_gt [S], chosen [S, T], cand_det [K], assigned [K, T])``:
        ``seg_gt`` lists the ground-truth boxes with a candidate and
        ``chosen`` their matched detection per column (-1 for none);
        ``cand_det`` lists every detection that appears in a pair and
        ``assigned`` whether it is consumed in each column.
    """
    n_col = 1 if allowed is None else allowed.shape[1]
    is_start = np.ones(len(p_gt), dtype=bool)
    is_start[1:] = p_gt[1:] != p_gt[:-1]
    seg_of_pair = np.cumsum(is_start) - 1
    seg_gt = p_gt[is_start]
    n_seg = len(seg_gt)
    # The k-th box of an image (among those with a candidate) goes to round
    # k. Boxes in one round belong to different images, so they never
    # compete for a detection and can be resolved together.
    seg_img = g_img[seg_gt]
    new_img = np.ones(n_seg, dtype=bool)
    new_img[1:] = seg_img[1:] != seg_img[:-1]
    seg_pos = np.arange(n_seg)
    rank = seg_pos - np.maximum.accumulate(np.where(new_img, seg_pos, 0))
    order = np.lexsort(tuple(priority) + (seg_of_pair, rank[seg_of_pair]))
    s_seg = seg_of_pair[order]
    cand_det, s_det = np.unique(p_det[order], return_inverse=True)
    s_det = s_det.reshape(-1)
    s_allowed = None if allowed is None else allowed[order]
    assigned = np.zeros((len(cand_det), n_col), dtype=bool)
    chosen = np.full((n_seg, n_col), -1, dtype=np.int64)

    seg_start = np.flatnonzero(np.r_[True, s_seg[1:] != s_seg[:-1]])
    round_bounds = np.searchsorted(rank[s_seg], np.arange(rank.max() + 2))
    for a, b in zip(round_bounds[:-1], round_bounds[1:]):
        starts = seg_start[np.searchsorted(seg_start, a):
                           np.searchsorted(seg_start, b)]
        free = ~assigned[s_det[a:b]]
        if s_allowed is not None:
            free &= s_allowed[a:b]
        idx = np.where(free, np.arange(a, b)[:, None], _NO_MATCH)
        first = np.minimum.reduceat(idx, starts - a, axis=0)
        rows, cols = np.nonzero(first != _NO_MATCH)
        picked = first[rows, cols]
        assigned[s_det[picked], cols] = True
        seg_rows = s_seg[starts]
        chosen[seg_rows[rows], cols] = cand_det[s_det[picked]]
    return seg_gt, chosen, cand_det, assigned


def _sample_thresholds(tp_scores: np.ndarray, n_gt: int) -> np.ndarray:
    """Score thresholds for 41 evenly spaced recalls (devkit getThresholds).

    Replicates the devkit's float arithmetic, including the running sum of
    1/40, so boundary decisions are identical; each step finds the next kept
    score with one vectorised comparison instead of a per-score loop.
    """
    scores = np.sort(tp_scores)[::-1]
    n = len(scores)
    if n == 0:
        return scores
    i = np.arange(n, dtype=np.float64)
    left = (i + 1) / n_gt
    right = (i + 2) / n_gt
    right[-1] = left[-1]
    kept = []
    current = 0.0
    start = 0
    while start < n:
        skip = (right[start:] - current) < (current - left[start:])
        skip[-1] = False  # the devkit always keeps the last score
        j = start + int(np.argmin(skip))
        kept.append(j)
        current += 1.0 / (N_SAMPLE_PTS - 1.0)
        start = j + 1
    return scores[kept]


# ----------------------------------------------------------------------------
# Per class
# ----------------------------------------------------------------------------
class _ClassEval:
    """Pairs and DontCare hits of one class, shared by its difficulties."""

    def __init__(self, data: _Packed, cls: str, thr: float,
                 pair_g: np.ndarray, pair_d: np.ndarray, pair_iou: np.ndarray,
                 dc_ratio: np.ndarray):
        low = cls.lower()
        self.data = data
        self.cls_code = data.code[low]
        neigh = NEIGHBOUR_CLASS.get(low)
        self.neigh_code = data.code[neigh] if neigh else -2
        g_code, d_code = data.g_code, data.d_code
        # valid_class of the devkit: 1 own class, 0 neighbour, -1 other.
        self.g_valid = np.where(
            g_code == self.cls_code, 1,
            np.where(g_code == self.neigh_code, 0, -1))
        keep = (pair_iou > thr) & (self.g_valid[pair_g] != -1) & \
            ((d_code[pair_d] == self.cls_code) |
             (data.d_height[pair_d] < max(MIN_HEIGHT)))
        self.pair_g, self.pair_d = pair_g[keep], pair_d[keep]
        self.pair_iou = pair_iou[keep]
        self.dc_hit = dc_ratio > thr

    def precision(self, diff: int) -> np.ndarray:
        """Enveloped precision [41] of this class at difficulty ``diff``."""
        data = self.data
        min_h = MIN_HEIGHT[diff]
        # C++ fails a ground-truth box when height < min (the Python ports
        # use <=); both agree except at exactly 25.0 or 40.0 px.
        ignore = (data.g_occ > MAX_OCCLUSION[diff]) | \
            (data.g_trunc > MAX_TRUNCATION[diff]) | (data.g_height < min_h)
        g_flag = np.where(self.g_valid == 1, np.where(ignore, 1, 0),
                          np.where(self.g_valid == 0, 1, -1))
        n_gt = int(np.count_nonzero(g_flag == 0))
        # Height before class: a too-small box of any type is ignored (1)
        # and may still absorb a ground-truth box.
        d_flag = np.where(data.d_height < min_h, 1,
                          np.where(data.d_code == self.cls_code, 0, -1))
        keep = (g_flag[self.pair_g] != -1) & (d_flag[self.pair_d] != -1)
        p_g, p_d, p_iou = self.pair_g[keep], self.pair_d[keep], \
            self.pair_iou[keep]
        prec = np.zeros(N_SAMPLE_PTS)
        if len(p_g) == 0 or n_gt == 0:
            return prec
        score = data.d_score

        # 1. Collect TP scores: each box takes its highest-scoring candidate.
        # The devkit starts that search from a score of -1e7 (NO_DETECTION),
        # so a detection scoring at or below it can never be taken.
        seg_gt, chosen, _, _ = _greedy_match(
            p_g, p_d, data.g_img, (p_d, -score[p_d]),
            (score[p_d] > _NO_DETECTION)[:, None])
        det = chosen[:, 0]
        tp = (g_flag[seg_gt] == 0) & (det >= 0)
        tp[tp] = d_flag[det[tp]] == 0
        thresholds = _sample_thresholds(score[det[tp]], n_gt)
        if len(thresholds) == 0:
            return prec

        # 2. At each threshold: highest IoU wins, a valid (flag 0) detection
        # before an ignored (flag 1) one, which is taken in file order.
        pd_flag = d_flag[p_d]
        iou_key = np.where(pd_flag == 0, -p_iou, 0.0)
        allowed = score[p_d][:, None] >= thresholds[None, :]
        seg_gt, chosen, cand, assigned = _greedy_match(
            p_g, p_d, data.g_img, (p_d, iou_key, pd_flag), allowed)
        ok = (chosen >= 0) & (g_flag[seg_gt] == 0)[:, None]
        ok[ok] = d_flag[chosen[ok]] == 0
        n_tp = ok.sum(0)

        # FP: valid detections above the threshold that are neither assigned
        # nor inside a DontCare region.
        counted = (d_flag == 0) & ~self.dc_hit
        sorted_scores = np.sort(score[counted])
        n_above = len(sorted_scores) - np.searchsorted(
            sorted_scores, thresholds, side='left')
        n_fp = n_above - assigned[counted[cand]].sum(0)
        denom = n_tp + n_fp
        # The devkit divides 0 by 0 (NaN) when a threshold keeps neither a
        # TP nor an FP; this only happens in contrived cases and counts as 0.
        prec[:len(thresholds)] = np.where(
            denom > 0, n_tp / np.maximum(denom, 1), 0.0)
        return np.maximum.accumulate(prec[::-1])[::-1]


def _candidate_pairs(data: _Packed, min_thr: float, relevant_g: np.ndarray,
                     relevant_d: np.ndarray):
    """Ground truth x detection pairs of one image with IoU above min_thr.

    Returns ``(g [P], d [P], iou [P])`` ordered by image, ground truth, then
    detection.
    """
    gi = np.flatnonzero(relevant_g)
    di = np.flatnonzero(relevant_d)
    g_img, d_img = data.g_img[gi], data.d_img[di]
    n_pairs = np.cumsum(np.bincount(g_img, minlength=data.n_img) *
                        np.bincount(d_img, minlength=data.n_img))
    out_g, out_d, out_iou = [], [], []
    start, done = 0, 0
    # Work through runs of images holding about _PAIR_CHUNK pairs each, so
    # the all-pairs temporaries stay small and cache-resident.
    while start < data.n_img:
        end = max(int(np.searchsorted(n_pairs, done + _PAIR_CHUNK, 'right')),
                  start + 1)
        g0, g1 = np.searchsorted(g_img, [start, end])
        d0, d1 = np.searchsorted(d_img, [start, end])
        a, b = _pairs_within_images(g_img[g0:g1] - start,
                                    d_img[d0:d1] - start, end - start)
        g, d = gi[g0 + a], di[d0 + b]
        iou = _overlap(data.d_box[d], data.g_box[g], own_area=False)
        keep = iou > min_thr
        out_g.append(g[keep])
        out_d.append(d[keep])
        out_iou.append(iou[keep])
        done = int(n_pairs[end - 1])
        start = end
    return (np.concatenate(out_g), np.concatenate(out_d),
            np.concatenate(out_iou))


def _dontcare_ratio(data: _Packed, relevant_d: np.ndarray) -> np.ndarray:
    """Per detection [Nd]: max over DontCare boxes of inter / det area."""
    ratio = np.zeros(len(data.d_code))
    di = np.flatnonzero(relevant_d)
    ci = np.flatnonzero(data.g_code == data.code['dontcare'])
    a, b = _pairs_within_images(data.d_img[di], data.g_img[ci], data.n_img)
    if len(a) == 0:
        return ratio
    r = _overlap(data.d_box[di[a]], data.g_box[ci[b]], own_area=True)
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    ratio[di[a[starts]]] = np.maximum.reduceat(r, starts)
    return ratio


def kitti_eval_2d(gt_annos: Sequence[Mapping],
                  dt_annos: Sequence[Mapping],
                  classes: Sequence[str] = ('Car', 'Pedestrian', 'Cyclist'),
                  iou_thresholds: ThresholdSpec = None) -> Dict[str, float]:
    """KITTI 2D AP11 and AP40 per class and difficulty, as the devkit.

    Args:
        gt_annos: one dict per image: ``name`` str [N] (all KITTI types,
            ``DontCare`` included), ``truncated`` float [N], ``occluded``
            int [N], ``bbox`` float [N, 4] (x1 y1 x2 y2, pixels).
        dt_annos: one dict per image, same order: ``name`` str [M],
            ``bbox`` float [M, 4] (pixels), ``score`` float [M].
        classes: classes to evaluate; names compare case-insensitively.
        iou_thresholds: None for the devkit's (Car 0.7, Pedestrian 0.5,
            Cyclist 0.5), a dict class -> IoU overriding some of them, or one
            IoU per entry of ``classes``. A match needs IoU strictly above.

    Returns:
        Flat dict of AP in percent, e.g. ``Car_AP40_moderate`` and
        ``Car_AP11_easy`` for every class, difficulty and both AP kinds, plus
        ``Overall_*`` (the mean over ``classes``). A class without any valid
        box at a difficulty scores 0, as in the devkit's Python ports.
    """
    classes, thrs = _resolve_classes(classes, iou_thresholds)
    data = _Packed(gt_annos, dt_annos, classes)
    cls_codes = [data.code[c.lower()] for c in classes]
    neigh_codes = [data.code[NEIGHBOUR_CLASS[c.lower()]] for c in classes
                   if c.lower() in NEIGHBOUR_CLASS]
    # Only these can ever be anything but "skipped" (flag -1).
    relevant_g = np.isin(data.g_code, cls_codes + neigh_codes)
    relevant_d = np.isin(data.d_code, cls_codes) | \
        (data.d_height < max(MIN_HEIGHT))
    pair_g, pair_d, pair_iou = _candidate_pairs(data, min(thrs), relevant_g,
                                                relevant_d)
    dc_ratio = _dontcare_ratio(data, np.isin(data.d_code, cls_codes))

    ap = np.zeros((len(classes), len(DIFFICULTIES), 2))
    for ci, (cls, thr) in enumerate(zip(classes, thrs)):
        ev = _ClassEval(data, cls, thr, pair_g, pair_d, pair_iou, dc_ratio)
        for di in range(len(DIFFICULTIES)):
            prec = ev.precision(di)
            ap[ci, di, 0] = prec[0::4].sum() / 11 * 100
            ap[ci, di, 1] = prec[1:].sum() / (N_SAMPLE_PTS - 1) * 100
    out = {}
    rows = [(c, ap[i]) for i, c in enumerate(classes)]
    rows.append(('Overall', ap.mean(0)))
    for name, vals in rows:
        for di, diff in enumerate(DIFFICULTIES):
            out[f'{name}_AP11_{diff}'] = float(vals[di, 0])
            out[f'{name}_AP40_{diff}'] = float(vals[di, 1])
    return out
