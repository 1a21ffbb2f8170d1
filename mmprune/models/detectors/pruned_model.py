"""``PrunedModel``: a detector rebuilt at the widths of a pruned export.

An exported config (``tools/export_pruned.py``) reads::

    model = dict(
        type='PrunedModel',
        detector=dict(type='CenterNet', ...),   # the original model config
        channels='{{ fileDirname }}/channels.json')

Building it builds the original detector, then slices it to the widths in
``channels`` (`mmprune.core.surgery.apply_channel_spec`) and returns the
detector itself. So the result *is* a plain mmdet detector (a ``CenterNet``,
a ``RetinaNet`` ...) with smaller layers: ``loss``, ``predict``,
``_forward``, its data preprocessor and every mmdet tool work unchanged, and
no mask code is left in the forward path. Its weights come from the small
model's checkpoint (``load_from`` / ``tools/test.py CONFIG CKPT``).
"""
import os.path as osp
from typing import Any, Mapping, Union

from mmdet.registry import MODELS
from torch import nn

from mmprune.core.surgery import ChannelSpec, apply_channel_spec

from ..layers import use_torch_dcn

__all__ = ['build_pruned_model']


def _load_spec(channels: Union[str, Mapping[str, Any], ChannelSpec]
               ) -> ChannelSpec:
    if isinstance(channels, ChannelSpec):
        return channels
    if isinstance(channels, Mapping):
        return ChannelSpec.from_dict(channels, 'model.channels')
    if isinstance(channels, str):
        if not osp.isfile(channels):
            hint = ''
            if not osp.isabs(channels):
                hint = (' (a relative path is read from the current folder; '
                        "write '{{ fileDirname }}/channels.json' in the "
                        'config to name the file next to it)')
            raise FileNotFoundError(
                f'model.channels: channel spec file {channels!r} not '
                f'found{hint}')
        return ChannelSpec.load(channels)
    raise TypeError(
        'model.channels must be the path of a channels.json file or its '
        f'dict, got {type(channels).__name__}')


@MODELS.register_module(name='PrunedModel')
def build_pruned_model(detector: dict,
                       channels: Union[str, Mapping[str, Any], ChannelSpec],
                       torch_dcn: bool = False) -> nn.Module:
    """Build ``detector`` and shrink it to the widths of ``channels``.

    Args:
        detector: the original detector's model config (any mmdet detector).
        channels: the channel spec written by the export: a path to
            ``channels.json``, or its content as a dict.
        torch_dcn: switch mmcv ``DCNv2`` layers to ``DCNv2Torch``
            (`mmprune.models.layers.use_torch_dcn`: same weights, fast CPU
            forward) for CPU deployment of detectors that use mmcv's layer,
            e.g. mmdet's CenterNet R18-DCNv2.

    Returns:
        The detector itself (its own class), with the pruned layer widths and
        freshly initialised weights: load the export's ``model.pth`` into it.
    """
    if not isinstance(detector, Mapping) or 'type' not in detector:
        raise TypeError(
            'model.detector must be a detector config dict with a "type", '
            f'got {detector!r}')
    if detector['type'] in ('PrunedModel', build_pruned_model):
        raise ValueError('model.detector is itself a PrunedModel; export '
                         'writes the original detector config there')
    spec = _load_spec(channels)
    model = MODELS.build(detector)
    try:
        apply_channel_spec(model, spec)
    except ValueError as e:
        raise ValueError(
            f'PrunedModel: model.channels does not fit model.detector '
            f'(type={detector["type"]}): {e}') from None
    if torch_dcn:  # after the slicing, whose spec names mmcv's class
        use_torch_dcn(model)
    return model
