"""DDP over gloo on CPU: SyncBN layers run as per-rank BN, with a warning.

torch's ``SyncBatchNorm`` refuses CPU tensors once the world has more than
one rank ("expected input tensor to be on GPU"). mmengine already reverts
SyncBN to BN for a single-process run; for a CPU multi-process run (a
debugging run of a GPU config, or the tests) this wrapper does the same
before DDP registers the parameters, and says so in the log. Statistics
are then per rank, as in plain BN; the masks are still identical on every
rank, since their gradients are all-reduced like any parameter's.
"""
from __future__ import annotations

import logging

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for gloo on CPU (``device_ids=None``)."""

    def __init__(self, module: nn.Module, **kwargs) -> None:
        names = [n for n, m in module.named_modules()
                 if isinstance(m, nn.SyncBatchNorm)]
        if names:
            module = revert_sync_batchnorm(module)
            print_log(
                f'{len(names)} SyncBN layer(s) (first: {names[0]}) run as '
                'per-rank BatchNorm: torch syncs batch statistics on GPUs '
                'only', logger='current', level=logging.WARNING)
        kwargs.setdefault('device_ids', None)
        super().__init__(module=module, **kwargs)
