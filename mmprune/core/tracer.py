"""The channel tracer's state: tensors' channel maps and the module hooks.

`TraceContext` follows each tensor's channel axis through one forward pass
(see groups.py for the whole picture): it keeps the union-find of channel
groups, the per-tensor channel maps, the module pre/post hooks that call
layer handlers (layer_registry.py) and the torch-function mode that hands
functions to the op rules (trace_ops.py). `discover_groups` (groups.py) runs
it and turns its state into a `PrunePlan`.
"""

from typing import (
    Any,
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .channel_map import (
    Channels,
    TensorInfo,
    _Seg,
    _width_segs,
    as_channels,
    width_of,
)
from .layer_registry import Handler, matches, registered_handlers
from .trace_index import INDEX_OPS
from .trace_ops import (
    CREATE,
    FIXED,
    LIKE,
    META,
    OPS,
    SCALAR,
    normalise,
    tensors_in,
)

#: Every torch-function rule, by normalised name (built once).
_RULES = {**OPS, **INDEX_OPS}


class _Frame(NamedTuple):
    module: nn.Module
    name: str
    kind: str  # 'handler' | 'opaque' | 'transparent'
    handler: Optional[Callable]
    in_shape: Optional[Tuple[int, ...]]



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
        self.gsize: List[int] = []
        self.gname: List[str] = []
        self.reasons: Dict[int, List[str]] = {}
        self._producers: Dict[str, int] = {}
        self._infos: Dict[int, Tuple[Tensor, TensorInfo]] = {}
        self._fn_gids: Dict[int, Tuple[Any, List[int]]] = {}
        self._clean_fns: Dict[int, Any] = {}  # id -> node (kept alive)
        self.layers: Dict[str, dict] = {}
        self.sites: List[Tuple[str, int, int, int, int]] = []
        self.unsupported: Dict[Tuple[str, str], None] = {}
        self.calls: Dict[
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
        self.gsize.append(int(size))
        self.gname.append(name)
        return len(self._parent) - 1

    def find(self, g: int) -> int:
        root = g
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[g] != root:
            self._parent[g], g = root, self._parent[g]
        return root

    def fix_gid(self, g: int, reason: str) -> None:
        if g == FIXED:
            return
        lst = self.reasons.setdefault(self.find(g), [])
        if reason not in lst:
            lst.append(reason)

    def is_fixed(self, g: int) -> bool:
        return g == FIXED or self.find(g) in self.reasons

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if ra > rb:
            ra, rb = rb, ra
        # The earliest group stays the root, so its producer names the union.
        self._parent[rb] = ra
        moved = self.reasons.pop(rb, None)
        if moved:
            lst = self.reasons.setdefault(ra, [])
            lst.extend(r for r in moved if r not in lst)

    def report(self, where: str, reason: str) -> None:
        self.unsupported[(where, reason)] = None

    def fix_segs(
        self, segs: Channels, reason: str, where: Optional[str] = None
    ) -> None:
        gids = [s.gid for s in segs if s.gid != FIXED]
        for g in gids:
            self.fix_gid(g, reason)
        if where is not None and gids:
            self.report(where, reason)

    def unify(self, a: Channels, b: Channels, where: str) -> None:
        """Couple two channel maps of equal length position by position."""
        ia = ib = 0
        oa = ob = 0
        while ia < len(a) and ib < len(b):
            sa, sb = a[ia], b[ib]
            n = min(sa.length - oa, sb.length - ob)
            ga, gb = sa.gid, sb.gid
            if ga != FIXED and gb != FIXED:
                full_a = sa.start + oa == 0 and n == self.gsize[ga]
                full_b = sb.start + ob == 0 and n == self.gsize[gb]
                if full_a and full_b:
                    self._union(ga, gb)
                else:
                    reason = (
                        f'its channels meet another group at {where} '
                        'with a different concatenation layout'
                    )
                    self.fix_gid(ga, reason)
                    self.fix_gid(gb, reason)
                    self.report(where, 'channel groups meet misaligned')
            elif ga != FIXED or gb != FIXED:
                g = ga if ga != FIXED else gb
                self.fix_gid(
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
        return (_Seg(FIXED, 0, int(size)),) if size > 0 else ()

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
        elif self.gsize[gid] != size:
            raise RuntimeError(
                f'{by}: produce() called with size {size} but '
                f'the module produced {self.gsize[gid]} '
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
        info = self.info(t)
        if info is None:
            self.check_leak(t, by)
            return self.fixed(t.shape[d])
        if info.cdim != d:
            self.fix_segs(
                info.segs,
                f'{by} works on axis {d} but the '
                f'channels are on axis {info.cdim}',
                by,
            )
            return self.fixed(t.shape[d])
        return info.segs

    def consume(self, t: Tensor, dim: int, by: str) -> Channels:
        """Channel map of ``t`` along ``dim`` read by channel-mixing ``by``."""
        return self.resolve(self.channels(t, dim, by), by)

    def keep(self, ch: Channels, reason: str, by: str) -> None:
        """Keep the groups in ``ch`` at full width; report ``(by, reason)``."""
        self.fix_segs(ch, reason)
        self.report(by, reason)

    def is_exact(self, ch: Channels) -> bool:
        """Whether the pruned channels of ``ch`` are exactly zero."""
        return all(s.dirty is None or s.gid == FIXED for s in ch)

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
        norm_groups: int = 0,
    ) -> None:
        """Record a layer for the cost model and for export.

        Args:
            name: the module's name in the model (it must run in the trace,
                or give ``positions``).
            kind: 'conv', 'deconv', 'linear' or 'norm'.
            in_ch / out_ch: its input and output channel maps.
            kernel, groups, depthwise, bias, channel_dim: see `LayerSpec`.
            positions: output positions per sample; default: measured.
            norm_groups: a GroupNorm's ``num_groups`` (its channels are then
                pruned in whole norm groups); 0 for other layers.
        """
        if kind not in ('conv', 'deconv', 'linear', 'norm'):
            raise ValueError(
                f'{name}: add_layer kind must be conv, deconv, '
                f'linear or norm, got {kind!r}'
            )
        strip = tuple((s.gid, s.start, s.length) for s in in_ch)
        strip_out = tuple((s.gid, s.start, s.length) for s in out_ch)
        old = self.layers.get(name)
        if old is None:
            module = self.model.get_submodule(name) if name else self.model
            self.layers[name] = dict(
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
                norm_groups=int(norm_groups),
                calls=1,
            )
            return
        if (
            old['kind'] != kind
            or width_of(old['in_map']) != width_of(strip)
            or width_of(old['out_map']) != width_of(strip_out)
        ):
            raise RuntimeError(
                f'{name}: described twice with different kinds or widths'
            )
        where = f'{name} (a module run more than once)'
        self.unify(as_channels(old['in_map']), in_ch, where)
        self.unify(as_channels(old['out_map']), out_ch, where)
        old['calls'] += 1

    # --------------------------------------------------- tensor tracking
    def info(self, t: Tensor) -> Optional[TensorInfo]:
        item = self._infos.get(id(t))
        if item is None or item[0] is not t:
            return None
        return item[1]

    def set(self, t: Tensor, segs: Channels, cdim: int) -> None:
        if not isinstance(t, Tensor):
            return
        cdim = cdim % t.dim() if t.dim() else 0
        if t.dim() == 0 or _width_segs(segs) != t.shape[cdim]:
            raise RuntimeError(
                'mmprune tracer: channel map of width '
                f'{_width_segs(segs)} does not fit axis {cdim} '
                f'of a tensor of shape {tuple(t.shape)}'
            )
        self._infos[id(t)] = (t, TensorInfo(tuple(segs), cdim))
        fn = t.grad_fn
        if fn is not None:
            entry = self._fn_gids.setdefault(id(fn), (fn, []))
            entry[1].extend(s.gid for s in segs if s.gid != FIXED)

    def stop(self, t: Tensor) -> None:
        """Mark untracked ``t`` as carrying no channels of any group (its
        inputs were kept, or it no longer depends on which are pruned)."""
        if isinstance(t, Tensor) and t.grad_fn is not None:
            self._fn_gids.setdefault(id(t.grad_fn), (t.grad_fn, []))

    def check_leak(self, t: Tensor, where: str) -> None:
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
                live = [g for g in entry[1] if not self.is_fixed(g)]
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
                self.fix_gid(g, reason)
            self.report(
                where,
                'input derived from traced channels through '
                f'an invisible operation (autograd node {fname})',
            )

    def resolve(self, segs: Channels, where: str) -> Channels:
        """Make the pruned channels of ``segs`` exactly zero (adds sites)."""
        out = []
        for s in segs:
            if s.dirty is not None and s.gid != FIXED:
                if s.dirty[0] == 'm':
                    self.sites.append(
                        (s.dirty[1], s.dirty[2], s.gid, s.start, s.length)
                    )
                else:
                    self.fix_gid(
                        s.gid,
                        f'its channels pass {s.dirty[1]} (maps 0 to '
                        f'non-zero) before {where}, so a mask cannot zero '
                        'them',
                    )
                    self.report(
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
        info = self.info(t)
        if info is not None:
            self.fix_segs(info.segs, reason)
        else:
            self.check_leak(t, where)

    # ------------------------------------------------------ module hooks
    def _classify(self, module: nn.Module) -> Tuple[str, Optional[Handler]]:
        hit = self._kind_cache.get(id(module))
        if hit is not None and hit[0] is module:
            return hit[1], hit[2]
        res: Tuple[str, Optional[Handler]] = ('transparent', None)
        for match, h in list(self._extra_handlers) + registered_handlers():
            if matches(match, module):
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
            ts = tensors_in((args, kwargs))
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
            outs = tensors_in(output)
            self.calls.setdefault(frame.name, []).append(
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
                    self.set(output, res[0], res[1])
                else:
                    for t in outs:
                        self.stop(t)
            elif frame.kind == 'opaque':
                reason = (
                    f'{type(module).__name__} has parameters and no layer '
                    'handler (register one with register_layer_handler)'
                )
                for t in tensors_in((args, kwargs)):
                    self._keep_tensor(
                        t, f'it feeds {frame.name}: {reason}', frame.name
                    )
                self.report(frame.name, reason)
                for t in outs:
                    self.stop(t)
        finally:
            self.busy = False
        return None

    # --------------------------------------------------------- functions
    def on_function(self, func, args, kwargs, out) -> None:
        """Interpret one torch function call seen between modules."""
        ins = tensors_in((args, kwargs))
        tracked = [t for t in ins if self.info(t) is not None]
        if not tracked:
            return
        raw = getattr(func, '__name__', None) or repr(func)
        if raw == '__get__':
            raw = 'get:' + getattr(
                getattr(func, '__self__', None), '__name__', '?'
            )
        base, rev, _ = normalise(raw)
        outs = tensors_in(out)
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
            and self.info(args[0]) is None
        ):
            return  # the traced tensor only lends its dtype / shape
        rule = _RULES.get(base)
        if rule is None:
            self._unknown(raw, ins, outs, where)
            return
        got = rule(self, base, rev, args, kwargs, out, where)
        if got is False:
            self._unknown(raw, ins, outs, where)
        elif isinstance(got, str):  # modelled: this use mixes channels
            self._unknown(raw, ins, outs, where, got)

    def _unknown(self, raw: str, ins, outs, where: str,
                 mixes: Optional[str] = None) -> None:
        """Keep the inputs' channels; report ``raw`` as not modelled, or
        (``mixes``: how this call mixes channels) only keep."""
        why = mixes or f'pass {raw}'
        for t in ins:
            self._keep_tensor(t, f'its channels {why} in {where}', where)
        if mixes is None:
            self.report(
                where, f'torch function {raw!r} is not modelled by the tracer'
            )
        for t in outs:
            self._infos.pop(id(t), None)
            self.stop(t)


class TraceMode(TorchFunctionMode):
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


__all__ = ['TraceContext', 'TraceMode']
