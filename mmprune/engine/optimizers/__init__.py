"""Registered optimizer wrappers."""
from .prune_optim_wrapper import PruneAmpOptimWrapper, PruneOptimWrapper

__all__ = ['PruneOptimWrapper', 'PruneAmpOptimWrapper']
