"""Per-layer pruning report (Markdown + JSON) and plots (PNG).

``python tools/analysis_tools/prune_report.py WORK_DIR_OR_EXPORT [--out DIR]``
reads a training work dir (its config and last checkpoint, and the psi /
loss_hw curves in ``*/vis_data/scalars.json``) or an export dir
(``channels.json``) and writes ``report.md``, ``report.json``,
``kept_ratio.png`` and ``curves.png`` to ``DIR`` (default:
``WORK_DIR_OR_EXPORT/prune_report``).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    """Parse the report flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('path', help='training work dir or export dir')
    p.add_argument('--out', help='output folder')
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                   help='input size for a work dir (default: the hook '
                   'input_shape, else the first test batch)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override keys of a work dir config')
    return p.parse_args(argv)


def main(argv=None):
    """Write the report; returns ``{kind: path}`` of the files written."""
    import mmprune  # noqa: F401
    from mmprune.engine.report import collect_report, write_report
    args = parse_args(argv)
    try:
        rep = collect_report(args.path, args.shape, args.cfg_options)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'prune_report: error: {e}')
    out = args.out or osp.join(args.path, 'prune_report')
    paths = write_report(rep, out)
    t = rep.totals()
    print(f'psi = {rep.psi:.4f}; MACs {t["macs_dense"] / 1e9:.4f} G -> '
          f'{t["macs"] / 1e9:.4f} G over {len(rep.layers)} layers; '
          f'{len(rep.scalars)} logged points')
    for k, v in paths.items():
        print(f'  {k}: {v}')
    return paths


if __name__ == '__main__':
    main()
