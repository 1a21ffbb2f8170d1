"""ONNX export of a detector's raw network, checked with ONNX Runtime.

The raw network is ``model._forward(x)``: backbone, neck and head, up to the
head's output maps (``[1, 3, H, W] -> tuple of [1, C_i, H_i, W_i]``), as
`export_pruned` verifies it. Decoding and NMS stay in Python (mmdet's
``predict_by_feat``), as in mmdeploy's split. The same code serves the dense
and the pruned model, so their files and ONNX Runtime latencies compare
directly.

Why this route: ``torch.onnx.export`` with the TorchScript exporter
(``dynamo=False``, opset 17) needs only the ``onnx`` package and traces
mmdet heads as they are; ONNX Runtime is the CPU runtime users deploy to.
Deformable convs: our ``DCNv2Torch`` is built from ``F.grid_sample`` and
exports as ONNX ``GridSample`` (opset >= 16), so the flagship exports with
no custom op; mmcv's compiled DCN has no ONNX op and is refused by name.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mmprune.models.layers.deform_conv import dcn_as_torch_ops

from .raw import flatten_outputs, raw_forward

#: ONNX opset of the export (GridSample needs >= 16).
OPSET = 17


class RawNetwork(nn.Module):
    """``model._forward(x)`` as a flat tuple of tensors, for tracing."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor):
        return tuple(flatten_outputs(raw_forward(self.model, x)))


def check_exportable(model: nn.Module) -> None:
    """Refuse what the raw-network export cannot represent, by name."""
    if getattr(model, 'roi_head', None) is not None:
        raise ValueError(
            f'{type(model).__name__} is a two-stage detector: its RoI head '
            'runs on proposals decoded in Python, so the raw network ends at '
            'the RPN. ONNX export here covers single-stage detectors')
    mmcv_dcn = [name for name, m in model.named_modules()
                if type(m).__module__.startswith('mmcv.ops')
                and 'deform' in type(m).__name__.lower()]
    if mmcv_dcn:
        raise ValueError(
            "mmcv's compiled deformable convs have no ONNX op: "
            f'{mmcv_dcn[:5]}{" ..." if len(mmcv_dcn) > 5 else ""}. Build '
            "the neck with DCNv2Torch (the flagship's; exports as GridSample)"
            ' or with plain convs (use_dcn=False)')


def export_onnx(model: nn.Module, shape: Sequence[int], path: str,
                opset: int = OPSET) -> List[Tensor]:
    """Write ``model``'s raw network for a ``[1, 3, H, W]`` input to ``path``.

    Returns the PyTorch outputs on the fixed check input
    (`check_input(shape)`), for `compare_onnx`.
    """
    check_exportable(model)
    net = RawNetwork(model).eval()
    x = check_input(shape)
    with torch.no_grad():
        ref = list(net(x))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with dcn_as_torch_ops():
        torch.onnx.export(
            net, (x, ), path, dynamo=False, opset_version=opset,
            input_names=['input'],
            output_names=[f'output_{i}' for i in range(len(ref))])
    return ref


def check_input(shape: Sequence[int]) -> Tensor:
    """A fixed random ``[1, 3, H, W]`` input in roughly normalised units."""
    h, w = (int(v) for v in shape)
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))


def _session(path: str, threads: int):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts,
                                providers=['CPUExecutionProvider'])


def compare_onnx(path: str, ref: List[Tensor], shape: Sequence[int],
                 threads: int = 1) -> List[Dict[str, float]]:
    """ONNX Runtime's outputs against ``ref``: max abs diff per output."""
    sess = _session(path, threads)
    x = check_input(shape).numpy()
    outs = sess.run(None, {'input': x})
    if len(outs) != len(ref):
        raise RuntimeError(f'{path}: ONNX Runtime returned {len(outs)} '
                           f'outputs, PyTorch {len(ref)}')
    return [dict(index=i, shape=list(r.shape),
                 max_abs=float(np.abs(o - r.numpy()).max()),
                 scale=float(r.abs().max()))
            for i, (o, r) in enumerate(zip(outs, ref))]


def onnx_latency_ms(path: str, shape: Sequence[int], runs: int = 20,
                    warmup: int = 3, threads: int = 1) -> float:
    """Median wall time of one ONNX Runtime CPU run, in ms (batch 1)."""
    sess = _session(path, threads)
    x = {'input': check_input(shape).numpy()}
    for _ in range(warmup):
        sess.run(None, x)
    times = []
    for _ in range(max(int(runs), 1)):
        t = time.perf_counter()
        sess.run(None, x)
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


__all__ = ['OPSET', 'RawNetwork', 'check_exportable', 'export_onnx',
           'check_input', 'compare_onnx', 'onnx_latency_ms']
