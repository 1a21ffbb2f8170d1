"""Post-train channel pruning baseline on Torch-Pruning (``torch_pruning``).

`prune_post_train` takes a trained mmdet detector and physically removes
channels with Torch-Pruning's own dependency graph and layer pruners, ranked
globally by a Torch-Pruning importance, until the detector keeps a target
fraction ``psi`` of its dense MACs. It is the one-shot baseline against which
in-train pruning (`mmprune.engine.hooks.InTrainPruningHook`) is compared; it
shares none of mmprune's group discovery or channel surgery.

How the target is met: Torch-Pruning takes a *channel* pruning ratio, not a
MAC budget, so the ratio is bisected. Each trial prunes a deep copy of the
dense detector with ``global_pruning=True`` and counts its MACs; the detector
itself is pruned once, at the chosen ratio.

MACs are counted by `mmprune.engine.report.complexity`
(``mmengine.analysis.FlopAnalyzer``, a jit trace of ``model._forward``) rather
than ``tp.utils.count_ops_and_params``: it is the counter the in-train runs,
the export report and the tests use, so the ``psi`` of both methods are
comparable (conv, transposed conv, deformable conv and linear
multiply-accumulates), and it counts mmcv's deformable convs, which
Torch-Pruning's hook counter does not know (they would count as free).

What Torch-Pruning handles as is, and the workarounds (all through its
documented extension points):

* Concatenations, residual adds and the depthwise ``ConvTranspose2d``
  upsamplers of the DLA-Up neck: handled by Torch-Pruning itself (a depthwise
  layer couples its input and output channels; its [C, 1, k, k] weight is cut
  along dim 0). Nothing to do.
* Deformable convs (mmcv ``ModulatedDeformConv2dPack`` / ``DCNv2Torch``,
  ``DeformConv2dPack``) are not ``nn.Conv2d``: Torch-Pruning takes their
  weights for "unwrapped parameters" and prunes the last non-singleton dim
  (a kernel dim), and pruning the DLA-Up neck with ``DCNv2Torch`` layers
  that way did not finish in 5 minutes. We register `DeformConvPruner` as a
  ``customized_pruners`` entry for each such class (output channels: weight
  dim 0 and bias; input channels: weight dim 1 *and* the offset conv's
  input, which reads the same tensor), and while Torch-Pruning traces, each
  deformable conv runs as the plain conv of the same weight, so the traced
  node has the channel dependencies of a conv. The offset conv's outputs
  (offsets, masks) are never pruned. Magnitude importances skip customized
  layers, so such a channel is ranked by the BatchNorm after it and by its
  consumers' input weights.
* Frozen parameters (``requires_grad=False``) leave no autograd node, and
  Torch-Pruning traces autograd; every parameter requires grad while it
  traces (restored after).
* Any other module with non-scalar parameters that Torch-Pruning does not
  know raises a ValueError instead of being guessed at.

The prediction layers are found, not named: the modules that produce the
tensors ``model._forward`` returns, walking back through parameter-free ops
(e.g. the heatmap's sigmoid). Torch-Pruning never prunes a group that holds
an ignored layer's output channels, so the raw outputs keep their shapes.
"""
from __future__ import annotations

import copy
import fnmatch
import math
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning import ops

from mmprune.core import is_deform_conv_pack

from .raw import flatten_outputs, raw_forward
from .report import complexity

__all__ = ['IMPORTANCES', 'DeformConvPruner', 'prediction_layers',
           'prune_post_train', 'search_ratio']

#: Importance names `prune_post_train` accepts.
IMPORTANCES = ('l1', 'bn', 'taylor', 'random')

#: Offset of the ``'random'`` importance's seed from torch's initial seed.
_RANDOM_SEED_BASE = 7919
#: Highest channel pruning ratio tried. Near 1, global ranking selects whole
#: groups, which Torch-Pruning then refuses to empty, so MACs can rise.
MAX_RATIO = 0.95
#: Bisection stops when the ratio bracket is this narrow ...
RATIO_RESOLUTION = 5e-4
#: ... or when the MACs ratio is this close below the target.
PSI_GAP = 1e-3


class DeformConvPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning layer pruner of mmcv's ``(Modulated)DeformConv2dPack``.

    Weight ``[C_out, C_in, kh, kw]`` (groups = deform_groups = 1). Output
    channels cut weight dim 0 and the bias; input channels cut weight dim 1
    and the input of ``conv_offset`` (it reads the same ``[N, C_in, H, W]``
    tensor). Register it with ``customized_pruners={type(layer): pruner}``.
    """

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]
                           ) -> nn.Module:
        """Remove output channels ``idxs`` (weight rows and bias)."""
        keep = sorted(set(range(layer.out_channels)) - set(idxs))
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        if layer.bias is not None:
            layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
        layer.out_channels = len(keep)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]
                          ) -> nn.Module:
        """Remove input channels ``idxs`` of the layer and its offset conv."""
        keep = sorted(set(range(layer.in_channels)) - set(idxs))
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
        offset = layer.conv_offset
        offset.weight = self._prune_parameter_and_grad(offset.weight, keep, 1)
        layer.in_channels = offset.in_channels = len(keep)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        """C_out."""
        return layer.out_channels

    def get_in_channels(self, layer: nn.Module) -> int:
        """C_in."""
        return layer.in_channels


def _deform_convs(model: nn.Module) -> List[nn.Module]:
    """The deformable convs of ``model``; raise on a form we cannot prune."""
    found = [m for m in model.modules() if is_deform_conv_pack(m)]
    for m in found:
        if getattr(m, 'groups', 1) != 1 or getattr(m, 'deform_groups', 1) != 1:
            raise ValueError(
                f'prune_post_train: deformable conv {type(m).__name__} with '
                f'groups={m.groups}, deform_groups={m.deform_groups}; only '
                'groups=1, deform_groups=1 can be pruned')
    return found


def _conv_proxy(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """Plain conv with ``layer``'s weight, bias and geometry: same output
    shape and channel dependencies as the deformable conv."""

    def forward(x: Tensor) -> Tensor:
        return F.conv2d(x, layer.weight, layer.bias, layer.stride,
                        layer.padding, layer.dilation, layer.groups)

    return forward


@contextmanager
def _traceable(model: nn.Module, proxy_dcn: bool = True) -> Iterator[None]:
    """Every parameter requires grad (autograd tracing sees frozen layers)
    and, with ``proxy_dcn``, deformable convs run as `_conv_proxy`."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    dcns = _deform_convs(model) if proxy_dcn else []
    for p in frozen:
        p.requires_grad_(True)
    for m in dcns:
        m.forward = _conv_proxy(m)  # instance attribute shadows the class's
    try:
        with torch.enable_grad():
            yield
    finally:
        for m in dcns:
            del m.forward
        for p in frozen:
            p.requires_grad_(False)


def _check_known_layers(model: nn.Module) -> None:
    """Raise if a module with non-scalar parameters is neither a layer type
    Torch-Pruning prunes nor a deformable conv (it would be guessed at)."""
    known = tuple(
        ops.type2class(t) for t in tp.DependencyGraph().REGISTERED_PRUNERS)
    unknown = []
    for name, m in model.named_modules():
        if isinstance(m, known) or is_deform_conv_pack(m):
            continue
        unknown += [f'{name}.{p}' if name else p
                    for p, v in m.named_parameters(recurse=False)
                    if sum(s > 1 for s in v.shape) > 0]
    if unknown:
        raise ValueError(
            'prune_post_train: Torch-Pruning knows no pruner for the layers '
            f'owning {unknown[:8]}{" ..." if len(unknown) > 8 else ""}; '
            'expected conv / linear / norm layers or mmcv deformable convs '
            '(give the others a tp customized pruner)')


