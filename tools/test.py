"""Test a detector: ``python tools/test.py CONFIG CHECKPOINT [--work-dir DIR]``."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmprune.engine.runner.cli import test_main  # noqa: E402

if __name__ == '__main__':
    test_main()
