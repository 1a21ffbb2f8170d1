"""How the channel tracer reads torch functions called between modules.

Every rule gets ``(ctx, base, rev, args, kwargs, out, where)``: the
`TraceContext`, the normalised function name, whether the operands are
reversed (``__rsub__``), the call and its result, and the module it ran in.
It sets the channel map of the result and returns True; or returns a string
saying how this call mixes the channels (a reshape that merges them with
another axis, a mean over them), and the tracer keeps the inputs' channels
at full width for that reason; or returns False when the call is outside
what it models, and the tracer keeps them and reports the function.
"""

from typing import (
    TYPE_CHECKING,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Tuple,
)

from torch import Tensor

if TYPE_CHECKING:
    from .channel_map import TensorInfo
    from .tracer import TraceContext

#: Group id of channels that are never pruned (inputs, model outputs, ...).
FIXED = -1


def tensors_in(obj) -> List[Tensor]:
    """Tensors inside nested lists / tuples / dicts, in order."""
    out: List[Tensor] = []
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, Tensor):
            out.append(o)
        elif isinstance(o, (list, tuple)):
            stack.extend(reversed(o))
        elif isinstance(o, dict):
            stack.extend(reversed(list(o.values())))
    return out


def prod(xs: Iterable[int]) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def _words(text: str) -> frozenset:
    return frozenset(text.split())


_BINARY_DUNDER = _words(
    'add sub mul truediv floordiv div pow and or xor mod matmul'
)
_ALIASES = {
    'truediv': 'div', 'true_divide': 'div', 'divide': 'div',
    'subtract': 'sub', 'multiply': 'mul', 'concat': 'cat',
    'concatenate': 'cat', 'clip': 'clamp', '_threshold': 'threshold',
    'swapaxes': 'transpose', 'swapdims': 'transpose',
    'absolute': 'abs', 'negative': 'neg', 'floordiv': 'floor_divide',
    'and': 'logical_and', 'greater': 'gt', 'less': 'lt',
    'greater_equal': 'ge', 'less_equal': 'le', 'not_equal': 'ne',
    'upsample_nearest': 'interpolate', 'upsample_bilinear': 'interpolate',
    'upsample': 'interpolate', 'get:data': 'detach',
}  # fmt: skip

# Functions that return no tensor and read no channel values.
META = _words(
    'size dim numel ndimension nelement is_contiguous stride storage_offset '
    'data_ptr element_size get_device is_floating_point is_complex len hash '
    'repr format get:shape get:dtype get:device get:requires_grad get:ndim '
    'get:is_cuda get:grad_fn get:is_leaf get:layout get:names get:grad '
    'get:_version get:is_sparse get:is_quantized get:is_meta get:output_nr '
    'get:_base type'
)
# Return Python scalars; harmless on one-element tensors.
SCALAR = _words('item bool float int index')
# Tensors made without reading the input's values (or in-place no-ops).
CREATE = _words(
    'new_zeros new_ones new_empty new_full new_tensor zeros_like ones_like '
    'empty_like full_like rand_like randn_like randint_like requires_grad '
    'retain_grad zero fill normal uniform'
)
# Methods whose other tensor argument only lends a dtype, device or shape.
LIKE = _words('type_as to view_as reshape_as expand_as')
# Element-wise, per channel, and 0 stays 0.
_UNARY_ZERO = _words(
    'relu relu6 leaky_relu elu selu celu gelu silu mish hardswish '
    'tanh neg abs clone contiguous detach to float half double bfloat16 '
    'type_as type cpu cuda dropout dropout1d dropout2d dropout3d '
    'alpha_dropout feature_alpha_dropout sign sqrt square erf softsign '
    'tanhshrink hardshrink softshrink rrelu sin tan asin atan sinh asinh '
    'atanh expm1 log1p trunc round floor ceil nan_to_num frac'
)
# Element-wise, per channel, but 0 may become non-zero.
_UNARY_NONZERO = _words(
    'sigmoid hardsigmoid exp exp2 softplus logsigmoid cos cosh log log2 '
    'log10 reciprocal rsqrt erfc acos logical_not bitwise_not isnan isinf '
    'isfinite signbit'
)
# Element-wise, per channel; 0 stays 0 only for some arguments (`_op_unary`).
_UNARY_BOUNDED = _words('clamp clamp_min clamp_max hardtanh threshold')
# Per channel over the spatial axes of an [N, C, ...] tensor; 0 stays 0.
_SPATIAL = _words(
    'max_pool1d max_pool2d max_pool3d max_pool1d_with_indices '
    'max_pool2d_with_indices max_pool3d_with_indices avg_pool1d avg_pool2d '
    'avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d '
    'adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d '
    'adaptive_max_pool1d_with_indices adaptive_max_pool2d_with_indices '
    'adaptive_max_pool3d_with_indices lp_pool1d lp_pool2d interpolate'
)
_ADDLIKE = _words('add sub maximum minimum fmax fmin')
_MULLIKE = _words('mul logical_and')
_DIVLIKE = _words('div floor_divide')
_CMPLIKE = _words(
    'eq ne lt le gt ge logical_or logical_xor where atan2 '
    'hypot or xor mod remainder fmod'
)
_REDUCE_ZERO = _words(
    'mean sum amax amin max min std var prod median nansum nanmean norm'
)
_REDUCE_NONZERO = _words('logsumexp argmax argmin all any count_nonzero')


