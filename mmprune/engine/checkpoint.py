"""Make mmengine 0.10 runner checkpoints loadable under torch >= 2.6.

From torch 2.6, ``torch.load`` defaults to ``weights_only=True``: the
unpickler refuses every global that is not on an allow-list. mmengine's
runner checkpoints hold more than tensors: the MessageHub state
(``HistoryBuffer`` objects with numpy arrays inside), numpy scalars in the
runtime info and ``collections.Counter`` in MultiStepLR's state. So
``--resume``, ``load_from`` and ``tools/test.py CKPT`` fail with an
``UnpicklingError``.

We do not switch the safety off (``weights_only=False`` would run arbitrary
code from any file handed to us). We allow-list exactly the types mmengine
writes, with ``torch.serialization.add_safe_globals``. A checkpoint that holds
anything else still fails loudly, naming the refused global.
"""
from __future__ import annotations

import collections
import importlib
import pickle
from typing import List

import numpy as np
import torch


def _history_buffer_getattr(obj, name):
    """``getattr`` limited to the statistic methods of ``HistoryBuffer``.

    A HistoryBuffer pickles its statistic methods (``min``, ``max``,
    ``mean``, ``current``) as ``getattr(HistoryBuffer, 'min')``. Allow-listing
    the builtin ``getattr`` would let a file reach any attribute of any
    allowed object, so the unpickler gets this narrow stand-in instead.
    """
    from mmengine.logging import HistoryBuffer
    allowed = {'min', 'max', 'current', 'mean'}
    allowed.update(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and isinstance(name, str) and name in allowed \
            and callable(getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); mmprune allows '
        'getattr only for HistoryBuffer statistic methods')


def mmengine_checkpoint_types() -> List[object]:
    """The globals found in mmengine 0.10 runner checkpoints, beyond tensors.

    Found by unpickling real runner checkpoints (see the tests) and keeping
    every global the weights-only unpickler refused.
    """
    from mmengine.logging import HistoryBuffer

    # numpy 2 moved ``numpy.core`` to ``numpy._core``; pickles name the
    # module of the numpy that wrote them, which is the one installed here.
    multiarray = importlib.import_module(
        'numpy._core.multiarray' if int(np.__version__.split('.')[0]) >= 2 else
        'numpy.core.multiarray')
    types = [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        collections.Counter,
        np.ndarray,
        np.dtype,
        multiarray._reconstruct,
        multiarray.scalar,
    ]
    # numpy >= 1.25 pickles dtypes through their classes, e.g.
    # numpy.dtypes.Float64DType.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        types += [getattr(dtypes, n) for n in dir(dtypes)
                  if n.endswith('DType')]
    return types


def allow_mmengine_checkpoints() -> bool:
    """Allow-list mmengine's checkpoint types for ``torch.load``.

    Returns ``False`` (and changes nothing) on a torch without
    ``add_safe_globals``; such versions load with ``weights_only=False`` by
    default and need no allow-list.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:
        return False
    add(mmengine_checkpoint_types())
    return True
