"""The studies' held-out test set: its own frames, uncapped, test only."""
import os
import os.path as osp
import sys

import pytest
from mmengine.config import Config

from mmprune.evaluation.functional import valid_gt_counts

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))

from study_common import (  # noqa: E402
    heldout_test_set,
    set_input_size,
    use_test_set,
)


def _read_labels(root, ids):
    """KITTI label files parsed by hand into kitti_eval_2d's GT dicts."""
    annos = []
    for i in ids:
        name, trunc, occ, box = [], [], [], []
        path = osp.join(root, 'training', 'label_2', f'{i}.txt')
        with open(path) as f:
            for line in f:
                tok = line.split()
                name.append(tok[0])
                trunc.append(float(tok[1]))
                occ.append(int(tok[2]))
                box.append([float(t) for t in tok[4:8]])
        annos.append(dict(name=name, truncated=trunc, occluded=occ,
                          bbox=box))
    return annos


def test_heldout_set_is_new_frames_listed_once(tmp_path):
    root, ann = heldout_test_set(str(tmp_path), 6, (64, 192))
    with open(ann) as f:
        ids = f.read().split()
    assert ids == [f'{i:06d}' for i in range(6)]
    img = osp.join(root, 'training', 'image_2', '000000.png')
    stamp = os.stat(img).st_mtime_ns
    # A second call reuses the files instead of writing them again.
    assert heldout_test_set(str(tmp_path), 6, (64, 192)) == (root, ann)
    assert os.stat(img).st_mtime_ns == stamp
    # Not the training set's frames: the training generator (seed 0) labels
    # the same frame ids differently.
    from mmprune.datasets.synthetic_kitti import make_synthetic_kitti
    train = tmp_path / 'train'
    make_synthetic_kitti(str(train), num_images=6, img_size=(64, 192))
    assert _read_labels(root, ids) != _read_labels(str(train), ids)


def test_240_heldout_frames_leave_no_moderate_level_capped(tmp_path):
    root, ann = heldout_test_set(str(tmp_path), 240)
    with open(ann) as f:
        ids = f.read().split()
    counts = valid_gt_counts(_read_labels(root, ids),
                             ('Car', 'Pedestrian', 'Cyclist'))
    for cls in ('Car', 'Pedestrian', 'Cyclist'):
        # More than 40 boxes: the devkit's AP40 can reach 100.
        assert counts[(cls, 'moderate')] > 40, (cls, counts)


def test_use_test_set_moves_only_the_test_loader(tmp_path):
    from mmdet.registry import DATASETS

    import mmprune  # noqa: F401  (registers KittiDataset)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo',
                                   'centernet_dla34_kitti_demo.py'))
    val = {k: v for k, v in cfg.val_dataloader.dataset.items()
           if k != 'pipeline'}
    root, ann = heldout_test_set(str(tmp_path), 5, (64, 192))
    use_test_set(cfg, root, ann)
    # The demo config aliases test to val; validation must not move.
    assert {k: v for k, v in cfg.val_dataloader.dataset.items()
            if k != 'pipeline'} == val
    ds_cfg = cfg.test_dataloader.dataset.copy()
    ds_cfg.pipeline = []
    ds = DATASETS.build(ds_cfg)
    # Every held-out frame is tested, not the val share of a ratio split.
    assert len(ds) == 5
    assert all(root in ds[i]['img_path'] for i in range(5))


def test_heldout_seed_picks_another_set_and_refuses_the_training_seed(
        tmp_path):
    first = heldout_test_set(str(tmp_path), 3, (64, 192))
    other = heldout_test_set(str(tmp_path), 3, (64, 192), seed=7)
    assert first[0] != other[0]
    ids = ['000000', '000001', '000002']
    assert _read_labels(first[0], ids) != _read_labels(other[0], ids)
    with pytest.raises(ValueError, match='seed=0 draws the training'):
        heldout_test_set(str(tmp_path), 3, (64, 192), seed=0)


