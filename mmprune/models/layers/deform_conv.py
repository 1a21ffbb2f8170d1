"""``DCNv2Torch``: mmcv's DCNv2 layer with a fast CPU forward.

Same class contract as ``mmcv.ops.ModulatedDeformConv2dPack`` (``DCNv2``):
same constructor, parameters, state-dict keys and offset-conv init, so
checkpoints move freely between the two and the pruning tracer and surgery
treat it as the same layer. Only the CPU forward differs: it runs
`mmprune.core.modulated_deform_conv2d` (``grid_sample`` + matmul, 3-5x faster
than mmcv's CPU kernel at 1 thread, ``benchmarks/dcn_cpu.py``, and shrinking
with the kept channels).
On CUDA it calls mmcv's kernel, so GPU training is unchanged. Under
``torch.jit`` tracing it also calls mmcv's op, so a trace holds one
deformable-conv node (which mmengine's ``FlopAnalyzer`` handle in
`mmprune.engine.report` counts, and which mmcv's ONNX symbolic exports)
rather than the sampling and matmuls of the torch path.

Why not always mmcv: the exported model of a pruned CenterNet DLA-34 is meant
to run on CPU too, and there mmcv's DCN dominates the latency (see README,
"Latency").
"""
import contextlib

import torch
import torch.nn as nn
from mmcv.ops import ModulatedDeformConv2dPack
from mmdet.registry import MODELS
from torch import Tensor

from mmprune.core.deform_conv import modulated_deform_conv2d

__all__ = ['ModulatedDeformConv2dPackTorch', 'use_torch_dcn',
           'dcn_as_torch_ops']

# Set by `dcn_as_torch_ops`: trace the torch form too (ONNX export).
_TRACE_TORCH_OPS = False


@contextlib.contextmanager
def dcn_as_torch_ops():
    """Within: DCNv2Torch traces as torch ops (``GridSample`` in ONNX).

    Outside, jit tracing (mmengine's FlopAnalyzer) sees mmcv's kernel, whose
    op its DCN handle counts.
    """
    global _TRACE_TORCH_OPS
    old, _TRACE_TORCH_OPS = _TRACE_TORCH_OPS, True
    try:
        yield
    finally:
        _TRACE_TORCH_OPS = old


@MODELS.register_module('DCNv2Torch')
class ModulatedDeformConv2dPackTorch(ModulatedDeformConv2dPack):
    """DCNv2 ``[N, C_in, H, W] -> [N, C_out, H_out, W_out]``; mmcv's kernel on
    CUDA and under jit tracing, `mmprune.core.modulated_deform_conv2d`
    otherwise.

    Args: as ``mmcv.ops.ModulatedDeformConv2dPack``.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Offsets and sigmoid masks from ``conv_offset``, then DCNv2."""
        if x.is_cuda or (torch.jit.is_tracing() and not _TRACE_TORCH_OPS):
            return super().forward(x)
        out = self.conv_offset(x)
        dy_dx, mask = out.split(
            [out.shape[1] * 2 // 3, out.shape[1] // 3], dim=1)
        return modulated_deform_conv2d(
            x, dy_dx, mask.sigmoid(), self.weight, self.bias, self.stride,
            self.padding, self.dilation, self.groups, self.deform_groups)


def use_torch_dcn(model: nn.Module) -> int:
    """Switch every plain ``mmcv.ops.ModulatedDeformConv2dPack`` in ``model``
    to `ModulatedDeformConv2dPackTorch`, in place.

    Parameters, buffers and hooks stay as they are (only the class changes),
    so outputs agree with mmcv's to float rounding. Use it to run any mmdet
    model with DCNv2 (e.g. mmdet's CenterNet R18-DCNv2) fast on CPU.

    Returns:
        int: How many layers were switched.
    """
    n = 0
    for m in model.modules():
        if type(m) is ModulatedDeformConv2dPack:
            m.__class__ = ModulatedDeformConv2dPackTorch
            n += 1
    return n
