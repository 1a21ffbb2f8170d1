"""Models that mmdet's MODELS registry builds: DLA, DLA-Up, masks, PrunedModel."""
from . import backbones, detectors, layers, necks, plugins  # noqa: F401
