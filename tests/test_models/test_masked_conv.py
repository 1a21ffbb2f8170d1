"""The registered MaskedConv2d plugin: masks in forward, equal to hooks."""
import pytest
import torch
from mmcv.cnn import ConvModule
from mmengine.registry import init_default_scope
from torch import nn

from mmprune.core import discover_groups, install_masks
from mmprune.models.plugins import MaskedConv2d


class Net(nn.Module):
    """conv -> relu -> conv (no norms: the convs are the mask sites)."""

    def __init__(self, conv_cfg=None):
        super().__init__()
        self.a = ConvModule(3, 16, 3, padding=1, conv_cfg=conv_cfg)
        self.b = ConvModule(16, 8, 3, padding=1, conv_cfg=conv_cfg)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.out(self.b(self.a(x)))


def _pair():
    init_default_scope('mmdet')
    torch.manual_seed(0)
    plain = Net()
    plugin = Net(conv_cfg=dict(type='MaskedConv2d'))
    plugin.load_state_dict(plain.state_dict())  # same keys
    return plain.eval(), plugin.eval()


def test_masked_conv_is_conv2d_until_a_mask_is_attached():
    plain, plugin = _pair()
    assert isinstance(plugin.a.conv, MaskedConv2d)
    x = torch.rand(2, 3, 12, 12)
    assert torch.equal(plain(x), plugin(x))
    with pytest.raises(TypeError, match='expects a callable'):
        plugin.a.conv.set_channel_mask('mask')


def test_plugin_sites_mask_in_forward_and_equal_hook_masking():
    plain, plugin = _pair()
    x = torch.rand(2, 3, 12, 12)
    outs = []
    for model in (plain, plugin):
        masks = install_masks(model, discover_groups(model, x))
        torch.manual_seed(1)
        with torch.no_grad():
            for name in masks.group_names:
                m = masks.mask(name).mask
                m.copy_(torch.rand(m.shape))
        outs.append((model(x), masks))
    (y_hook, _), (y_plugin, masks) = outs
    assert torch.allclose(y_hook, y_plugin, atol=1e-6)
    plugged = [m for m in plugin.modules()
               if isinstance(m, MaskedConv2d) and m.masked]
    assert len(plugged) == 2 and all(not m._forward_hooks for m in plugged)
    masks.remove()
    assert not any(m.masked for m in plugged)
    # Unmasked, the output changes: the masks had channels off.
    assert not torch.allclose(plugin(x), y_plugin)
