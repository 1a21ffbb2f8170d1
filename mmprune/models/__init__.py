"""Models that mmdet's MODELS registry builds: DLA, DLA-Up, CifarResNet, the
image classifier, masks, PrunedModel."""
from . import backbones, classifiers, detectors, layers, necks, plugins  # noqa: F401