def prediction_layers(model: nn.Module, inputs: Tensor,
                      data_samples: list) -> List[str]:
    """Names of the modules whose outputs ``model._forward`` returns.

    Walks back from every returned tensor through parameter-free ops (e.g.
    sigmoid, views) to the first modules that own parameters: for CenterNet,
    the last conv of each of the heatmap / wh / offset branches.

    Args:
        model: an mmdet detector.
        inputs: ``[N, 3, H, W]`` preprocessed batch.
        data_samples: its ``DetDataSample`` list.

    Returns:
        Sorted module names.
    """
    names = {m: n for n, m in model.named_modules()}
    owner = {}

    def record(module, args, out):
        if isinstance(out, Tensor) and out.grad_fn is not None:
            owner[out.grad_fn] = names[module]

    handles = [m.register_forward_hook(record) for m in model.modules()
               if next(m.parameters(recurse=False), None) is not None]
    try:
        with _traceable(model):
            outs = flatten_outputs(raw_forward(model, inputs, data_samples))
    finally:
        for h in handles:
            h.remove()
    found = set()
    for i, out in enumerate(outs):
        hits, stack, seen = set(), [out.grad_fn], set()
        while stack:
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            if fn in owner:
                hits.add(owner[fn])
            else:
                stack.extend(f for f, _ in fn.next_functions)
        if not hits:
            raise ValueError(
                f'prediction_layers: raw output {i} {tuple(out.shape)} of '
                f'{type(model).__name__}._forward comes from no layer with '
                'parameters; expected every output to end in a conv/linear')
        found |= hits
    return sorted(found)


def _match_ignore(model: nn.Module, ignore: Optional[Sequence[str]]
                  ) -> List[str]:
    """Module names matching the ``ignore`` globs; raise on a dead glob."""
    if ignore is None:
        return []
    if isinstance(ignore, str):
        ignore = [ignore]
    names = [n for n, _ in model.named_modules() if n]
    matched = []
    for pattern in ignore:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(
                f'prune_post_train: ignore glob {pattern!r} matches no module '
                f'of {type(model).__name__}; expected module-name globs such '
                f'as {names[0]!r} or "bbox_head.*"')
        matched += hits
    return matched


def _importance(name: str) -> tp.importance.Importance:
    """Torch-Pruning 1.6 importance for ``name`` (one of `IMPORTANCES`)."""
    if name == 'l1':
        # Channel L1 norms over the group, mean-normalised per group.
        return tp.importance.MagnitudeImportance(p=1)
    if name == 'bn':
        # |gamma| of the group's BatchNorms (Network Slimming); groups
        # without a BatchNorm get no score and are not pruned.
        return tp.importance.BNScaleImportance()
    if name == 'random':
        # Uniform random scores: the control that any importance must beat.
        return tp.importance.RandomImportance()
    # |w * dL/dw| over the group (first-order Taylor), needs gradients. In
    # torch-pruning 1.6 only conv / linear weights count: its norm branch
    # tests for the GroupNorm pruner, so BatchNorms are skipped.
    return tp.importance.TaylorImportance()


class _FlooredImportance(tp.importance.Importance):
    """A Torch-Pruning importance whose groups each keep a per-layer floor.

    Torch-Pruning 1.6's ``max_pruning_ratio`` does not bound one layer in a
    one-shot global step: it only skips groups already cut below the floor
    *before* the step, and caps the global ratio. Here, in each group of
    ``n`` coupled channels, the ``ceil(n * (1 - max_ratio))`` most important
    get a score above every other channel's (an offset larger than any
    score), so the global threshold reaches them only after every
    unprotected channel of every layer is gone. The ranking of the others
    is unchanged.
    """

    def __init__(self, base: tp.importance.Importance, max_ratio: float):
        self.base, self.max_ratio = base, max_ratio

    def __call__(self, group, **kwargs):
        imp = self.base(group, **kwargs)
        if imp is None or self.max_ratio >= 1:
            return imp
        keep = math.ceil(len(imp) * (1 - self.max_ratio) - 1e-9)
        out = imp.clone()
        top = torch.topk(imp, keep).indices
        out[top] += 1e6 * (1 + imp.abs().max())
        return out


