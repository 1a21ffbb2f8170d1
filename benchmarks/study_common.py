"""Helpers shared by the in-train vs post-train studies.

* `finetune_cfg`: the in-train run's optimizer and lr schedule from its
  freeze epoch on, without the pruning hook: what a post-train pruned model
  fine-tunes with, so that both arms train the same total epochs.
* `summarise`: mean and sample std over seeds of every numeric field.
* `score_checkpoint` / `mean_std`: Car / Pedestrian / Cyclist AP40 moderate
  of one checkpoint under a config, and their mean ± sample std.
* `heldout_test_set` / `use_test_set`: a synthetic KITTI test set of its own
  (another generator seed, every frame tested), large enough that every
  class has more than 40 valid moderate boxes; below that the devkit caps
  AP40 (`mmprune.evaluation.functional.kitti_caps`).
* `set_input_size`: the frame every pipeline resizes and pads to.
* `train_data_root`: where the studies' training frames are generated.
* `drop_val_loop`: no validation during a study's training runs.
* `load_resume` / `write_report`: the ``--resume`` check and the JSON
  rewritten after every arm.
"""
from __future__ import annotations

import copy
import json
import os
import os.path as osp
import statistics
from typing import Dict, List, Sequence, Tuple

#: The classes every study reports, AP40 moderate.
CLASSES = ('Car', 'Pedestrian', 'Cyclist')

#: Generator seed of held-out test sets; training data uses seed 0.
HELDOUT_SEED = 1


def _shape_tag(shape: Tuple[int, int]) -> str:
    h, w = shape
    return '' if (h, w) == (128, 416) else f'_{h}x{w}'


def train_data_root(work_dir: str, n: int,
                    shape: Tuple[int, int] = (128, 416)) -> str:
    """Folder of a study's ``n`` generated frames (generator seed 0)."""
    return osp.join(work_dir, f'kitti_synth_{n}' + _shape_tag(shape))


def heldout_test_set(work_dir: str, n: int,
                     shape: Tuple[int, int] = (128, 416),
                     seed: int = HELDOUT_SEED) -> Tuple[str, str]:
    """Write (once) ``n`` synthetic frames for testing only.

    ``seed`` is the generator's (0 is the training set's, so it is refused).

    Returns:
        ``(data_root, ann_file)``; ``ann_file`` lists every frame.
    """
    from mmprune.datasets.synthetic_kitti import make_synthetic_kitti
    if seed == 0:
        raise ValueError('heldout_test_set: seed=0 draws the training '
                         'frames; expected another generator seed')
    root = osp.join(work_dir, f'kitti_synth_heldout_{n}'
                    + ('' if seed == HELDOUT_SEED else f'_seed{seed}')
                    + _shape_tag(shape))
    ann = osp.join(root, 'test_ids.txt')
    if not osp.isfile(ann):
        os.makedirs(root, exist_ok=True)
        ids = make_synthetic_kitti(root, num_images=n, img_size=tuple(shape),
                                   seed=seed)
        with open(ann, 'w') as f:
            f.write('\n'.join(ids) + '\n')
    return root, ann


def use_test_set(cfg, data_root: str, ann_file: str) -> None:
    """Point ``cfg``'s test dataloader (only) at another test set."""
    cfg.test_dataloader = copy.deepcopy(cfg.test_dataloader)
    cfg.test_dataloader.dataset.data_root = data_root
    cfg.test_dataloader.dataset.ann_file = ann_file


#: Pipeline transforms that carry the input size, and the key that holds it.
_SIZE_KEYS = {'Resize': 'scale', 'Pad': 'size', 'BorderPad': 'size'}


def drop_val_loop(cfg) -> None:
    """Train without validating; the study tests once, after training.

    A ``val_interval`` past the end does not do it: mmengine's epoch loop
    also validates at the last epoch, whatever the interval.
    """
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None


def set_input_size(cfg, shape: Tuple[int, int]) -> None:
    """Resize and pad every dataloader's frames to ``shape`` = (h, w) px.

    The demo configs resize to their ``input_size`` (416 x 128); a study at
    another ``--shape`` must train and test in that frame, the one its data
    is generated at and the post-train arms trace. ValueError if a pipeline
    has none of `_SIZE_KEYS`, so a new config cannot go unresized.
    """
    h, w = (int(v) for v in shape)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if not loader:
            continue
        pipeline = loader.dataset.pipeline
        hits = 0
        for t in pipeline:
            if t['type'] in _SIZE_KEYS:
                t[_SIZE_KEYS[t['type']]] = (w, h)  # mmcv order: (w, h)
                hits += 1
        if not hits:
            raise ValueError(
                f'{key}.dataset.pipeline: no {sorted(_SIZE_KEYS)} transform '
                f'to set the input size {h} x {w} on')