def normalise(raw: str) -> Tuple[str, bool, bool]:
    """-> (base name, operands reversed, in place)."""
    rev = inplace = False
    name = raw
    if raw.startswith('__') and raw.endswith('__'):
        core = raw[2:-2]
        if core[:1] == 'i' and core[1:] in _BINARY_DUNDER:
            name, inplace = core[1:], True
        elif core[:1] == 'r' and core[1:] in _BINARY_DUNDER:
            name, rev = core[1:], True
        else:
            name = core
    elif raw.endswith('_') and not raw.startswith('_'):
        name, inplace = raw[:-1], True
    return _ALIASES.get(name, name), rev, inplace


def arg(args, kwargs, pos: int, key: str, default=None):
    if key in kwargs:
        return kwargs[key]
    return args[pos] if len(args) > pos else default


def _bounded_at_zero(base: str, args, kwargs) -> Optional[float]:
    """``f(0)`` of a clamp-like op, or None for non-scalar bounds.

    A pruned channel is 0 before the op; it stays prunable only if
    ``f(0) == 0`` (e.g. ``hardtanh(0.1, 1)`` maps it to 0.1).
    """
    if base == 'threshold':  # y = x if x > threshold else value
        th = arg(args, kwargs, 1, 'threshold')
        value = arg(args, kwargs, 2, 'value')
        if not (_is_num(th) and _is_num(value)):
            return None
        return 0.0 if 0 > th else float(value)
    if base == 'hardtanh':
        lo = arg(args, kwargs, 1, 'min_val', -1.0)
        hi = arg(args, kwargs, 2, 'max_val', 1.0)
    elif base == 'clamp_min':
        lo, hi = arg(args, kwargs, 1, 'min'), None
    elif base == 'clamp_max':
        lo, hi = None, arg(args, kwargs, 1, 'max')
    else:  # clamp / clip
        lo = arg(args, kwargs, 1, 'min')
        hi = arg(args, kwargs, 2, 'max')
    if not all(v is None or _is_num(v) for v in (lo, hi)):
        return None
    y = 0.0 if lo is None else max(0.0, float(lo))
    return y if hi is None else min(y, float(hi))


def _is_num(v) -> bool:
    return isinstance(v, (int, float))


