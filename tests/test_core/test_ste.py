import pytest
import torch

from mmprune.core import binarize


def test_forward_thresholds_at_threshold():
    m = torch.tensor([-0.5, 0.0, 0.3, 0.5, 0.7, 1.0, 1.5])
    assert binarize(m).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert binarize(m, threshold=0.8).tolist() == [0, 0, 0, 0, 0, 1, 1]


def test_backward_passes_only_inside_open_unit_interval():
    m = torch.tensor([-0.5, 0.0, 0.3, 0.5, 0.7, 1.0, 1.5], requires_grad=True)
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    (binarize(m) * upstream).sum().backward()
    # Outside, at 0 and at 1 the gradient is cut; inside it passes unchanged.
    assert m.grad.tolist() == [0.0, 0.0, 3.0, 4.0, 5.0, 0.0, 0.0]


def test_keeps_dtype_and_rejects_integers():
    assert binarize(torch.ones(3, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(TypeError, match='floating point'):
        binarize(torch.ones(3, dtype=torch.long))
