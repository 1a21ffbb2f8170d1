"""An independent MAC counter for masked models, used to check ``psi``.

It shares no arithmetic with :class:`mmprune.core.CostModel`. Pruned
channels are zeroed in their producers' weights, then one forward pass counts,
for every conv / transposed conv / linear call:

* input width  = input channels that carry any non-zero value (measured on
  the activations: a consumer's *effective* input width);
* output width = output channels whose weight row is not all zero.

MACs per call: ``k_h * k_w * (c_in / groups) * c_out * H_out * W_out`` for a
conv (depthwise: ``k_h * k_w * c * H_out * W_out``), ``k_h * k_w * c_in *
c_out / groups * H_in * W_in`` for a transposed conv (mmengine's convention),
and ``c_in * c_out * tokens`` for a linear. Forward a batch of one.
"""
import torch
from torch import nn


def _is_dcn(m):
    return hasattr(m, 'conv_offset') and hasattr(m, 'weight') and \
        m.weight.dim() == 4


def make_positive(model):
    """Make every live channel strictly positive, in place.

    Norms output the constant 1 (weight 0, bias 1), convs and linears get
    non-negative weights (each output row summing to 1) and a bias >= 1,
    and deformable convs zero offsets.
    Fed a positive input, no live channel can then be zero by chance (a
    ReLU on a tiny map easily zeroes a real channel), while channels a mask
    multiplies by 0 after its norm stay exactly zero downstream.
    """
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    with torch.no_grad():
        for m in model.modules():
            if _is_dcn(m):
                m.conv_offset.weight.zero_()
                m.conv_offset.bias.zero_()
            if isinstance(m, norms):
                if getattr(m, 'weight', None) is not None:
                    m.weight.zero_()
                    m.bias.fill_(1.0)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) \
                    or _is_dcn(m):
                # Rows scaled to sum 1: an output is at most its largest
                # input + 1, so a deep stack without norms (an FPN after
                # ResNet-50) cannot overflow to inf, whose product with a
                # mask's 0 is NaN and would count as a live channel.
                w = m.weight.abs_()
                rows = w.sum(dim=[d for d in range(w.dim()) if d != 0],
                             keepdim=True)
                w.div_(rows.clamp_min(1e-12))
                if m.bias is not None:
                    m.bias.abs_().add_(1.0)


def zero_pruned_rows(model, plan, binaries):
    """Zero the producer rows (out channels) of channels whose mask is 0."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, group in plan.groups.items():
            dead = (binaries[name] == 0).nonzero().flatten()
            for slot in group.producers:
                m = modules[slot.module]
                if not hasattr(m, 'weight') or m.weight is None or \
                        m.weight.dim() < 2:
                    continue
                sel = dead[(dead >= slot.group_start)
                           & (dead < slot.group_start + slot.length)]
                rows = sel - slot.group_start + slot.module_start
                if isinstance(m, nn.ConvTranspose2d):
                    # [in, out/groups, k, k]; depthwise: one out per group.
                    if m.groups == m.in_channels:
                        m.weight[rows] = 0
                    else:
                        m.weight[:, rows] = 0
                else:
                    m.weight[rows] = 0
                if getattr(m, 'bias', None) is not None:
                    m.bias[rows] = 0


def count_macs(model, forward, per_module=None):
    """Run ``forward()`` once and return the effective MACs (int).

    ``per_module``: a dict to fill with the MACs of every module, by name
    (for a failing comparison's message).
    """
    total = [0]
    names = {m: n for n, m in model.named_modules()}

    def add(m, macs):
        total[0] += macs
        if per_module is not None:
            key = names.get(m, '?')
            per_module[key] = per_module.get(key, 0) + macs
    handles = []
    # Offset convs of deformable convs have their weights zeroed by
    # make_positive (zero offsets); their 3*k*k outputs are never pruned.
    offset_convs = {m.conv_offset for m in model.modules() if _is_dcn(m)}

    def live_in(x, dim=1):
        dims = [d for d in range(x.dim()) if d != dim % x.dim()]
        return int((x.detach().abs().sum(dim=dims) != 0).sum())

    def live_rows(w, dim=0):
        dims = [d for d in range(w.dim()) if d != dim]
        return int((w.detach().abs().sum(dim=dims) != 0).sum())

    def conv_hook(m, args, out):
        x = args[0]
        cin = live_in(x)
        k = m.weight.shape[2] * m.weight.shape[3]
        if isinstance(m, nn.ConvTranspose2d):
            depthwise = m.groups == m.in_channels == m.out_channels
            cout = live_rows(m.weight, 0 if depthwise else 1)
            if depthwise:
                add(m, k * min(cin, cout) * x.shape[2] * x.shape[3])
            else:
                add(m, k * cin * cout * x.shape[2] * x.shape[3]
                    // m.groups)
            return
        cout = m.weight.shape[0] if m in offset_convs else live_rows(m.weight)
        hw = out.shape[-2] * out.shape[-1]
        if m.groups > 1 and m.groups == m.in_channels:
            add(m, k * min(cin, cout) * hw)
        else:
            add(m, k * cin * cout * hw // m.groups)

    def linear_hook(m, args, out):
        x = args[0]
        cin = live_in(x, -1)
        cout = live_rows(m.weight)
        tokens = x.numel() // x.shape[-1]
        add(m, cin * cout * tokens)

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) or _is_dcn(m):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    return total[0]