def _prune(model: nn.Module, example: Tuple[Tensor, list], importance: str,
           ratio: float, round_to: Optional[int], ignored: Sequence[str],
           max_layer_ratio: float = 1.0) -> None:
    """Prune ``model`` in place at channel pruning ``ratio`` (global),
    no layer losing more than ``max_layer_ratio`` of its channels."""
    modules = dict(model.named_modules())
    dcn_types = {type(m) for m in _deform_convs(model)}
    with _traceable(model):
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=_FlooredImportance(_importance(importance),
                                          max_layer_ratio),
            global_pruning=True,
            pruning_ratio=ratio,
            max_pruning_ratio=max_layer_ratio,
            ignored_layers=[modules[n] for n in ignored],
            round_to=round_to,
            customized_pruners={t: DeformConvPruner() for t in dcn_types},
            forward_fn=lambda m, x: raw_forward(m, x[0], x[1]),
            # Fresh dicts: BasePruner's defaults are shared mutable dicts it
            # writes to, which would keep every trial copy alive.
            in_channel_groups={},
            out_channel_groups={},
            num_heads={})
        # Random scores are drawn in step(): the same stream for every
        # trial copy and the final cut, so they rank channels alike.
        with torch.random.fork_rng():
            torch.manual_seed(_RANDOM_SEED_BASE + torch.initial_seed() %
                              (1 << 31))
            pruner.step()