def score_checkpoint(cfg, ckpt: str, work_dir: str) -> Dict[str, float]:
    """Test ``ckpt`` with ``cfg`` (a Config, changed in place).

    Returns:
        ``{class: AP40 moderate (percent, 2 decimals)}`` for `CLASSES`.
    """
    from mmengine.runner import Runner
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    cfg.load_from = ckpt
    cfg.work_dir = work_dir
    cfg.visualizer.name = f'visualizer_{work_dir}'
    metrics = Runner.from_cfg(cfg).test()
    return {c: round(float(metrics[f'kitti/{c}_AP40_moderate']), 2)
            for c in CLASSES}


def mean_std(values: Sequence[float], digits: int = 2) -> Dict[str, float]:
    """``{'mean', 'std'}`` of ``values``; sample std (n - 1), 0 for one."""
    vals = list(values)
    return dict(mean=round(statistics.fmean(vals), digits),
                std=round(statistics.stdev(vals), digits)
                if len(vals) > 1 else 0.0)


def finetune_cfg(prune_cfg, freeze: int, length: int = None):
    """Copy of ``prune_cfg`` that trains epochs ``freeze..E`` without masks.

    ``MultiStepLR`` milestones shift by ``-freeze`` (those at or before the
    freeze are applied to the starting lr); other schedulers (warm-ups,
    which end before any freeze) are dropped. ``length`` (epochs) stretches
    that post-freeze schedule, milestones scaled with it; default
    ``E - freeze``, the in-train run's own fine-tune.
    """
    cfg = copy.deepcopy(prune_cfg)
    epochs = int(cfg.train_cfg.max_epochs)
    length = epochs - freeze if length is None else int(length)
    if length < 1:
        raise ValueError(f'finetune_cfg: length={length} epochs, expected '
                         '>= 1')
    stretch = length / (epochs - freeze)
    cfg.train_cfg.max_epochs = length
    drop_val_loop(cfg)
    scheds = cfg.param_scheduler
    if isinstance(scheds, dict):
        scheds = [scheds]
    lr = cfg.optim_wrapper.optimizer.lr
    out = []
    for s in scheds:
        if s['type'] != 'MultiStepLR':
            continue
        s = copy.deepcopy(s)
        gamma = s.get('gamma', 0.1)
        lr *= gamma ** sum(m <= freeze for m in s.milestones)
        s.milestones = [int(round((m - freeze) * stretch))
                        for m in s.milestones if m > freeze]
        s.pop('begin', None)
        s.end = length
        out.append(s)
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.param_scheduler = out
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', [])
                        if h['type'] != 'InTrainPruningHook']
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.optim_wrapper.pop('mask_optimizer', None)
    cfg.optim_wrapper.pop('mask_weight_decay', None)
    return cfg


def summarise(runs: List[dict], arms: Sequence[str]) -> Dict[str, dict]:
    """mean and sample std (n - 1) over seeds of every numeric field."""
    out = {}
    for arm in arms:
        rows = [r[arm] for r in runs if arm in r]
        if not rows:
            continue
        keys = [k for k, v in rows[0].items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]
        out[arm] = {k: mean_std((r[k] for r in rows), 3) for k in keys}
    return out


#: What a results file written before a key existed ran with.
RESUME_DEFAULTS = {'shape': [128, 416], 'num_images': 240,
                   'input_size': [128, 416]}


def load_resume(path: str, expect: dict,
                keys: Sequence[str]) -> Dict[int, dict]:
    """Runs of an earlier results file, keyed by seed; {} if none.

    SystemExit naming the key if the file's ``keys`` differ from
    ``expect``'s (a key the file lacks counts as `RESUME_DEFAULTS`).
    """
    if not osp.isfile(path):
        return {}
    with open(path) as f:
        old = json.load(f)
    for key in keys:
        have = old.get(key, RESUME_DEFAULTS.get(key))
        if have != expect[key]:
            raise SystemExit(
                f'{path}: cannot resume, its {key}={have!r} but '
                f'this run has {key}={expect[key]!r}')
    return {r['seed']: r for r in old['runs']}


def write_report(path: str, report: dict) -> dict:
    """Write ``report`` as JSON to ``path`` (folders made); return it."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(json.dumps(report, indent=1))
    return report
