"""mmprune.core: the pure-torch heart of in-train pruning.

No mmengine / mmdet imports here. The pieces, in the order a run uses them:

* `discover_groups` traces a model once and returns a `PrunePlan`: channel
  groups, their producers / consumers / mask sites, every layer with its
  channel maps and spatial size, and what it could not handle.
* `install_masks` puts one `ChannelMask` per group on the model (forward hooks
  on the mask sites) and returns the `MaskSet`.
* `CostModel` turns the binary masks into MACs and ``psi``; `hw_loss` makes it
  a loss; `project_to_target` enforces the target when the masks freeze.
"""

from .attack import fgsm_random_init, pgd, preserve_buffers
from .cost import COSTS, CostModel, LayerCost
from .deform_conv import modulated_deform_conv2d
from .dynamics import (
                       LAG_INTEGRAL_GAIN,
                       TARGET_SCHEDULES,
                       auto_b,
                       hw_scale,
                       integrate_lag,
                       scheduled_target,
)
from .groups import (
                       Channels,
                       TraceContext,
                       discover_groups,
                       register_layer_handler,
)
from .handlers import is_deform_conv_pack
from .latency import LatencyTable, device_description
from .latency_probe import channel_grid, measure_latency_table, time_rounds
from .losses import HW_LOSS_FORMS, hw_loss
from .mask import (
                       BINARIZE_MODES,
                       ChannelMask,
                       MaskSet,
                       install_masks,
                       resolve_min_channels,
)
from .plan import (
                       ChannelGroup,
                       ChannelMap,
                       LayerSpec,
                       PrunePlan,
                       Segment,
                       Slot,
                       map_size,
)
from .projection import ProjectionReport, lowest_psi, project_to_target
from .ste import binarize
from .surgery import (
                       ChannelSpec,
                       ModuleChannels,
                       apply_channel_spec,
                       channel_spec,
                       kept_channels,
                       kept_positions,
                       module_widths,
                       prune_model,
                       register_channel_slicer,
                       slice_module,
)

__all__ = [
    'ChannelSpec', 'ModuleChannels', 'apply_channel_spec', 'channel_spec',
    'kept_channels', 'kept_positions', 'module_widths', 'prune_model',
    'register_channel_slicer', 'slice_module',
    'LatencyTable', 'device_description', 'channel_grid',
    'measure_latency_table', 'time_rounds',
    'fgsm_random_init', 'pgd', 'preserve_buffers',
    'modulated_deform_conv2d',
    'binarize',
    'ChannelMask',
    'BINARIZE_MODES',
    'MaskSet',
    'install_masks',
    'resolve_min_channels',
    'discover_groups',
    'register_layer_handler',
    'TraceContext',
    'Channels',
    'is_deform_conv_pack',
    'PrunePlan',
    'ChannelGroup',
    'LayerSpec',
    'Segment',
    'Slot',
    'ChannelMap',
    'map_size',
    'CostModel',
    'LayerCost',
    'COSTS',
    'hw_loss',
    'HW_LOSS_FORMS',
    'TARGET_SCHEDULES',
    'scheduled_target',
    'auto_b',
    'hw_scale',
    'integrate_lag',
    'LAG_INTEGRAL_GAIN',
    'project_to_target',
    'lowest_psi',
    'ProjectionReport',
]
