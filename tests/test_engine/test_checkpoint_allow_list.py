"""Hostile checkpoints: the weights-only allow-list lets through exactly
mmengine's getattr use (``HistoryBuffer`` statistic methods), nothing else."""
import collections
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import mmprune  # noqa: F401  (installs the allow-list)

needs_allow_list = pytest.mark.skipif(
    not hasattr(torch.serialization, 'add_safe_globals'),
    reason='torch < 2.4 has no weights-only allow-list')


class _GetattrCall:
    """Pickles as the call ``getattr(target, name)`` (what an attacker
    writes into a file by hand)."""

    def __init__(self, target, name):
        self.target, self.name = target, name

    def __reduce__(self):
        return getattr, (self.target, self.name)


def _save(tmp_path, payload):
    path = str(tmp_path / 'ckpt.pth')
    torch.save({'meta': {}, 'payload': payload}, path)
    return path


@needs_allow_list
def test_mmengine_statistic_getattr_loads(tmp_path):
    path = _save(tmp_path, _GetattrCall(HistoryBuffer, 'mean'))
    out = torch.load(path, weights_only=True)
    assert out['payload'] is HistoryBuffer.mean


@needs_allow_list
@pytest.mark.parametrize('target,name', [
    (HistoryBuffer, '__init__'),          # an allowed class, other attribute
    (HistoryBuffer, '__subclasses__'),    # the classic escape route
    (np.ndarray, 'tofile'),               # another allowed global: writes files
    (collections.Counter, 'fromkeys'),    # allowed class, not HistoryBuffer
    (HistoryBuffer, 'min ')])             # near-miss spelling
def test_any_other_getattr_is_refused(tmp_path, target, name):
    path = _save(tmp_path, _GetattrCall(target, name))
    with pytest.raises(pickle.UnpicklingError, match='getattr'):
        torch.load(path, weights_only=True)
