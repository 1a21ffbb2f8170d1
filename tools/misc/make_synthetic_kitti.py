"""Write the synthetic KITTI-layout demo dataset.

``python tools/misc/make_synthetic_kitti.py data/kitti_synth --num-images 200``
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmprune.datasets.synthetic_kitti import make_synthetic_kitti  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('root', help='output folder (KITTI layout under it)')
    p.add_argument('--num-images', type=int, default=240)
    p.add_argument('--height', type=int, default=128)
    p.add_argument('--width', type=int, default=416)
    p.add_argument('--max-objects', type=int, default=6)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--skip-existing', action='store_true',
                   help='do nothing when ROOT/training/label_2 exists')
    args = p.parse_args()
    if args.skip_existing and osp.isdir(osp.join(args.root, 'training',
                                                 'label_2')):
        print(f'{args.root}: synthetic KITTI data already there')
        return
    ids = make_synthetic_kitti(args.root, args.num_images,
                               (args.height, args.width), args.max_objects,
                               args.seed)
    print(f'{args.root}: wrote {len(ids)} synthetic KITTI frames')


if __name__ == '__main__':
    main()