def _op_unary(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    x = args[0] if args else None
    info = ctx.info(x) if isinstance(x, Tensor) else None
    if info is None or not isinstance(out, Tensor):
        return False
    segs = info.segs
    nonzero = base in _UNARY_NONZERO
    if base in _UNARY_BOUNDED:
        f0 = _bounded_at_zero(base, args, kwargs)
        if f0 is None:
            return False
        nonzero = f0 != 0
    elif base == 'pow':
        e = arg(args, kwargs, 1, 'exponent')
        if rev or not isinstance(e, (int, float)):
            return False
        nonzero = e <= 0
    if nonzero:
        segs = tuple(s._replace(dirty=('f', base)) for s in segs)
    ctx.set(out, segs, info.cdim)
    return True


def _op_spatial(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    x = args[0] if args else kwargs.get('input')
    info = ctx.info(x) if isinstance(x, Tensor) else None
    if info is None or info.cdim != 1 or x.dim() < 3:
        return False
    y = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(y, Tensor):
        return False
    ctx.set(y, info.segs, 1)
    return True


def _op_pad(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    x = args[0] if args else kwargs.get('input')
    info = ctx.info(x) if isinstance(x, Tensor) else None
    pad = arg(args, kwargs, 1, 'pad')
    mode = arg(args, kwargs, 2, 'mode', 'constant')
    value = arg(args, kwargs, 3, 'value', None)
    if info is None or pad is None:
        return False
    if info.cdim >= x.dim() - len(pad) // 2:
        return False  # pads the channel axis
    segs = info.segs
    if mode == 'constant' and value not in (None, 0, 0.0):
        segs = tuple(s._replace(dirty=('f', 'pad')) for s in segs)
    ctx.set(out, segs, info.cdim)
    return True


def _op_elementwise(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    """Broadcasting element-wise ops on several operands."""
    if not isinstance(out, Tensor) or out.dim() == 0:
        return False
    if (
        base in ('add', 'sub', 'mul', 'div', 'floor_divide', 'pow')
        and len(args) == 1
        and 'other' in kwargs
    ):
        args = (args[0], kwargs['other'])
    if base == 'pow':
        if len(args) > 1 and not isinstance(args[1], Tensor) and not rev:
            return _op_unary(ctx, base, rev, args, kwargs, out, where)
        base = 'cmp'  # tensor exponents: values change, channels stay
    operands = list(args)
    if rev:
        operands = operands[::-1]
    nd = out.dim()
    cdims = set()
    for x in operands:
        info = ctx.info(x) if isinstance(x, Tensor) else None
        if info is not None:
            cdims.add(info.cdim + nd - x.dim())
    if len(cdims) != 1:
        return False
    co = cdims.pop()
    c = out.shape[co]
    full: List[Tuple[Tensor, TensorInfo]] = []
    other = False  # some operand adds values that are not traced channels
    per_channel_untracked = False
    for x in operands:
        if isinstance(x, Tensor):
            info = ctx.info(x)
            k = co - (nd - x.dim())
            size = x.shape[k] if k >= 0 else 1
            if info is not None and size == c:
                full.append((x, info))
                continue
            other = True
            if info is not None:  # a traced channel broadcast over all
                ctx.fix_segs(
                    info.segs,
                    f'its single channel is broadcast '
                    f'over {c} channels by {base} in {where}',
                    where,
                )
            else:
                ctx.check_leak(x, where)
                if size == c and c > 1:
                    per_channel_untracked = True
        elif isinstance(x, (int, float, bool)):
            other = other or (x != 0)
        elif x is not None:
            return False
    if not full:
        return False
    if per_channel_untracked:
        # Modelled, and kept: a per-channel constant (a box coder's stds)
        # cannot be sliced with the channels.
        for _, info in full:
            ctx.fix_segs(
                info.segs,
                f'{base} in {where} combines its '
                'channels with a per-channel tensor that is not traced',
            )
    first = full[0][1].segs
    for _, info in full[1:]:
        ctx.unify(first, info.segs, f'{base} in {where}')
    if base in _ADDLIKE:
        for _, info in full:
            ctx.resolve(info.segs, f'{base} in {where}')
        segs = tuple(
            s._replace(dirty=('f', base) if other else None) for s in first
        )
    elif base in _MULLIKE:
        if any(ctx.is_exact(info.segs) for _, info in full):
            segs = tuple(s._replace(dirty=None) for s in first)
        else:
            segs = ctx.resolve(first, f'{base} in {where}')
    elif base in _DIVLIKE:
        num = operands[0]
        num_info = ctx.info(num) if isinstance(num, Tensor) else None
        for x, info in full:
            if x is not num:
                ctx.fix_segs(
                    info.segs, f'its channels divide in {where}', where
                )
        if num_info is not None and any(x is num for x, _ in full):
            segs = ctx.resolve(num_info.segs, f'{base} in {where}')
        else:
            segs = tuple(s._replace(dirty=('f', base)) for s in first)
    else:
        segs = tuple(s._replace(dirty=('f', base)) for s in first)
    ctx.set(out, segs, co)
    return True


def _op_cat(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    seq = arg(args, kwargs, 0, 'tensors')
    if not isinstance(seq, (list, tuple)) or not isinstance(out, Tensor):
        return False
    nd = out.dim()
    dim = arg(args, kwargs, 1, 'dim', 0) % nd  # stack: an axis of `out`
    infos = [ctx.info(t) for t in seq]
    cdims = {
        (i.cdim + 1 if base == 'stack' and dim <= i.cdim else i.cdim)
        for i in infos
        if i is not None
    }
    if len(cdims) != 1:
        return False
    co = cdims.pop()
    if base == 'cat' and co == dim:
        segs: list = []
        for t, i in zip(seq, infos):
            if i is None:
                ctx.check_leak(t, where)
                segs.extend(ctx.fixed(t.shape[dim]))
            else:
                segs.extend(i.segs)
        ctx.set(out, tuple(segs), co)
        return True
    # Joining along another axis: every operand holds the same channels.
    known = [i for i in infos if i is not None]
    for t, i in zip(seq, infos):
        if i is None:
            ctx.check_leak(t, where)
            for k in known:
                ctx.fix_segs(
                    k.segs,
                    f'{base} in {where} joins its channels '
                    'with a tensor that is not traced',
                    where,
                )
    for k in known[1:]:
        ctx.unify(known[0].segs, k.segs, f'{base} in {where}')
    for k in known:
        ctx.resolve(k.segs, f'{base} in {where}')
    ctx.set(out, tuple(s._replace(dirty=None) for s in known[0].segs), co)
    return True


def _op_split(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    x = args[0] if args else None
    info = ctx.info(x) if isinstance(x, Tensor) else None
    if info is None:
        return False
    pos = 1 if base == 'unbind' else 2
    dim = arg(args, kwargs, pos, 'dim', 0) % x.dim()
    if dim == info.cdim:
        return False
    cdim = (
        info.cdim - 1 if (base == 'unbind' and dim < info.cdim) else info.cdim
    )
    for t in tensors_in(out):
        ctx.set(t, info.segs, cdim)
    return True


def _op_reshape(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    x = args[0] if args else None
    info = ctx.info(x) if isinstance(x, Tensor) else None
    if info is None or not isinstance(out, Tensor):
        return False
    c = x.shape[info.cdim]
    if base in ('expand', 'expand_as', 'repeat', 'broadcast_to'):
        p = info.cdim + out.dim() - x.dim()
        if out.shape[p] != c:
            return False
    else:
        pre = prod(x.shape[: info.cdim])
        acc, p = 1, None
        for i, s in enumerate(out.shape):
            if acc == pre and s == c:
                p = i
                break
            acc *= s
            if acc > pre:
                break
        if p is None:
            return f'are merged with another axis by {base}'
    ctx.set(out, info.segs, p)
    return True


def _op_permute(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    x = args[0] if args else None
    info = ctx.info(x) if isinstance(x, Tensor) else None
    if info is None or not isinstance(out, Tensor):
        return False
    nd = x.dim()
    if base == 'permute':
        dims = args[1:] if len(args) > 1 else kwargs.get('dims')
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = dims[0]
        dims = [d % nd for d in dims]
        p = dims.index(info.cdim)
    elif base == 't':
        p = (nd - 1 - info.cdim) if nd == 2 else info.cdim
    else:  # transpose
        d0 = arg(args, kwargs, 1, 'dim0') % nd
        d1 = arg(args, kwargs, 2, 'dim1') % nd
        p = d1 if info.cdim == d0 else d0 if info.cdim == d1 else info.cdim
    ctx.set(out, info.segs, p)
    return True


def _op_reduce(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    x = args[0] if args else None
    info = ctx.info(x) if isinstance(x, Tensor) else None
    if info is None:
        return False
    if (
        base in ('max', 'min')
        and len(args) > 1
        and isinstance(args[1], Tensor)
    ):
        return _op_elementwise(ctx, 'maximum', rev, args, kwargs, out, where)
    y = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(y, Tensor):
        return False
    dim = arg(args, kwargs, 2 if base == 'norm' else 1, 'dim')
    if isinstance(dim, Tensor):
        return False
    dims = set(range(x.dim())) if dim is None else {
        d % x.dim() for d in (dim if isinstance(dim, (list, tuple)) else [dim])
    }
    if info.cdim in dims:
        if base not in ('sum', 'nansum'):
            return f'are reduced over by {base}'
        # A sum over the channels is the same with the pruned ones zeroed
        # (masked model) or removed (export): zero them, track no further.
        ctx.resolve(info.segs, where)
        for t in tensors_in(out):
            ctx.stop(t)
        return True
    keep = y.dim() == x.dim()
    p = (
        info.cdim
        if keep
        else info.cdim - sum(1 for d in dims if d < info.cdim)
    )
    segs = info.segs
    if base in _REDUCE_NONZERO:
        segs = tuple(s._replace(dirty=('f', base)) for s in segs)
    ctx.set(y, segs, p)
    return True


def _op_softmax(ctx: 'TraceContext', base, rev, args, kwargs, out, where):
    x = args[0] if args else None
    info = ctx.info(x) if isinstance(x, Tensor) else None
    dim = arg(args, kwargs, 1, 'dim')
    if info is None or dim is None or dim % x.dim() == info.cdim:
        return False
    ctx.set(
        out, tuple(s._replace(dirty=('f', base)) for s in info.segs), info.cdim
    )
    return True


OPS: Dict[str, Callable] = {}
for _n in _UNARY_ZERO | _UNARY_NONZERO | _UNARY_BOUNDED:
    OPS[_n] = _op_unary
for _n in _SPATIAL:
    OPS[_n] = _op_spatial
for _n in _ADDLIKE | _MULLIKE | _DIVLIKE | _CMPLIKE | {'pow'}:
    OPS[_n] = _op_elementwise
for _n in ('cat', 'stack'):
    OPS[_n] = _op_cat
for _n in ('split', 'chunk', 'unbind', 'tensor_split', 'split_with_sizes'):
    OPS[_n] = _op_split
for _n in _words(
    'view reshape flatten unflatten squeeze unsqueeze view_as reshape_as '
    'expand expand_as repeat broadcast_to'
):
    OPS[_n] = _op_reshape
for _n in ('permute', 'transpose', 't'):
    OPS[_n] = _op_permute
for _n in _REDUCE_ZERO | _REDUCE_NONZERO:
    OPS[_n] = _op_reduce
OPS['softmax'] = _op_softmax
OPS['log_softmax'] = _op_softmax
OPS['pad'] = _op_pad
