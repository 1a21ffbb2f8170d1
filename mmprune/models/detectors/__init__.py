"""Detectors: ``PrunedModel`` rebuilds an exported, physically pruned model."""
from .pruned_model import build_pruned_model

__all__ = ['build_pruned_model']
