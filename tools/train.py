"""Train a detector: ``python tools/train.py CONFIG [--work-dir DIR] [--resume]``."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmprune.engine.runner.cli import train_main  # noqa: E402

if __name__ == '__main__':
    train_main()
