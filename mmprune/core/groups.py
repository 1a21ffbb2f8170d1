"""Channel-group discovery: trace one forward pass and couple channels.

`discover_groups(model, inputs, forward_fn)` runs the model once under a
`TorchFunctionMode` plus forward hooks on every module, and follows each
tensor's channel axis through the run:

* a *layer handler* (handlers.py) describes a module it knows: a conv makes a
  new group of its output channels and consumes its input channels, a norm
  passes them through, a deformable conv also feeds its offset conv (and
  keeps its input channels when ``deform_groups > 1``);
* every torch function called between modules is interpreted by a small op
  table (trace_ops.py): element-wise ops keep the channel map, ``+`` / ``*``
  unify the groups of their operands, ``torch.cat`` on the channel axis
  concatenates the maps, reshapes and permutes move the channel axis, and
  anything else keeps the channels it touches at full width and is reported in
  ``plan.unsupported``;
* a module with its own (non-scalar) parameters and no handler is opaque: the
  channels around it are kept and it is reported, never guessed;
* each channel run also carries whether its pruned channels are exactly zero
  there. Where a run that may be non-zero meets a consumer, an add or a model
  output, the module that last made it non-zero (the norm after a conv, or the
  conv) becomes a *mask site*. A run made non-zero by a functional op (e.g.
  ``torch.sigmoid``) cannot be repaired by a mask, so its group is kept;
* as a safety net, a tensor the tracer does not know that reaches a layer is
  walked back through autograd: if it descends from traced channels through an
  invisible op (e.g. a C++ extension), those channels are kept and reported.

The result is a `PrunePlan` (plan.py).
"""


import fnmatch
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .channel_map import Channels, as_channels
from .layer_registry import Handler, register_layer_handler
from .plan import ChannelGroup, LayerSpec, PrunePlan, Segment, Slot
from .ties import tie_channels
from .trace_ops import prod
from .tracer import FIXED, TraceContext, TraceMode

__all__ = [
    'discover_groups',
    'register_layer_handler',
    'TraceContext',
    'Channels',
]


# ------------------------------------------------------------------ entry
def _prep_inputs(obj, shapes: List[Tuple[int, ...]]):
    if isinstance(obj, Tensor):
        shapes.append(tuple(obj.shape))
        if obj.is_floating_point():
            # Inputs that need grad give every derived tensor a grad_fn,
            # which the leak check walks even where weights are frozen.
            return obj.detach().clone().requires_grad_(True)
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_prep_inputs(o, shapes) for o in obj)
    if isinstance(obj, dict):
        return {k: _prep_inputs(v, shapes) for k, v in obj.items()}
    return obj


