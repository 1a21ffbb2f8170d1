"""Layers that configs name by type (``dcn_cfg=dict(type='DCNv2Torch')``)."""
from .deform_conv import ModulatedDeformConv2dPackTorch, use_torch_dcn

__all__ = ['ModulatedDeformConv2dPackTorch', 'use_torch_dcn']
