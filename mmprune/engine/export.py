"""Export a masked checkpoint as a physically smaller plain mmdet model.

``tools/export_pruned.py CONFIG CKPT --out DIR`` calls `export_pruned`, which

1. builds the detector of ``CONFIG`` and loads ``CKPT`` into it, refusing a
   checkpoint without masks (no ``prune_masks.*`` keys) or one whose weights
   do not fit the config (missing / unexpected keys, shape mismatches);
2. traces it the way `InTrainPruningHook` does (same ``skip``; at the hook's
   ``input_shape``, else at the first batch of the test dataloader) and loads
   the checkpoint's masks into a `MaskSet` of that plan;
3. removes every channel whose binary mask is 0
   (`mmprune.core.surgery.prune_model`);
4. writes ``DIR/model.pth`` (the small model's weights), ``DIR/channels.json``
   (the surgery, per module) and ``DIR/config.py`` (the config with the model
   as a ``PrunedModel``, the pruning hook and the prune optimizer wrapper
   removed), rebuilds the model from ``DIR/config.py``, checks that the
   weights load, and (``verify``) that its raw outputs equal the masked
   model's.
"""
from __future__ import annotations

import copy
import os
import os.path as osp
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config
from torch import Tensor, nn

from mmprune.core import CostModel, MaskSet, PrunePlan
from mmprune.core.surgery import ChannelSpec, prune_model

from .raw import flatten_outputs, raw_forward

#: Attribute of the detector that holds the masks during training (the
#: hook's ``MASKS_ATTR``); checkpoints hold ``prune_masks.masks.<group>.*``.
MASK_PREFIX = 'prune_masks.'
HOOK_TYPE = 'InTrainPruningHook'
_PRUNE_WRAPPERS = {'PruneOptimWrapper': 'OptimWrapper',
                   'PruneAmpOptimWrapper': 'AmpOptimWrapper'}
_PRUNE_WRAPPER_KEYS = ('mask_optimizer', 'mask_weight_decay')


class ExportError(ValueError):
    """The checkpoint or the config cannot be exported (message says why)."""


# ------------------------------------------------------------------ config
def load_config(config: Union[str, Config],
                cfg_options: Optional[dict] = None) -> Config:
    """Read a config file (or copy a `Config`) and merge ``cfg_options``."""
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file {config} does not exist')
        cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _type_name(t) -> str:
    return t if isinstance(t, str) else getattr(t, '__name__', str(t))


def prune_hook_cfg(cfg: Config) -> Optional[dict]:
    """The ``InTrainPruningHook`` entry of ``cfg.custom_hooks`` (or None)."""
    hooks = [h for h in cfg.get('custom_hooks', None) or []
             if _type_name(h.get('type')).split('.')[-1] == HOOK_TYPE]
    if len(hooks) > 1:
        raise ExportError(f'{cfg.filename}: custom_hooks lists '
                          f'{HOOK_TYPE} {len(hooks)} times')
    return dict(hooks[0]) if hooks else None


def prune_hook_args(cfg: Config) -> Dict[str, Any]:
    """skip / threshold / mask_init / min_channels / input_shape of the hook.

    Validated by constructing the hook itself, so the defaults are the
    hook's. A config without the hook gets those defaults.
    """
    from mmprune.engine.hooks.in_train_pruning_hook import InTrainPruningHook
    h = prune_hook_cfg(cfg)
    args = {k: v for k, v in (h or {}).items() if k not in ('type',
                                                            'priority')}
    args.setdefault('psi_target', 1.0)
    hook = InTrainPruningHook(**args)
    return dict(found=h is not None, skip=list(hook.skip),
                threshold=hook.threshold, mask_init=hook.mask_init,
                min_channels=hook.min_channels, input_shape=hook.input_shape,
                roi_budget=hook.roi_budget,
                psi_target=hook.psi_target if h is not None else None)


