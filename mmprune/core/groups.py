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
from typing import (
    Any,
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .plan import ChannelGroup, LayerSpec, PrunePlan, Segment, Slot
from .trace_ops import (
    CREATE,
    LIKE,
    META,
    OPS,
    SCALAR,
    _prod,
    _tensors,
    normalise,
)

__all__ = [
    'discover_groups',
    'register_layer_handler',
    'TraceContext',
    'Channels',
]

_FIXED = -1


class _Seg(NamedTuple):
    gid: int  # group id, or _FIXED
    start: int  # first channel inside the group
    length: int
    # None: the pruned channels are exactly zero here (given the masks).
    # ('m', module, start): may be non-zero; masking channels [start, ...)
    #   of `module`'s output repairs it.
    # ('f', op): made non-zero by the function `op`; no mask can repair it.
    dirty: Optional[tuple] = None


Channels = Tuple[_Seg, ...]
"""Opaque description of a tensor's channel axis, passed between handlers and
`TraceContext` methods."""


class _Info(NamedTuple):
    segs: Channels
    cdim: int  # non-negative index of the channel axis


class _Frame(NamedTuple):
    module: nn.Module
    name: str
    kind: str  # 'handler' | 'opaque' | 'transparent'
    handler: Optional[Callable]
    in_shape: Optional[Tuple[int, ...]]


Handler = Callable[..., Optional[Tuple[Channels, int]]]
_HANDLERS: List[Tuple[Any, Handler]] = []


def register_layer_handler(
    match: Union[type, Callable[[nn.Module], bool]], handler: Handler
) -> None:
    """Teach the tracer a layer type it does not know.

    Args:
        match: a module class (matched with ``isinstance``) or a predicate
            ``match(module) -> bool``. Later registrations win over earlier
            ones and over the built-ins.
        handler: ``handler(ctx, name, module, args, kwargs, output)`` called
            after the module ran, with ``ctx`` a `TraceContext`. It describes
            the module with ``ctx.consume`` / ``ctx.channels`` (its input
            channels), ``ctx.produce`` / ``ctx.fixed`` (its output channels)
            and ``ctx.add_layer`` (what export and the cost model must know),
            and returns ``(channels, dim)`` for its output tensor (``dim`` is
            the channel axis, e.g. 1 or -1), or None when the output has no
            channel axis to follow (it then counts as fixed width). The
            module's children are not traced separately.
    """
    if not (isinstance(match, type) or callable(match)):
        raise TypeError(
            'register_layer_handler: match must be a class or a '
            f'predicate, got {match!r}'
        )
    if not callable(handler):
        raise TypeError(
            f'register_layer_handler: handler {handler!r} is not callable'
        )
    _HANDLERS.append((match, handler))


def _matches(match, module: nn.Module) -> bool:
    if isinstance(match, type):
        return isinstance(module, match)
    return bool(match(module))


class TraceContext:
    """State of one trace; the API that layer handlers use.

    Handlers call, for the module named ``by``:

    * ``channels(t, dim, by)``: the channel map of tensor ``t`` along ``dim``,
      for per-channel layers (norms, depthwise convs);
    * ``consume(t, dim, by)``: the same for layers that mix channels (convs,
      linears): the channels are read by weights, so they must be exactly zero
      where pruned and the tracer places the masks that make them so;
    * ``produce(by, size)``: a new group of ``size`` output channels owned by
      ``by`` (the same group on every call of the module);
    * ``fixed(size)``: ``size`` channels that are never pruned;
    * ``keep(ch, reason, by)``: keep the groups of ``ch`` at full width and
      report ``(by, reason)`` in ``plan.unsupported``;
    * ``mark_dirty(ch, by)``: ``ch`` after the per-channel layer ``by``: its
      pruned channels may be non-zero, masking ``by``'s output repairs that;
    * ``add_layer(...)``: record the layer for the cost model and export.
    """

    def __init__(
        self, model: nn.Module, handlers: Sequence[Tuple[Any, Handler]]
    ):
        self.model = model
        self._names = {id(m): n for n, m in model.named_modules()}
        self._extra_handlers = list(handlers)
        self._parent: List[int] = []
        self._gsize: List[int] = []
        self._gname: List[str] = []
        self._reasons: Dict[int, List[str]] = {}
        self._producers: Dict[str, int] = {}
        self._infos: Dict[int, Tuple[Tensor, _Info]] = {}
        self._fn_gids: Dict[int, Tuple[Any, List[int]]] = {}
        self._clean_fns: Dict[int, Any] = {}  # id -> node (kept alive)
        self._layers: Dict[str, dict] = {}
        self._sites: List[Tuple[str, int, int, int, int]] = []
        self._unsupported: Dict[Tuple[str, str], None] = {}
        self._calls: Dict[
            str,
            List[Tuple[Optional[Tuple[int, ...]], Optional[Tuple[int, ...]]]],
        ] = {}
        self._stack: List[_Frame] = []
        self._suppress = 0
        self._kind_cache: Dict[int, Tuple[nn.Module, str, Any]] = {}
        self.busy = False

    # ----------------------------------------------------------- groups
    def _new_gid(self, name: str, size: int) -> int:
        self._parent.append(len(self._parent))
        self._gsize.append(int(size))
        self._gname.append(name)
        return len(self._parent) - 1

    def _find(self, g: int) -> int:
        root = g
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[g] != root:
            self._parent[g], g = root, self._parent[g]
        return root

    def _fix_gid(self, g: int, reason: str) -> None:
        if g == _FIXED:
            return
        lst = self._reasons.setdefault(self._find(g), [])
        if reason not in lst:
            lst.append(reason)

    def _is_fixed(self, g: int) -> bool:
        return g == _FIXED or self._find(g) in self._reasons

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        if ra > rb:
            ra, rb = rb, ra
        # The earliest group stays the root, so its producer names the union.
        self._parent[rb] = ra
        moved = self._reasons.pop(rb, None)
        if moved:
            lst = self._reasons.setdefault(ra, [])
            lst.extend(r for r in moved if r not in lst)

    def _report(self, where: str, reason: str) -> None:
        self._unsupported[(where, reason)] = None

    def _fix_segs(
        self, segs: Channels, reason: str, where: Optional[str] = None
    ) -> None:
        gids = [s.gid for s in segs if s.gid != _FIXED]
        for g in gids:
            self._fix_gid(g, reason)
        if where is not None and gids:
            self._report(where, reason)

    def _unify(self, a: Channels, b: Channels, where: str) -> None:
        """Couple two channel maps of equal length position by position."""
        ia = ib = 0
        oa = ob = 0
        while ia < len(a) and ib < len(b):
            sa, sb = a[ia], b[ib]
            n = min(sa.length - oa, sb.length - ob)
            ga, gb = sa.gid, sb.gid
            if ga != _FIXED and gb != _FIXED:
                full_a = sa.start + oa == 0 and n == self._gsize[ga]
                full_b = sb.start + ob == 0 and n == self._gsize[gb]
                if full_a and full_b:
                    self._union(ga, gb)
                else:
                    reason = (
                        f'its channels meet another group at {where} '
                        'with a different concatenation layout'
                    )
                    self._fix_gid(ga, reason)
                    self._fix_gid(gb, reason)
                    self._report(where, 'channel groups meet misaligned')
            elif ga != _FIXED or gb != _FIXED:
                g = ga if ga != _FIXED else gb
                self._fix_gid(
                    g, f'its channels meet fixed-width channels at {where}'
                )
            oa += n
            ob += n
            if oa == sa.length:
                ia, oa = ia + 1, 0
            if ob == sb.length:
                ib, ob = ib + 1, 0

    # ------------------------------------------------------- handler API
    def fixed(self, size: int) -> Channels:
        """``size`` channels that are never pruned."""
        return (_Seg(_FIXED, 0, int(size)),) if size > 0 else ()

    def produce(
        self, by: str, size: int, key: Optional[str] = None
    ) -> Channels:
        """A new group of ``size`` output channels owned by module ``by``.

        Calling it again for the same module (a module run several times, such
        as a head shared across FPN levels) returns the same group.
        """
        name = by if key is None else f'{by}:{key}'
        gid = self._producers.get(name)
        if gid is None:
            gid = self._new_gid(name, size)
            self._producers[name] = gid
        elif self._gsize[gid] != size:
            raise RuntimeError(
                f'{by}: produce() called with size {size} but '
                f'the module produced {self._gsize[gid]} '
                'channels before'
            )
        return (_Seg(gid, 0, int(size), ('m', by, 0)),)

    def channels(self, t: Tensor, dim: int, by: str) -> Channels:
        """Channel map of ``t`` along ``dim`` read by per-channel layer
        ``by``."""
        if not isinstance(t, Tensor):
            raise TypeError(
                f'{by}: expected a tensor input, got {type(t).__name__}'
            )
        if t.dim() == 0:
            raise TypeError(
                f'{by}: expected a tensor with a channel axis, got '
                'a 0-d tensor'
            )
        d = dim % t.dim()
        info = self._info(t)
        if info is None:
            self._check_leak(t, by)
            return self.fixed(t.shape[d])
        if info.cdim != d:
            self._fix_segs(
                info.segs,
                f'{by} works on axis {d} but the '
                f'channels are on axis {info.cdim}',
                by,
            )
            return self.fixed(t.shape[d])
        return info.segs

    def consume(self, t: Tensor, dim: int, by: str) -> Channels:
        """Channel map of ``t`` along ``dim`` read by channel-mixing ``by``."""
        return self._resolve(self.channels(t, dim, by), by)

    def keep(self, ch: Channels, reason: str, by: str) -> None:
        """Keep the groups in ``ch`` at full width; report ``(by, reason)``."""
        self._fix_segs(ch, reason)
        self._report(by, reason)

    def is_exact(self, ch: Channels) -> bool:
        """Whether the pruned channels of ``ch`` are exactly zero."""
        return all(s.dirty is None or s.gid == _FIXED for s in ch)

    def mark_dirty(self, ch: Channels, by: str) -> Channels:
        """``ch`` as output of per-channel layer ``by`` (pruned values may be
        non-zero there; a mask on ``by``'s output makes them zero)."""
        out, off = [], 0
        for s in ch:
            out.append(s._replace(dirty=('m', by, off)))
            off += s.length
        return tuple(out)

    def add_layer(
        self,
        name: str,
        kind: str,
        in_ch: Channels,
        out_ch: Channels,
        kernel: Sequence[int] = (),
        groups: int = 1,
        depthwise: bool = False,
        bias: bool = False,
        channel_dim: int = 1,
        positions: Optional[int] = None,
    ) -> None:
        """Record a layer for the cost model and for export.

        Args:
            name: the module's name in the model (it must run in the trace,
                or give ``positions``).
            kind: 'conv', 'deconv', 'linear' or 'norm'.
            in_ch / out_ch: its input and output channel maps.
            kernel, groups, depthwise, bias, channel_dim: see `LayerSpec`.
            positions: output positions per sample; default: measured.
        """
        if kind not in ('conv', 'deconv', 'linear', 'norm'):
            raise ValueError(
                f'{name}: add_layer kind must be conv, deconv, '
                f'linear or norm, got {kind!r}'
            )
        strip = tuple((s.gid, s.start, s.length) for s in in_ch)
        strip_out = tuple((s.gid, s.start, s.length) for s in out_ch)
        old = self._layers.get(name)
        if old is None:
            module = self.model.get_submodule(name) if name else self.model
            self._layers[name] = dict(
                type=type(module).__name__,
                kind=kind,
                in_map=strip,
                out_map=strip_out,
                kernel=tuple(int(k) for k in kernel),
                groups=int(groups),
                depthwise=bool(depthwise),
                bias=bool(bias),
                channel_dim=int(channel_dim),
                positions=positions,
                calls=1,
            )
            return
        if (
            old['kind'] != kind
            or _width(old['in_map']) != _width(strip)
            or _width(old['out_map']) != _width(strip_out)
        ):
            raise RuntimeError(
                f'{name}: described twice with different kinds or widths'
            )
        where = f'{name} (a module run more than once)'
        self._unify(_segs(old['in_map']), in_ch, where)
        self._unify(_segs(old['out_map']), out_ch, where)
        old['calls'] += 1

    # --------------------------------------------------- tensor tracking
    def _info(self, t: Tensor) -> Optional[_Info]:
        item = self._infos.get(id(t))
        if item is None or item[0] is not t:
            return None
        return item[1]

    def _set(self, t: Tensor, segs: Channels, cdim: int) -> None:
        if not isinstance(t, Tensor):
            return
        cdim = cdim % t.dim() if t.dim() else 0
        if t.dim() == 0 or _width_segs(segs) != t.shape[cdim]:
            raise RuntimeError(
                'mmprune tracer: channel map of width '
                f'{_width_segs(segs)} does not fit axis {cdim} '
                f'of a tensor of shape {tuple(t.shape)}'
            )
        self._infos[id(t)] = (t, _Info(tuple(segs), cdim))
        fn = t.grad_fn
        if fn is not None:
            entry = self._fn_gids.setdefault(id(fn), (fn, []))
            entry[1].extend(s.gid for s in segs if s.gid != _FIXED)

    def _stop(self, t: Tensor) -> None:
        """Mark an untracked output whose inputs were already kept."""
        if isinstance(t, Tensor) and t.grad_fn is not None:
            self._fn_gids.setdefault(id(t.grad_fn), (t.grad_fn, []))

    def _check_leak(self, t: Tensor, where: str) -> None:
        """Keep groups whose channels reach untracked ``t`` invisibly."""
        fn = t.grad_fn
        if fn is None:
            return
        seen: Dict[int, Any] = {}
        stack, found = [(fn, fn)], []
        while stack:
            f, via = stack.pop()
            k = id(f)
            if k in seen or k in self._clean_fns:
                continue
            seen[k] = f
            entry = self._fn_gids.get(k)
            if entry is not None:
                live = [g for g in entry[1] if not self._is_fixed(g)]
                if live:
                    # `via` is the first node after the traced tensor: the op
                    # the function mode did not see.
                    found.append((live, via.name()))
                continue
            stack.extend(
                (nf, f) for nf, _ in f.next_functions if nf is not None
            )
        if not found:
            self._clean_fns.update(seen)
            return
        for gids, fname in found:
            reason = (
                f'its channels reach {where} through an operation the '
                f'tracer cannot see (autograd node {fname})'
            )
            for g in gids:
                self._fix_gid(g, reason)
            self._report(
                where,
                'input derived from traced channels through '
                f'an invisible operation (autograd node {fname})',
            )

    def _resolve(self, segs: Channels, where: str) -> Channels:
        """Make the pruned channels of ``segs`` exactly zero (adds sites)."""
        out = []
        for s in segs:
            if s.dirty is not None and s.gid != _FIXED:
                if s.dirty[0] == 'm':
                    self._sites.append(
                        (s.dirty[1], s.dirty[2], s.gid, s.start, s.length)
                    )
                else:
                    self._fix_gid(
                        s.gid,
                        f'its channels pass {s.dirty[1]} (maps 0 to '
                        f'non-zero) before {where}, so a mask cannot zero '
                        'them',
                    )
                    self._report(
                        where,
                        f'input made non-zero by {s.dirty[1]} '
                        'outside any module that could carry a mask',
                    )
            out.append(s._replace(dirty=None))
        return tuple(out)

    def _where(self) -> str:
        for f in reversed(self._stack):
            if f.name:
                return f.name
        return '<model>' if self._stack else '<forward_fn>'

    def _keep_tensor(self, t: Tensor, reason: str, where: str) -> None:
        info = self._info(t)
        if info is not None:
            self._fix_segs(info.segs, reason)
        else:
            self._check_leak(t, where)

    # ------------------------------------------------------ module hooks
    def _classify(self, module: nn.Module) -> Tuple[str, Optional[Handler]]:
        hit = self._kind_cache.get(id(module))
        if hit is not None and hit[0] is module:
            return hit[1], hit[2]
        res: Tuple[str, Optional[Handler]] = ('transparent', None)
        for match, h in list(self._extra_handlers) + list(reversed(_HANDLERS)):
            if _matches(match, module):
                res = ('handler', h)
                break
        else:
            if any(p.numel() > 1 for p in module.parameters(recurse=False)):
                res = ('opaque', None)
        self._kind_cache[id(module)] = (module, res[0], res[1])
        return res

    def pre_hook(self, module, args, kwargs):
        if self.busy:
            return None
        self.busy = True
        try:
            name = self._names.get(
                id(module), f'<unnamed {type(module).__name__}>'
            )
            kind, h = self._classify(module)
            ts = _tensors((args, kwargs))
            in_shape = tuple(ts[0].shape) if ts else None
            self._stack.append(_Frame(module, name, kind, h, in_shape))
            if kind != 'transparent':
                self._suppress += 1
        finally:
            self.busy = False
        return None

    def post_hook(self, module, args, kwargs, output):
        if self.busy:
            return None
        self.busy = True
        try:
            frame = self._stack.pop()
            if frame.module is not module:
                raise RuntimeError(
                    'mmprune tracer: module call stack out of '
                    f'order at {frame.name}'
                )
            if frame.kind != 'transparent':
                self._suppress -= 1
            outs = _tensors(output)
            self._calls.setdefault(frame.name, []).append(
                (frame.in_shape, tuple(outs[0].shape) if outs else None)
            )
            if self._suppress > 0:
                return None
            if frame.kind == 'handler':
                res = frame.handler(
                    self, frame.name, module, args, kwargs, output
                )
                if res is not None:
                    if not isinstance(output, Tensor):
                        raise TypeError(
                            f'{frame.name}: its layer handler returned a '
                            'channel map but the module returned '
                            f'{type(output).__name__}, not a tensor'
                        )
                    self._set(output, res[0], res[1])
                else:
                    for t in outs:
                        self._stop(t)
            elif frame.kind == 'opaque':
                reason = (
                    f'{type(module).__name__} has parameters and no layer '
                    'handler (register one with register_layer_handler)'
                )
                for t in _tensors((args, kwargs)):
                    self._keep_tensor(
                        t, f'it feeds {frame.name}: {reason}', frame.name
                    )
                self._report(frame.name, reason)
                for t in outs:
                    self._stop(t)
        finally:
            self.busy = False
        return None

    # --------------------------------------------------------- functions
    def on_function(self, func, args, kwargs, out) -> None:
        """Interpret one torch function call seen between modules."""
        ins = _tensors((args, kwargs))
        tracked = [t for t in ins if self._info(t) is not None]
        if not tracked:
            return
        raw = getattr(func, '__name__', None) or repr(func)
        if raw == '__get__':
            raw = 'get:' + getattr(
                getattr(func, '__self__', None), '__name__', '?'
            )
        base, rev, _ = normalise(raw)
        outs = _tensors(out)
        where = self._where()
        if not outs:
            if base in META:
                return
            if base in SCALAR and all(t.numel() == 1 for t in tracked):
                return
            self._unknown(raw, ins, outs, where)
            return
        if base in CREATE:
            return
        if (
            base in LIKE
            and args
            and isinstance(args[0], Tensor)
            and self._info(args[0]) is None
        ):
            return  # the traced tensor only lends its dtype / shape
        rule = OPS.get(base)
        if rule is None:
            self._unknown(raw, ins, outs, where)
            return
        if rule(self, base, rev, args, kwargs, out, where) is False:
            self._unknown(raw, ins, outs, where)

    def _unknown(self, raw: str, ins, outs, where: str) -> None:
        reason = f'torch function {raw!r} is not modelled by the tracer'
        for t in ins:
            self._keep_tensor(t, f'its channels pass {raw} in {where}', where)
        self._report(where, reason)
        for t in outs:
            self._infos.pop(id(t), None)
            self._stop(t)


def _width(m) -> int:
    return sum(x[2] for x in m)


def _width_segs(segs: Channels) -> int:
    return sum(s.length for s in segs)


def _segs(m) -> Channels:
    return tuple(_Seg(g, s, n) for g, s, n in m)


class _Mode(TorchFunctionMode):
    def __init__(self, ctx: TraceContext):
        super().__init__()
        self.ctx = ctx

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ctx = self.ctx
        if not ctx.busy and ctx._suppress == 0:
            ctx.busy = True
            try:
                ctx.on_function(func, args, kwargs, out)
            finally:
                ctx.busy = False
        return out


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
        total += _prod(shape) / max(1, n * shape[cdim])
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
        with torch.enable_grad(), _Mode(ctx):
            out = forward_fn(model, inputs)
        outs = _check_outputs(out)
        ctx.busy = True
        for t in outs:
            info = ctx._info(t)
            if info is None:
                ctx._check_leak(t, 'a model output')
            else:
                ctx._fix_segs(
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
        if name in ctx._layers or name not in ctx._calls:
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
        for name, spec in ctx._layers.items():
            if _pattern_hits(p, name):
                for m in (spec['in_map'], spec['out_map']):
                    ctx._fix_segs(
                        _segs(m), f'{name} matches skip pattern {p!r}'
                    )
    for p in ignore_output_layers:
        hit = False
        for name, spec in ctx._layers.items():
            if _pattern_hits(p, name) and spec['kind'] != 'norm':
                hit = True
                ctx._fix_segs(
                    _segs(spec['out_map']),
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
    for name, spec in ctx._layers.items():
        dg = getattr(model.get_submodule(name) if name else model,
                     'deform_groups', 1)
        if isinstance(dg, int) and dg > 1 and spec['kind'] == 'conv':
            ctx._fix_segs(
                _segs(spec['in_map']),
                f'input of a deformable conv with deform_groups={dg} '
                f'({name}): its channels are split among the offset groups',
            )

    # Internal check: a group read by weights needs a mask that zeroes it.
    site_roots = {ctx._find(g) for _, _, g, _, _ in ctx._sites}
    for name, spec in ctx._layers.items():
        if spec['kind'] == 'norm' or spec['depthwise']:
            continue
        for g, _, _ in spec['in_map']:
            if g != _FIXED and not ctx._is_fixed(g):
                if ctx._find(g) not in site_roots:
                    why = f'no mask site found for the channels {name} reads'
                    ctx._fix_gid(g, why)
                    ctx._report(name, why)

    def public(m) -> Tuple[Segment, ...]:
        out: List[Segment] = []
        for g, s, n in m:
            if g != _FIXED and not ctx._is_fixed(g):
                seg = Segment(ctx._gname[ctx._find(g)], s, n)
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
        if g == _FIXED or ctx._is_fixed(g):
            return None
        r = ctx._find(g)
        if r not in groups:
            groups[r] = ChannelGroup(ctx._gname[r], ctx._gsize[r])
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
    for name, spec in ctx._layers.items():
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
            positions=_positions(name, spec, ctx._calls.get(name), batch),
            rows=_rows(spec, ctx._calls.get(name), batch),
            calls=spec['calls'],
            channel_dim=spec['channel_dim'],
        )
        slots(spec['out_map'], name, 'producers')
        if spec['kind'] != 'norm':
            slots(spec['in_map'], name, 'consumers')
    seen = set()
    for module, mstart, g, gstart, n in ctx._sites:
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
    for spec in ctx._layers.values():
        for g, _, _ in spec['in_map'] + spec['out_map']:
            if g != _FIXED and ctx._is_fixed(g):
                r = ctx._find(g)
                if r not in kept_roots:
                    kept_roots.add(r)
                    kept.append((ctx._gname[r], '; '.join(ctx._reasons[r])))
    ordered = {grp.name: grp for _, grp in sorted(groups.items())}
    for grp in ordered.values():
        grp.sites.sort(key=lambda s: (s.module, s.module_start))
    return PrunePlan(
        groups=ordered,
        layers=layers,
        unsupported=list(ctx._unsupported),
        kept=kept,
        input_shapes=shapes,
    )


# handlers.py registers the built-in layer handlers on import.
from . import handlers as _handlers  # noqa: E402,F401
