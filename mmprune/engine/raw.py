"""The raw network of an mmengine model: what pruning traces and counts.

The raw network is ``model(inputs, data_samples, mode='tensor')``: for an
mmdet detector its backbone, neck and head up to the head's tensors
(``BaseDetector._forward``), for an mmpretrain classifier the logits
(``ImageClassifier`` in ``'tensor'`` mode). The pruning hook, the export,
the MAC counter, the post-train baseline and the ONNX export all go through
`raw_forward`, so they see the same network.
"""
from typing import List, Optional

from torch import Tensor, nn

__all__ = ['flatten_outputs', 'raw_forward']


def raw_forward(model: nn.Module, inputs: Tensor,
                data_samples: Optional[list] = None):
    """Outputs of ``model``'s raw network on a preprocessed ``inputs``."""
    return model(inputs, data_samples, mode='tensor')


def flatten_outputs(out) -> List[Tensor]:
    """Tensors of a nested tuple / list / dict of head outputs, in order."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in flatten_outputs(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    return []
