"""Export a masked checkpoint as a physically smaller plain mmdet model.

``python tools/export_pruned.py CONFIG CKPT --out DIR`` writes
``DIR/model.pth``, ``DIR/config.py`` and ``DIR/channels.json``; test it with
``python tools/test.py DIR/config.py DIR/model.pth``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    """Parse the export flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config', help='the config the checkpoint was trained with')
    p.add_argument('checkpoint', help='checkpoint with prune_masks.* keys')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                   help='trace input size (default: the hook input_shape, '
                   'else the first test batch)')
    p.add_argument('--no-verify', action='store_true',
                   help='skip comparing the exported outputs with the masked'
                   ' model (saves two forward passes)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys, e.g. '
                   'test_dataloader.dataset.data_root=data/kitti')
    return p.parse_args(argv)


def main(argv=None):
    """Run the export; returns the `ExportResult` (exits with a message on
    a checkpoint or config that cannot be exported)."""
    import mmprune  # noqa: F401  (registers components, checkpoint types)
    from mmprune.engine.export import ExportError, export_pruned
    args = parse_args(argv)
    try:
        return export_pruned(args.config, args.checkpoint, args.out,
                             cfg_options=args.cfg_options,
                             input_shape=args.shape,
                             verify=not args.no_verify)
    except (ExportError, FileNotFoundError) as e:
        sys.exit(f'export_pruned: error: {e}')


if __name__ == '__main__':
    main()