def test_heldout_retest_scores_a_checkpoint_on_the_heldout_set(tmp_path):
    """The retest CLI end to end on an untrained demo model, 4 frames."""
    import json
    import subprocess

    import torch
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import mmprune  # noqa: F401
    init_default_scope('mmdet')
    cfg_path = osp.join(ROOT, 'configs', 'demo',
                        'centernet_dla34_kitti_demo.py')
    model = MODELS.build(Config.fromfile(cfg_path).model)
    ckpt = tmp_path / 'untrained.pth'
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    script = osp.join(ROOT, 'benchmarks', 'heldout_retest.py')
    out = tmp_path / 'retest.json'
    base = [sys.executable, script, '--config', cfg_path,
            '--work-dir', str(tmp_path / 'w'), '--heldout', '4']
    proc = subprocess.run(base + ['--ckpts', str(ckpt), str(ckpt),
                                  '--out', str(out)],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep['heldout'] == 4 and rep['heldout_seed'] == 1
    assert len(rep['runs']) == 2
    for cls in ('Car', 'Pedestrian', 'Cyclist'):
        a, b = (r[cls] for r in rep['runs'])
        assert 0.0 <= a <= 100.0 and a == b, cls
        # The same checkpoint twice: mean is its score, spread is zero.
        assert rep['summary'][cls] == dict(mean=a, std=0.0), cls
    assert osp.isfile(tmp_path / 'w' / 'kitti_synth_heldout_4' / 'test_ids.txt')


def test_set_input_size_trains_and_tests_in_the_given_frame(tmp_path):
    """Frames of another size come out of both pipelines at that size."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import mmprune  # noqa: F401
    from mmprune.datasets.synthetic_kitti import make_synthetic_kitti
    init_default_scope('mmdet')
    make_synthetic_kitti(str(tmp_path), num_images=4, img_size=(96, 320))
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo',
                                   'centernet_dla34_kitti_demo.py'))
    set_input_size(cfg, (96, 320))
    for key in ('train_dataloader', 'test_dataloader'):
        ds_cfg = cfg[key].dataset.copy()
        ds_cfg.data_root = str(tmp_path)
        item = DATASETS.build(ds_cfg)[0]
        # (C, H, W): the 96 x 320 frame, not the config's 128 x 416.
        assert tuple(item['inputs'].shape) == (3, 96, 320), key
    bare = Config(dict(train_dataloader=dict(dataset=dict(
        pipeline=[dict(type='LoadImageFromFile')]))))
    with pytest.raises(ValueError, match='train_dataloader.dataset.pipeline'):
        set_input_size(bare, (96, 320))


def test_finetune_cfg_shifts_and_stretches_the_post_freeze_schedule():
    """Demo prune config: 12 epochs, lr 1e-3, x0.1 at epoch 10."""
    from study_common import finetune_cfg
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo',
                                   'centernet_dla34_prune50_demo.py'))
    # Epochs 8..12: the step at 10 comes 2 epochs in, at the same lr.
    same = finetune_cfg(cfg, 8)
    assert same.train_cfg.max_epochs == 4
    assert [s.milestones for s in same.param_scheduler] == [[2]]
    assert same.optim_wrapper.optimizer.lr == pytest.approx(1e-3)
    assert not [h for h in same.custom_hooks
                if h['type'] == 'InTrainPruningHook']
    # Twice as long: 8 epochs, the step halfway, at 4.
    long = finetune_cfg(cfg, 8, 8)
    assert long.train_cfg.max_epochs == 8
    assert [s.milestones for s in long.param_scheduler] == [[4]]
    assert long.param_scheduler[0].end == 8
    # Frozen after the step: it starts at the stepped lr, with no steps.
    late = finetune_cfg(cfg, 10)
    assert late.optim_wrapper.optimizer.lr == pytest.approx(1e-4)
    assert [s.milestones for s in late.param_scheduler] == [[]]
    with pytest.raises(ValueError, match='length=0'):
        finetune_cfg(cfg, 8, 0)


def test_a_smaller_input_size_keeps_the_labels_frame(tmp_path):
    """--input-size 64 208 on 128 x 416 data: the net sees half-size frames
    and boxes, and the test pipeline records the factor that scores its
    boxes back in the labels' frame (where KITTI's 25-px limit applies)."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import mmprune  # noqa: F401
    from mmprune.datasets.synthetic_kitti import make_synthetic_kitti
    init_default_scope('mmdet')
    ids = make_synthetic_kitti(str(tmp_path), num_images=2,
                               img_size=(128, 416))
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo',
                                   'centernet_dla34_kitti_demo.py'))
    set_input_size(cfg, (64, 208))
    train = cfg.train_dataloader.dataset.copy()
    train.data_root = str(tmp_path)
    # Without the random affine and flip, the boxes are only resized.
    train.pipeline = [t for t in train.pipeline
                      if t['type'] not in ('RandomAffine', 'RandomFlip')]
    ds = DATASETS.build(train)
    item = ds[0]
    assert tuple(item['inputs'].shape) == (3, 64, 208)
    # The label file's 2D boxes (columns 4..7) of the frame's classes,
    # halved by hand.
    name = osp.basename(ds.get_data_info(0)['img_path']).split('.')[0]
    assert name in ids
    classes = ds.metainfo['classes']
    want = []
    with open(osp.join(tmp_path, 'training', 'label_2', f'{name}.txt')) as f:
        for line in f:
            tok = line.split()
            if tok[0] in classes:
                want.append([float(v) / 2 for v in tok[4:8]])
    got = item['data_samples'].gt_instances.bboxes.tensor.tolist()
    assert len(got) == len(want) > 0
    for g, w in zip(sorted(got), sorted(want)):
        assert g == pytest.approx(w, abs=1e-3)

    test = cfg.test_dataloader.dataset.copy()
    test.data_root = str(tmp_path)
    (tmp_path / 'all.txt').write_text('\n'.join(ids) + '\n')
    test.ann_file = 'all.txt'
    meta = DATASETS.build(test)[0]['data_samples'].metainfo
    assert tuple(meta['ori_shape']) == (128, 416)
    assert tuple(meta['img_shape']) == (64, 208)
    assert tuple(meta['scale_factor']) == pytest.approx((0.5, 0.5))


def test_post_train_trace_pads_like_the_preprocessor():
    """A 64 x 208 frame is traced as 64 x 224, the batch the data
    preprocessor (pad_size_divisor 32) gives the net; DLA itself refuses
    the unpadded 64 x 208."""
    import torch
    from detection_study import trace_input
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import mmprune  # noqa: F401
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo',
                                   'centernet_dla34_kitti_demo.py'))
    model = MODELS.build(cfg.model).eval()
    inputs, sample = trace_input(cfg, 64, 208)
    assert tuple(inputs.shape) == (1, 3, 64, 224)
    assert sample.metainfo['batch_input_shape'] == (64, 224)
    assert sample.metainfo['img_shape'] == (64, 208)
    with torch.no_grad():
        model(inputs, [sample], mode='tensor')
        with pytest.raises(ValueError, match='multiples of 32'):
            model.backbone(torch.zeros(1, 3, 64, 208))
