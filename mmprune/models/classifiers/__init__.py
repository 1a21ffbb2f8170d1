"""Classifiers in mmdet's MODELS registry (the classification experiments)."""
from .image_classifier import ImageClassifier

__all__ = ['ImageClassifier']
