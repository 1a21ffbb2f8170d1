"""mmprune: in-train pruning for MMDetection 3.x.

``import mmprune`` registers every component into mmdet's registries, and
allow-lists the object types that mmengine writes into its checkpoints so that
``torch.load(weights_only=True)`` (the default from torch 2.6) can read them.
"""
__version__ = '0.1.0'

from . import datasets, engine, evaluation, models  # noqa: F401,E402