def _strip_pretrained(obj):
    """Drop ``init_cfg=dict(type='Pretrained', ...)`` entries (recursively):
    the exported weights come from model.pth, and a dense pretrained file
    would not fit the pruned widths."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == 'init_cfg':
                items = v if isinstance(v, (list, tuple)) else [v]
                kept = [i for i in items if not (
                    isinstance(i, dict) and i.get('type') == 'Pretrained')]
                v = (None if not kept else
                     kept if isinstance(v, (list, tuple)) else kept[0])
            elif k == 'pretrained' and isinstance(v, str):
                v = None
            out[k] = _strip_pretrained(v)
        return out
    if isinstance(obj, list):
        return [_strip_pretrained(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_strip_pretrained(v) for v in obj)
    return obj


def exported_config(cfg: Config) -> Config:
    """The config of the exported model.

    ``model`` becomes ``PrunedModel(detector=<original model>,
    channels='{{ fileDirname }}/channels.json')`` (mmengine replaces
    ``{{ fileDirname }}`` by the folder of the file when it reads it);
    ``load_from`` names ``model.pth`` beside it; the pruning hook is removed
    and a prune optimizer wrapper becomes its plain mmengine form.
    """
    out = copy.deepcopy(cfg)
    detector = _strip_pretrained(out.model.to_dict() if hasattr(
        out.model, 'to_dict') else dict(out.model))
    out.model = dict(type='PrunedModel', detector=detector,
                     channels='{{ fileDirname }}/channels.json')
    hooks = [h for h in out.get('custom_hooks', None) or []
             if _type_name(h.get('type')).split('.')[-1] != HOOK_TYPE]
    out.custom_hooks = hooks
    ow = out.get('optim_wrapper', None)
    if ow is not None:
        t = _type_name(ow.get('type', 'OptimWrapper')).split('.')[-1]
        if t in _PRUNE_WRAPPERS:
            ow.type = _PRUNE_WRAPPERS[t]
            for k in _PRUNE_WRAPPER_KEYS:
                ow.pop(k, None)
    imports = out.get('custom_imports', None)
    if imports is None:
        out.custom_imports = dict(imports=['mmprune'],
                                  allow_failed_imports=False)
    elif 'mmprune' not in list(imports.get('imports', [])):
        imports.imports = list(imports.get('imports', [])) + ['mmprune']
    out.load_from = '{{ fileDirname }}/model.pth'
    out.resume = False
    out.pop('work_dir', None)
    return out


# -------------------------------------------------------------- checkpoint
def split_checkpoint(path: str) -> Tuple[Dict[str, Tensor],
                                         Dict[str, Tensor], dict]:
    """Load a runner checkpoint; return (weights, masks, meta).

    ``masks`` holds the ``prune_masks.*`` entries with the prefix removed
    (a `MaskSet` state dict); ``weights`` the rest.
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file {path} does not exist')
    ckpt = _load_checkpoint(path, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(
            isinstance(v, Tensor) for v in state.values()):
        raise ExportError(f'{path}: no state_dict of tensors in the file')
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    masks = OrderedDict((k[len(MASK_PREFIX):], v) for k, v in state.items()
                        if k.startswith(MASK_PREFIX))
    weights = OrderedDict((k, v) for k, v in state.items()
                          if not k.startswith(MASK_PREFIX))
    # Module versions (e.g. mmcv's DCN) live in the state dict's metadata.
    meta_data = getattr(state, '_metadata', None)
    if meta_data is not None:
        weights._metadata = meta_data
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    return weights, masks, dict(meta or {})


def check_weights_fit(model: nn.Module, weights: Dict[str, Tensor],
                      config: str, checkpoint: str) -> None:
    """Raise `ExportError` naming every missing / unexpected key and shape
    mismatch between ``model``'s state dict and ``weights``."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f'{k}: checkpoint {tuple(weights[k].shape)}, config '
              f'{tuple(own[k].shape)}' for k in own
              if k in weights and weights[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return

    def block(title, items):
        if not items:
            return ''
        more = f'\n    ... and {len(items) - 20} more' if len(items) > 20 \
            else ''
        return f'\n  {title} ({len(items)}):\n    ' + '\n    '.join(
            items[:20]) + more

    raise ExportError(
        f'checkpoint {checkpoint} does not match config {config}:'
        + block('missing in the checkpoint', missing)
        + block('unexpected in the checkpoint', unexpected)
        + block('shape mismatch', shapes)
        + '\n  Export with the config the checkpoint was trained with.')


# ------------------------------------------------------------------- trace
def _build_model(cfg: Config) -> nn.Module:
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return MODELS.build(cfg.model)


def example_batch(cfg: Config, model: nn.Module,
                  input_shape: Optional[Sequence[int]] = None):
    """One preprocessed example ``(inputs [1, 3, H, W], [data_sample])``.

    With ``input_shape=(H, W)`` a zero image of that size (as the pruning
    hook's ``input_shape`` does); otherwise the first batch of the config's
    test dataloader, preprocessed by the model's data preprocessor.
    """
    if input_shape is not None:
        from mmdet.structures import DetDataSample
        h, w = (int(v) for v in input_shape)
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
            batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
        param = next(model.parameters())
        return param.new_zeros(1, 3, h, w), [sample]
    loader_cfg = cfg.get('test_dataloader', None)
    if not loader_cfg:
        raise ExportError(
            f'{cfg.filename}: no test_dataloader to take the trace input '
            'from, and the checkpoint has no meta["prune"]["input_shape"] '
            '(saved since this release); set input_shape=(H, W) in the '
            'InTrainPruningHook config or pass --shape H W')
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    loader_cfg = copy.deepcopy(loader_cfg)
    loader_cfg['num_workers'] = 0
    loader_cfg['persistent_workers'] = False
    batch = next(iter(Runner.build_dataloader(loader_cfg)))
    data = model.data_preprocessor(batch, False)
    return data['inputs'][:1], data['data_samples'][:1]


@dataclass
class MaskedDetector:
    """A detector with its checkpoint weights and masks (masks not attached).

    Attributes:
        model: the dense detector (eval mode) with the checkpoint's weights.
        plan: its `PrunePlan`, traced at ``inputs``' shape.
        maskset: the checkpoint's masks (detached from the model; call
            ``maskset.attach(model)`` for the masked function).
        inputs, samples: the trace input.
        hook: the pruning hook's arguments (`prune_hook_args`).
        meta: the checkpoint's ``meta``.
        from_data: whether ``inputs`` is a real test batch (else a zero
            image of the hook's / the caller's ``input_shape``).
    """

    model: nn.Module
    plan: PrunePlan
    maskset: MaskSet
    inputs: Tensor
    samples: list
    hook: Dict[str, Any]
    meta: dict
    config: str = ''
    checkpoint: str = ''
    from_data: bool = True

    def binaries(self) -> Dict[str, Tensor]:
        """``{group: [C] 0/1}`` of the checkpoint's masks."""
        with torch.no_grad():
            return {k: v.detach().clone()
                    for k, v in self.maskset.binaries().items()}

    def check_inputs(self, seed: int = 0) -> Tensor:
        """Input to compare models on: the test batch, or, when the trace ran
        on a zero image, a seeded N(0, 1) image of its shape (a constant
        image gives tied scores, and a two-stage detector's proposals then
        depend on float noise)."""
        if self.from_data:
            return self.inputs
        g = torch.Generator().manual_seed(seed)
        return torch.randn(self.inputs.shape, generator=g).to(self.inputs)

    def forward_raw(self, model: Optional[nn.Module] = None,
                    inputs: Optional[Tensor] = None) -> List[Tensor]:
        """Flattened ``model._forward`` outputs (default: `check_inputs`)."""
        model = self.model if model is None else model
        inputs = self.check_inputs() if inputs is None else inputs
        with torch.no_grad():
            return flatten_outputs(raw_forward(model, inputs, self.samples))


def mask_mismatches(maskset: MaskSet, masks: Dict[str, Tensor]
                    ) -> Tuple[List[str], List[str], List[str]]:
    """How a checkpoint's ``masks`` (a `MaskSet` state dict, see
    `split_checkpoint`) differ from ``maskset``'s groups: (groups without a
    mask, masks of unknown groups, size mismatches); all empty if they fit.
    """
    own = maskset.state_dict()
    missing = sorted({k.rsplit('.', 1)[0] for k in own if k not in masks})
    extra = sorted({k.rsplit('.', 1)[0] for k in masks if k not in own})
    sizes = [f'{k}: checkpoint {tuple(masks[k].shape)}, traced '
             f'{tuple(own[k].shape)}' for k in own
             if k in masks and masks[k].shape != own[k].shape]
    return missing, extra, sizes


def load_masked_detector(config: Union[str, Config], checkpoint: str, *,
                         cfg_options: Optional[dict] = None,
                         input_shape: Optional[Sequence[int]] = None
                         ) -> MaskedDetector:
    """Build ``config``'s detector with ``checkpoint``'s weights and masks.

    Raises `ExportError` for a checkpoint without ``prune_masks.*`` keys, for
    weights that do not fit the config, and for masks that do not fit the
    channel groups traced from the config.
    """
    from mmprune.engine.hooks.in_train_pruning_hook import trace_detector
    cfg = load_config(config, cfg_options)
    cfg_name = cfg.filename or '<config>'
    weights, masks, meta = split_checkpoint(checkpoint)
    if not masks:
        raise ExportError(
            f'{checkpoint} holds no masks (no "{MASK_PREFIX}*" keys): it was '
            f'not trained with {HOOK_TYPE}, so there is nothing to prune. '
            'Export a checkpoint saved by a run with the pruning hook (e.g. '
            'configs/centernet_dla34_prune50.py).')
    hook = prune_hook_args(cfg)
    model = _build_model(cfg)
    if hasattr(model, MASK_PREFIX[:-1]):
        raise ExportError(f'{cfg_name}: the built model already has '
                          f'"{MASK_PREFIX[:-1]}"')
    check_weights_fit(model, weights, cfg_name, checkpoint)
    model.load_state_dict(weights, strict=True)
    model.eval()
    shape = input_shape if input_shape is not None else hook['input_shape']
    traced = (meta.get('prune') or {}).get('input_shape')
    if shape is None and not cfg.get('test_dataloader') and traced:
        # No test data to trace on: the shape the hook traced at in training.
        shape = tuple(int(v) for v in traced)
    inputs, samples = example_batch(cfg, model, shape)
    plan = trace_detector(model, inputs, samples, hook['skip'],
                          hook['roi_budget'])
    ms = MaskSet(plan, hook['mask_init'], hook['threshold'],
                 hook['min_channels'])
    missing, extra, sizes = mask_mismatches(ms, masks)
    if missing or extra or sizes:
        raise ExportError(
            f'the masks of {checkpoint} do not match the channel groups '
            f'traced from {cfg_name} (skip={hook["skip"]}):'
            + (f'\n  groups without a mask in the checkpoint: {missing}'
               if missing else '')
            + (f'\n  masks of unknown groups: {extra}' if extra else '')
            + (f'\n  size mismatch: {sizes}' if sizes else '')
            + '\n  Export with the config (and pruning hook settings) the '
            'checkpoint was trained with.')
    ms.load_state_dict(masks)
    ms.to(inputs.device)
    return MaskedDetector(model, plan, ms, inputs, samples, hook, meta,
                          cfg_name, checkpoint, from_data=shape is None)


# ------------------------------------------------------------------ export
@dataclass
class ExportResult:
    """What `export_pruned` wrote and measured.

    ``params_*`` count every parameter of the model; ``macs_*`` are the cost
    model's conv / deconv / DCN / linear MACs per image at ``input_shape``;
    ``max_abs_diff`` compares the small model's raw head outputs with the
    masked model's (None without ``verify``); ``output_diffs`` has one row
    per output (`compare_outputs`).
    """

    out_dir: str
    config: str
    checkpoint: str
    channels: str
    psi: float
    input_shape: Tuple[int, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    pruned_channels: int
    total_channels: int
    frozen: bool
    max_abs_diff: Optional[float] = None
    output_diffs: List[dict] = field(default_factory=list)
    spec: ChannelSpec = field(default_factory=ChannelSpec, repr=False)
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few readable lines for the console."""
        def ratio(a, b):
            return f'{100.0 * a / b:.1f} %' if b else 'n/a'
        lines = [
            f'exported to {self.out_dir} (input {list(self.input_shape)})',
            f'  params: {self.params_before / 1e6:.3f} M -> '
            f'{self.params_after / 1e6:.3f} M '
            f'({ratio(self.params_after, self.params_before)})',
            f'  MACs:   {self.macs_before / 1e9:.3f} G -> '
            f'{self.macs_after / 1e9:.3f} G (psi = {self.psi:.4f})',
            f'  channels removed: {self.pruned_channels} of '
            f'{self.total_channels} prunable',
        ]
        if not self.frozen:
            lines.append('  note: the masks were not frozen; exported at '
                         'their current binarisation')
        lines += [f'  note: {n}' for n in self.notes]
        if self.max_abs_diff is not None:
            lines.append(f'  max |exported - masked| raw outputs: '
                         f'{self.max_abs_diff:.3g}')
        for d in self.output_diffs:
            lines.append(f'    output {d["index"]} {d["shape"]}: max abs '
                         f'{d["max_abs"]:.3g}, max rel {d["max_rel"]:.3g} '
                         f'(scale {d["scale"]:.3g})')
        return '\n'.join(lines)


def compare_outputs(out: List[Tensor], ref: List[Tensor],
                    atol: float = 1e-4) -> List[dict]:
    """Compare each raw output with the masked model's at its own scale.

    Output ``i`` passes when ``max |out_i - ref_i| <= atol * max(1,
    max |ref_i|)``. Each output has its own scale, so untrained box deltas
    of 1e5 cannot loosen the check on class scores in 0..1.

    Returns:
        One dict per output: ``index``, ``shape``, ``max_abs``, ``max_rel``
        (``max_abs / max |ref_i|``) and ``scale`` (``max |ref_i|``).

    Raises:
        RuntimeError naming every output beyond its tolerance.
    """
    rows, bad = [], []
    for i, (a, r) in enumerate(zip(out, ref)):
        d = float((a - r).abs().max()) if r.numel() else 0.0
        scale = float(r.abs().max()) if r.numel() else 0.0
        rows.append(dict(index=i, shape=list(r.shape), max_abs=d,
                         max_rel=d / scale if scale > 0 else d, scale=scale))
        if d > atol * max(1.0, scale):
            bad.append(f'output {i} {list(r.shape)}: {d:.3g} > '
                       f'{atol * max(1.0, scale):.3g}')
    if bad:
        raise RuntimeError(
            'export: the exported model differs from the masked model in '
            'its raw outputs (' + '; '.join(bad) + '); a layer type is '
            'sliced wrongly, please report it')
    return rows


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _json_meta(meta: dict) -> dict:
    """The parts of the source meta that are plain data (weights-only)."""
    out = {}
    for key in ('dataset_meta', 'prune', 'experiment_name', 'epoch', 'iter'):
        if key in meta:
            out[key] = meta[key]
    return out


def export_pruned(config: Union[str, Config], checkpoint: str, out_dir: str,
                  *, cfg_options: Optional[dict] = None,
                  input_shape: Optional[Sequence[int]] = None,
                  verify: bool = True, atol: float = 1e-4,
                  log: Optional[Callable[[str], None]] = print
                  ) -> ExportResult:
    """Export ``checkpoint`` (trained with masks) as a small plain model.

    Args:
        config: the training config (file or `Config`).
        checkpoint: a runner checkpoint with ``prune_masks.*`` keys.
        out_dir: folder for ``model.pth``, ``config.py``, ``channels.json``.
        cfg_options: overrides merged into the config first (they are kept
            in the exported config too, e.g. a data root).
        input_shape: ``(H, W)`` of the trace; default: the hook's
            ``input_shape``, else the first test batch.
        verify: compare the rebuilt small model's raw head outputs with the
            masked model's on the trace input; raise if they differ by more
            than ``atol`` at any output's own scale (`compare_outputs`).
        log: where the summary goes (None: silent).

    Returns:
        An `ExportResult`.
    """
    md = load_masked_detector(config, checkpoint, cfg_options=cfg_options,
                              input_shape=input_shape)
    cfg = load_config(config, cfg_options)
    model, plan, ms = md.model, md.plan, md.maskset
    b = md.binaries()
    cm = CostModel(plan)
    params_before = _num_params(model)
    ref = None
    if verify:
        ms.attach(model)
        try:
            ref = md.forward_raw()
        finally:
            ms.remove()
    spec = prune_model(model, plan, b)
    total = sum(g.size for g in plan.groups.values())
    pruned = int(sum(int((v == 0).sum()) for v in b.values()))
    psi = float(cm.psi(b))
    shape = tuple(int(s) for s in md.inputs.shape)
    spec.meta.update(
        psi=psi, input_shape=list(shape), macs_dense=int(cm.dense_macs),
        macs=int(round(float(cm.macs(b)))), source_config=md.config,
        source_checkpoint=osp.abspath(checkpoint), frozen=bool(ms.frozen),
        layers=[vars(r) for r in cm.breakdown(b)])

    os.makedirs(out_dir, exist_ok=True)
    paths = {k: osp.join(out_dir, k)
             for k in ('model.pth', 'config.py', 'channels.json')}
    spec.save(paths['channels.json'])
    from mmengine.runner.checkpoint import get_state_dict, weights_to_cpu
    meta = _json_meta(md.meta)
    meta['mmprune_export'] = dict(
        psi=psi, input_shape=list(shape), source_config=md.config,
        source_checkpoint=osp.abspath(checkpoint),
        params_before=params_before, params_after=_num_params(model))
    torch.save(dict(meta=meta,
                    state_dict=weights_to_cpu(get_state_dict(model))),
               paths['model.pth'])
    exported_config(cfg).dump(paths['config.py'])

    # The files must rebuild the same model: the config, then the weights.
    small = _build_model(Config.fromfile(paths['config.py']))
    from mmengine.runner.checkpoint import load_checkpoint
    load_checkpoint(small, paths['model.pth'], map_location='cpu',
                    strict=True, logger='silent')
    small.to(md.inputs.device).eval()
    diff = None
    if verify:
        out = md.forward_raw(small)
        if len(out) != len(ref) or any(
                a.shape != r.shape for a, r in zip(out, ref)):
            raise RuntimeError(
                'export: the exported model returns outputs of other shapes '
                f'than the masked model: {[tuple(a.shape) for a in out]} vs '
                f'{[tuple(r.shape) for r in ref]}')
        diffs = compare_outputs(out, ref, atol)
        diff = max((d['max_abs'] for d in diffs), default=0.0)
    res = ExportResult(
        out_dir=out_dir, config=paths['config.py'],
        checkpoint=paths['model.pth'], channels=paths['channels.json'],
        psi=psi, input_shape=shape, params_before=params_before,
        params_after=_num_params(small), macs_before=int(cm.dense_macs),
        macs_after=int(round(float(cm.macs(b)))), pruned_channels=pruned,
        total_channels=total, frozen=bool(ms.frozen), max_abs_diff=diff,
        output_diffs=diffs if verify else [], spec=spec)
    if not md.hook['found']:
        res.notes.append(
            f'{md.config} has no {HOOK_TYPE}; traced with its defaults '
            f'(skip={md.hook["skip"]}, threshold={md.hook["threshold"]}, '
            f'min_channels={md.hook["min_channels"]})')
    if log is not None:
        log(res.summary())
    return res


__all__ = [
    'ExportError', 'ExportResult', 'MaskedDetector', 'export_pruned',
    'exported_config', 'load_masked_detector', 'split_checkpoint',
    'check_weights_fit', 'example_batch', 'prune_hook_args',
    'flatten_outputs', 'compare_outputs', 'MASK_PREFIX'
]
