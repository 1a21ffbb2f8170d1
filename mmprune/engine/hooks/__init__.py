"""Registered MMEngine hooks."""
from .in_train_pruning_hook import MASKS_ATTR, InTrainPruningHook, trace_detector

__all__ = ["InTrainPruningHook", "MASKS_ATTR", "trace_detector"]