def _copy_with_grads(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` that keeps the parameters' ``.grad``
    (``Parameter.__deepcopy__`` drops them; Taylor importance needs them)."""
    new = copy.deepcopy(model)
    for p, q in zip(model.parameters(), new.parameters()):
        if p.grad is not None:
            q.grad = p.grad.detach().clone()
    return new


def prune_post_train(model: nn.Module,
                     inputs: Tensor,
                     data_samples: list,
                     psi_target: float,
                     importance: str = 'l1',
                     channel_multiple: int = 1,
                     ignore: Optional[Sequence[str]] = None,
                     loss_fn: Optional[Callable[[nn.Module], Tensor]] = None,
                     tol: float = 0.02,
                     max_layer_ratio: float = 1.0) -> Dict[str, object]:
    """Prune a trained detector's channels in place to a MACs target.

    Args:
        model: an mmdet ``BaseDetector`` (not wrapped), trained. Its conv /
            norm / linear / deformable-conv widths are cut in place by
            Torch-Pruning; its train/eval mode is restored at the end.
        inputs: ``[1, 3, H, W]`` preprocessed input; the graph is traced and
            the MACs are counted at this shape.
        data_samples: the matching ``DetDataSample`` list (metainfo
            ``img_shape``, ``pad_shape``, ``batch_input_shape``, ...).
        psi_target: target MACs ratio pruned / dense, in (0, 1].
        importance: ``'l1'`` (``tp.importance.MagnitudeImportance(p=1)``),
            ``'bn'`` (``BNScaleImportance``) or ``'taylor'``
            (``TaylorImportance``; needs ``loss_fn``) or ``'random'``
            (``RandomImportance``, a control; seed torch's global RNG).
        channel_multiple: every pruned layer keeps a multiple of this many
            channels (Torch-Pruning's ``round_to``); 1 for none.
        ignore: module-name globs never to prune (besides the prediction
            layers, found by `prediction_layers`).
        loss_fn: ``loss_fn(model) -> scalar Tensor`` for ``'taylor'``, e.g.
            the summed ``model.loss(inputs, samples_with_gt)``. It is
            backpropagated once; the gradients are cleared at the end.
        tol: the achieved ratio lands in ``[psi_target - tol, psi_target]``.
        max_layer_ratio: the most of one layer's channels the global ranking
            may remove (Torch-Pruning's ``max_pruning_ratio``); 0.5 is the
            per-layer floor of an in-train run with ``min_channels=0.5``.

    Returns:
        dict with ``psi`` (achieved MACs ratio), ``macs_dense``, ``macs``
        (per image, multiply-accumulates of conv / deconv / DCN / linear),
        ``params_dense``, ``params``, ``importance``, ``ratio`` (the
        Torch-Pruning channel pruning ratio used), ``ignored`` (names of the
        modules kept whole) and ``trials`` (pruned copies counted).

    Raises:
        ValueError: unknown ``importance``, bad ``psi_target`` /
            ``channel_multiple`` / ``ignore`` / ``loss_fn``, layers
            Torch-Pruning cannot prune, or a target no ratio reaches (the
            message gives the lowest MACs ratio reached).
    """
    if importance not in IMPORTANCES:
        raise ValueError(
            f'prune_post_train: importance must be one of {IMPORTANCES}, got '
            f'{importance!r}')
    if not 0 < psi_target <= 1:
        raise ValueError(
            f'prune_post_train: psi_target must be in (0, 1] (pruned MACs / '
            f'dense MACs), got {psi_target!r}')
    if not 0 < tol < 1:
        raise ValueError(
            f'prune_post_train: tol must be in (0, 1) (a MACs ratio), got '
            f'{tol!r}')
    if not 0 < max_layer_ratio <= 1:
        raise ValueError(
            'prune_post_train: max_layer_ratio must be in (0, 1] (a share '
            f'of one layer\'s channels), got {max_layer_ratio!r}')
    if int(channel_multiple) != channel_multiple or channel_multiple < 1:
        raise ValueError(
            f'prune_post_train: channel_multiple must be an int >= 1, got '
            f'{channel_multiple!r}')
    if (importance == 'taylor') != (loss_fn is not None):
        raise ValueError(
            'prune_post_train: loss_fn(model) -> scalar loss is required by '
            f'importance="taylor" and only by it; got importance='
            f'{importance!r} with loss_fn={loss_fn!r}')
    _check_known_layers(model)
    _deform_convs(model)
    ignored = sorted(set(_match_ignore(model, ignore)))
    was_training = model.training
    try:
        return _prune_to_target(model, inputs, data_samples, psi_target,
                                importance, channel_multiple, ignored,
                                loss_fn, tol, max_layer_ratio)
    finally:
        if loss_fn is not None:
            model.zero_grad(set_to_none=True)
        model.train(was_training)


def _prune_to_target(model, inputs, data_samples, psi_target, importance,
                     channel_multiple, ignored, loss_fn, tol,
                     max_layer_ratio) -> dict:
    """`prune_post_train` after its argument checks."""
    model.eval()
    example = (inputs, data_samples)
    round_to = int(channel_multiple) if channel_multiple > 1 else None
    ignored = sorted(set(prediction_layers(model, inputs, data_samples))
                     | set(ignored))
    if loss_fn is not None:
        with _traceable(model, proxy_dcn=False):
            model.zero_grad(set_to_none=True)
            loss = loss_fn(model)
            if not isinstance(loss, Tensor) or loss.dim() != 0:
                raise ValueError(
                    'prune_post_train: loss_fn(model) must return a scalar '
                    f'Tensor, got {type(loss).__name__} '
                    f'{tuple(getattr(loss, "shape", ()))}')
            loss.backward()

    dense = complexity(model, inputs, data_samples)
    macs_dense = dense['macs']
    if macs_dense <= 0:
        raise ValueError(
            f'prune_post_train: FlopAnalyzer counts no conv/linear MACs for '
            f'{type(model).__name__}._forward at {tuple(inputs.shape)}')
    trials = []  # (ratio, psi)

    def measure(ratio: float) -> float:
        small = _copy_with_grads(model)
        _prune(small, example, importance, ratio, round_to, ignored,
               max_layer_ratio)
        psi = complexity(small, inputs, data_samples)['macs'] / macs_dense
        trials.append((ratio, psi))
        return psi

    ratio, psi_trial = search_ratio(
        measure, psi_target, tol,
        f'importance={importance!r}, channel_multiple={channel_multiple}, '
        f'{len(ignored)} layers ignored')
    if ratio > 0:
        _prune(model, example, importance, ratio, round_to, ignored,
               max_layer_ratio)
    final = complexity(model, inputs, data_samples)
    psi = final['macs'] / macs_dense
    if abs(psi - psi_trial) > 1e-9:
        raise RuntimeError(
            f'prune_post_train: the detector pruned at ratio {ratio:.4f} has '
            f'MACs ratio {psi:.4f}, its trial copy had {psi_trial:.4f}; '
            'Torch-Pruning ranked the channels differently')
    return dict(
        psi=psi,
        macs_dense=macs_dense,
        macs=final['macs'],
        params_dense=dense['params'],
        params=final['params'],
        importance=importance,
        ratio=ratio,
        ignored=ignored,
        trials=len(trials))


def search_ratio(measure: Callable[[float], float], psi_target: float,
                 tol: float = 0.02, context: str = '') -> Tuple[float, float]:
    """Bisect a channel pruning ratio whose MACs ratio is just <= target.

    Args:
        measure: ``measure(ratio) -> psi``, the MACs ratio after pruning a
            fresh copy at ``ratio`` in [0, 1); assumed (mostly) decreasing.
        psi_target: target MACs ratio in (0, 1].
        tol: the result lands in ``[psi_target - tol, psi_target]``.
        context: appended to error messages.

    Returns:
        ``(ratio, psi)``: ratio 0 and psi 1 when ``psi_target >= 1``.

    Raises:
        ValueError: if even `MAX_RATIO` stays above the target (the message
            gives the lowest MACs ratio reached), or if the MACs ratio jumps
            over the window between two ratios closer than
            `RATIO_RESOLUTION`.
    """
    lo, psi_lo, hi, psi_hi = 0.0, 1.0, 0.0, 1.0
    if psi_target >= 1:
        return hi, psi_hi
    seen = []
    # Bracket psi(lo) > target >= psi(hi); MACs fall roughly as (1 - r)^2.
    r = min(max(1 - math.sqrt(psi_target), 0.01), MAX_RATIO)
    while True:
        psi = measure(r)
        seen.append((psi, r))
        if psi <= psi_target:
            hi, psi_hi = r, psi
            break
        lo, psi_lo = r, psi
        if r >= MAX_RATIO:
            low, at = min(seen)
            # Global ranking selects every channel tied at the threshold and
            # Torch-Pruning refuses to empty a group: equal scores (e.g. the
            # BN gammas of an untrained model) then prune nothing.
            hint = ('; nothing was pruned: are the importance scores all '
                    'equal (an untrained model)?' if low >= 1 else '')
            raise ValueError(
                f'prune_post_train: psi_target={psi_target} is unreachable; '
                f'the lowest MACs ratio reached is {low:.4f} (pruning ratio '
                f'{at:.3f}; {context}){hint}')
        r = min(r + (1 - r) / 2, MAX_RATIO)
    while hi - lo > RATIO_RESOLUTION and psi_target - psi_hi > PSI_GAP:
        mid = (lo + hi) / 2
        psi = measure(mid)
        if psi <= psi_target:
            hi, psi_hi = mid, psi
        else:
            lo, psi_lo = mid, psi
    if psi_hi < psi_target - tol:
        raise ValueError(
            f'prune_post_train: no pruning ratio lands in '
            f'[{psi_target - tol:.3f}, {psi_target}]: the MACs ratio jumps '
            f'from {psi_lo:.4f} (ratio {lo:.4f}) to {psi_hi:.4f} (ratio '
            f'{hi:.4f}); try a smaller channel_multiple or another '
            f'psi_target ({context})')
    return hi, psi_hi