def _check_outputs(obj, path: str = 'output') -> List[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if obj is None or isinstance(obj, (int, float, bool, str)):
        return []
    if isinstance(obj, (list, tuple)):
        return [
            t
            for i, o in enumerate(obj)
            for t in _check_outputs(o, f'{path}[{i}]')
        ]
    if isinstance(obj, dict):
        return [
            t
            for k, o in obj.items()
            for t in _check_outputs(o, f'{path}[{k!r}]')
        ]
    raise TypeError(
        f'discover_groups: forward_fn returned a '
        f'{type(obj).__name__} at {path}; expected nested '
        'tuples / lists / dicts of tensors'
    )


def _pattern_hits(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(
        name, pattern + '.*'
    )


def _rows(spec: dict, calls, batch: int) -> int:
    """Leading-dim rows per image of a layer's first call (RoIs, or 1)."""
    if spec['positions'] is not None or not calls:
        return 1
    in_shape, out_shape = calls[0]
    shape = in_shape if spec['kind'] == 'deconv' else out_shape
    if shape is None or len(shape) < 2:
        return 1
    return max(1, int(shape[0]) // max(1, batch))


def _positions(name: str, spec: dict, calls, batch: int = 1) -> int:
    if spec['positions'] is not None:
        return int(spec['positions'])
    if not calls:
        raise RuntimeError(
            f'{name}: a layer handler declared it but it never '
            'ran in the trace; pass positions= to add_layer'
        )
    total = 0.0
    for in_shape, out_shape in calls:
        shape = in_shape if spec['kind'] == 'deconv' else out_shape
        if shape is None:
            raise RuntimeError(f'{name}: no tensor recorded for a call')
        cdim = (
            1 if spec['kind'] in ('deconv', 'conv', 'norm') else len(shape) - 1
        )
        # Per image of the trace batch: an RoI head's calls carry the RoIs
        # in their leading dim, and each RoI costs the layer once more.
        n = max(1, batch) if len(shape) >= 2 else 1
        total += prod(shape) / max(1, n * shape[cdim])
    return int(round(total))


def discover_groups(
    model: nn.Module,
    inputs: Any,
    forward_fn: Optional[Callable[[nn.Module, Any], Any]] = None,
    *,
    skip: Sequence[str] = (),
    ignore_output_layers: Sequence[str] = (),
    handlers: Sequence[Tuple[Any, Handler]] = (),
) -> PrunePlan:
    """Find the channel groups of ``model`` by tracing one forward pass.

    Args:
        model: the network. It is run once in eval mode with gradients on;
            training flags are restored afterwards and no weight changes.
        inputs: example inputs at the input shape the cost model should use
            (tensors, or nested tuples / lists / dicts of them).
        forward_fn: ``forward_fn(model, inputs) -> outputs``; default
            ``model(inputs)``. The outputs may be nested tuples / lists /
            dicts of tensors; every channel that reaches them unchanged by a
            conv or linear keeps its width.
        skip: module-name patterns (``fnmatch`` globs; a name also matches
            its children) never to prune: their input and output channels
            keep their width.
        ignore_output_layers: patterns of layers whose output width must be
            kept (a detector's final prediction convs).
        handlers: extra ``(match, handler)`` pairs for this call only, tried
            before the registered ones (see `register_layer_handler`).

    Returns:
        A `PrunePlan`.
    """
    for arg, pats in (
        ('skip', skip),
        ('ignore_output_layers', ignore_output_layers),
    ):
        if isinstance(pats, str) or not all(isinstance(p, str) for p in pats):
            raise TypeError(
                f'discover_groups: {arg} must be a list of '
                f'module-name patterns, got {pats!r}'
            )
    names = [n for n, _ in model.named_modules()]
    for p in skip:
        if not any(_pattern_hits(p, n) for n in names):
            raise ValueError(
                f'discover_groups: skip pattern {p!r} matches no '
                f'module of {type(model).__name__}'
            )
    forward_fn = forward_fn or (lambda m, x: m(x))
    shapes: List[Tuple[int, ...]] = []
    inputs = _prep_inputs(inputs, shapes)
    ctx = TraceContext(model, handlers)
    modes = {m: m.training for m in model.modules()}
    handles = []
    try:
        for m in model.modules():
            handles.append(
                m.register_forward_pre_hook(ctx.pre_hook, with_kwargs=True)
            )
            handles.append(
                m.register_forward_hook(ctx.post_hook, with_kwargs=True)
            )
        model.eval()
        with torch.enable_grad(), TraceMode(ctx):
            out = forward_fn(model, inputs)
        outs = _check_outputs(out)
        ctx.busy = True
        for t in outs:
            info = ctx.info(t)
            if info is None:
                ctx.check_leak(t, 'a model output')
            else:
                ctx.fix_segs(
                    info.segs,
                    'its channels reach a model output '
                    'with no conv or linear in between',
                )
    finally:
        for h in handles:
            h.remove()
        for m, flag in modes.items():
            m.training = flag
    return _build_plan(ctx, model, skip, ignore_output_layers, shapes)


def _build_plan(
    ctx: TraceContext, model: nn.Module, skip, ignore_output_layers, shapes
) -> PrunePlan:
    # Convs and linears that ran inside opaque modules still cost MACs.
    for name, mod in model.named_modules():
        if name in ctx.layers or name not in ctx.calls:
            continue
        if isinstance(mod, nn.modules.conv._ConvNd):
            kind = (
                'deconv'
                if isinstance(mod, nn.modules.conv._ConvTransposeNd)
                else 'conv'
            )
            depthwise = mod.groups > 1 and (
                mod.groups == mod.in_channels == mod.out_channels
            )
            ctx.add_layer(
                name,
                kind,
                ctx.fixed(mod.in_channels),
                ctx.fixed(mod.out_channels),
                mod.kernel_size,
                mod.groups,
                depthwise,
                mod.bias is not None,
            )
        elif isinstance(mod, nn.Linear):
            ctx.add_layer(
                name,
                'linear',
                ctx.fixed(mod.in_features),
                ctx.fixed(mod.out_features),
                (),
                1,
                False,
                mod.bias is not None,
                -1,
            )
    for p in skip:
        for name, spec in ctx.layers.items():
            if _pattern_hits(p, name):
                for m in (spec['in_map'], spec['out_map']):
                    ctx.fix_segs(
                        as_channels(m), f'{name} matches skip pattern {p!r}'
                    )
    for p in ignore_output_layers:
        hit = False
        for name, spec in ctx.layers.items():
            if _pattern_hits(p, name) and spec['kind'] != 'norm':
                hit = True
                ctx.fix_segs(
                    as_channels(spec['out_map']),
                    f'{name} is in ignore_output_layers',
                )
        if not hit:
            raise ValueError(
                f'discover_groups: ignore_output_layers entry {p!r} '
                'matches no conv / linear layer that ran in the '
                'trace'
            )
    # A deformable conv splits its input channels evenly among its offset
    # groups (channel c samples with the offsets of group c // (C / dg)), so
    # pruning them would regroup the channels: export refuses, keep them.
    for name, spec in ctx.layers.items():
        dg = getattr(model.get_submodule(name) if name else model,
                     'deform_groups', 1)
        if isinstance(dg, int) and dg > 1 and spec['kind'] == 'conv':
            ctx.fix_segs(
                as_channels(spec['in_map']),
                f'input of a deformable conv with deform_groups={dg} '
                f'({name}): its channels are split among the offset groups',
            )

    # Internal check: a group read by weights needs a mask that zeroes it.
    site_roots = {ctx.find(g) for _, _, g, _, _ in ctx.sites}
    for name, spec in ctx.layers.items():
        if spec['kind'] == 'norm' or spec['depthwise']:
            continue
        for g, _, _ in spec['in_map']:
            if g != FIXED and not ctx.is_fixed(g):
                if ctx.find(g) not in site_roots:
                    why = f'no mask site found for the channels {name} reads'
                    ctx.fix_gid(g, why)
                    ctx.report(name, why)
    # GroupNorm groups and grouped convs tie channels into units (ties.py).
    ties, whole = tie_channels(ctx.layers, ctx.find, ctx.is_fixed, ctx.gsize)
    for r, why in whole.items():
        ctx.fix_gid(r, why)

    def public(m) -> Tuple[Segment, ...]:
        out: List[Segment] = []
        for g, s, n in m:
            if g != FIXED and not ctx.is_fixed(g):
                seg = Segment(ctx.gname[ctx.find(g)], s, n)
                prev = out[-1] if out else None
                if (
                    prev is not None
                    and prev.group == seg.group
                    and prev.start + prev.length == seg.start
                ):
                    out[-1] = Segment(seg.group, prev.start, prev.length + n)
                else:
                    out.append(seg)
            elif out and out[-1].group is None:
                out[-1] = Segment(None, 0, out[-1].length + n)
            else:
                out.append(Segment(None, 0, n))
        return tuple(out)

    layers: Dict[str, LayerSpec] = {}
    groups: Dict[int, ChannelGroup] = {}

    def group_of(g: int) -> Optional[ChannelGroup]:
        if g == FIXED or ctx.is_fixed(g):
            return None
        r = ctx.find(g)
        if r not in groups:
            groups[r] = ChannelGroup(ctx.gname[r], ctx.gsize[r],
                                     tie=ties.get(r))
        return groups[r]

    def slots(m, name: str, into: str) -> None:
        off = 0
        for g, s, n in m:
            grp = group_of(g)
            if grp is not None:
                getattr(grp, into).append(Slot(name, off, s, n))
            off += n

    # Images in the trace batch (the first input tensor's leading dim).
    batch = shapes[0][0] if shapes and shapes[0] else 1
    for name, spec in ctx.layers.items():
        layers[name] = LayerSpec(
            name=name,
            type=spec['type'],
            kind=spec['kind'],
            in_map=public(spec['in_map']),
            out_map=public(spec['out_map']),
            kernel=spec['kernel'],
            groups=spec['groups'],
            depthwise=spec['depthwise'],
            bias=spec['bias'],
            positions=_positions(name, spec, ctx.calls.get(name), batch),
            rows=_rows(spec, ctx.calls.get(name), batch),
            calls=spec['calls'],
            channel_dim=spec['channel_dim'],
            norm_groups=spec.get('norm_groups', 0),
        )
        slots(spec['out_map'], name, 'producers')
        if spec['kind'] != 'norm':
            slots(spec['in_map'], name, 'consumers')
    seen = set()
    for module, mstart, g, gstart, n in ctx.sites:
        grp = group_of(g)
        if grp is None:
            continue
        if module not in layers:
            raise RuntimeError(
                f'mmprune tracer: mask site {module} is not a '
                'recorded layer (a layer handler marked it dirty '
                'without add_layer)'
            )
        key = (module, mstart, grp.name, gstart, n)
        if key not in seen:
            seen.add(key)
            grp.sites.append(Slot(module, mstart, gstart, n))
    kept = []
    kept_roots = set()
    for spec in ctx.layers.values():
        for g, _, _ in spec['in_map'] + spec['out_map']:
            if g != FIXED and ctx.is_fixed(g):
                r = ctx.find(g)
                if r not in kept_roots:
                    kept_roots.add(r)
                    kept.append((ctx.gname[r], '; '.join(ctx.reasons[r])))
    ordered = {grp.name: grp for _, grp in sorted(groups.items())}
    for grp in ordered.values():
        grp.sites.sort(key=lambda s: (s.module, s.module_start))
    return PrunePlan(
        groups=ordered,
        layers=layers,
        unsupported=list(ctx.unsupported),
        kept=kept,
        input_shapes=shapes,
    )


# handlers.py registers the built-in layer handlers on import.
