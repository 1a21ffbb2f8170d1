"""The registered MaskedBN plugin: a DLA built with it prunes like hooks do."""
import pytest
import torch
from mmengine.registry import init_default_scope

from mmprune.core import discover_groups, install_masks
from mmprune.models.backbones import DLA
from mmprune.models.plugins import MaskedBatchNorm2d


def _pair():
    init_default_scope('mmdet')
    torch.manual_seed(0)
    plain = DLA(depth=34, out_indices=(5, ))
    torch.manual_seed(0)
    plugin = DLA(depth=34, out_indices=(5, ),
                 norm_cfg=dict(type='MaskedBN'))
    # Same parameter names and values: plain checkpoints load as they are.
    plugin.load_state_dict(plain.state_dict())
    return plain.eval(), plugin.eval()


def test_masked_bn_is_batchnorm_until_a_mask_is_attached():
    plain, plugin = _pair()
    assert any(isinstance(m, MaskedBatchNorm2d) for m in plugin.modules())
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(plain(x)[0], plugin(x)[0])
    bn = next(m for m in plugin.modules()
              if isinstance(m, MaskedBatchNorm2d))
    with pytest.raises(TypeError, match='expects a callable'):
        bn.set_channel_mask(3)


def test_plugin_sites_mask_in_forward_and_equal_hook_masking():
    plain, plugin = _pair()
    x = torch.rand(1, 3, 64, 64)
    outs = []
    for model in (plain, plugin):
        plan = discover_groups(model, x)
        masks = install_masks(model, plan)
        torch.manual_seed(1)
        with torch.no_grad():
            for name in masks.group_names:
                m = masks.mask(name).mask
                m.copy_(torch.rand(m.shape))
        outs.append((model(x)[0], masks, model))
    (y_hook, _, _), (y_plugin, masks, model) = outs
    assert torch.allclose(y_hook, y_plugin, atol=1e-6)
    # The plugin's norms carry the mask themselves: no forward hook on them.
    plugged = [m for m in model.modules()
               if isinstance(m, MaskedBatchNorm2d) and m.masked]
    assert plugged and all(not m._forward_hooks for m in plugged)
    masks.remove()
    assert not any(m.masked for m in plugged)
    assert not torch.allclose(model(x)[0], y_plugin)
