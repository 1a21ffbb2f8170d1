"""Drop-in breadth: 17 of mmdet's shipped detector families through the
README's snippet, export and an equal-outputs check; prints one JSON row per
family (the README's family table).

Each family is mmdet 3.3's config as shipped (inside the wheel), with tiny
generated data, 64 px input (128 for FCOS-style heads) and 4 iterations:
the hook prunes to psi 0.5 (window [1, 3)), ``export_pruned`` writes the
small model, and the row records what was pruned, the prunable share of
MACs (1 - the lowest psi that the fixed layers and ``min_channels``
allow), the worst per-output difference between the exported and the
masked model on a fresh random input (over ``max(1, max |output|)``, the
export's own criterion, which must stay <= 1e-4), the exported model's
MACs counted by forward hooks over psi times the dense count, and what is
kept and why. Random weights: this measures structure, not accuracy.

    python benchmarks/breadth.py --out work_dirs/breadth.json
    python benchmarks/breadth.py --quick          # two families, ~30 s
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.breadth import run_family  # noqa: E402
from tests.dropin import DETECTORS, FAMILIES  # noqa: E402

QUICK = ['retinanet_regnetx_800mf', 'solov2_r50']


def row(r: dict, secs: float) -> dict:
    """The JSON row of one `run_family` result."""
    # The export's own criterion: |diff| over max(1, the output's max |y|).
    err = max(d['max_abs'] / max(1.0, d['scale'])
              for d in r['fresh_input_diffs'])
    return dict(
        family=r['name'], input=r['size'], groups=r['groups'],
        tied_groups=r['tied_groups'], channels=r['channels'],
        prunable_share=r['prunable_share'], psi=round(r['psi'], 4),
        params_ratio=round(r['params_ratio'], 4),
        export_max_diff=float(f'{err:.3g}'),
        macs_counted_over_psi=round(r['macs_counted'] / r['macs_expected'],
                                    5),
        kept_layers=r['kept_layers'], kept=r['kept'],
        unsupported=r['unsupported'], seconds=round(secs, 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true',
                    help=f'only {", ".join(QUICK)}')
    ap.add_argument('--only', nargs='*', help='family names')
    ap.add_argument('--out', help='also write the JSON list here')
    args = ap.parse_args(argv)
    names = args.only or (QUICK if args.quick else
                          list(DETECTORS) + list(FAMILIES))
    unknown = [n for n in names if n not in DETECTORS and n not in FAMILIES]
    if unknown:
        ap.error(f'unknown families {unknown}; known: '
                 f'{sorted(DETECTORS) + sorted(FAMILIES)}')
    rows = []
    for name in names:
        t = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(row(run_family(name, tmp), time.time() - t))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
