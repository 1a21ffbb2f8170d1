"""KITTI 2D evaluation: functional AP math and the registered metric."""
from . import functional, metrics  # noqa: F401
