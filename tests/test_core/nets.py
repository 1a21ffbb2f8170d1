"""Tiny hand-built nets, a physical slicer and an independent MAC counter for
the core tests. Their MACs are computed by hand in the tests."""

import copy
from typing import Dict, List

import torch
from torch import Tensor, nn


def cbr(cin, cout, k=3, stride=1):
    """conv (no bias) - BN - ReLU with 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Chain(nn.Module):
    """3 -> 8 -> 6 -> 4 (output), all 8x8."""

    def __init__(self):
        super().__init__()
        self.b1 = cbr(3, 8)
        self.b2 = cbr(8, 6)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.head(self.b2(self.b1(x)))


class Residual(nn.Module):
    """stem 3->8; basic block 8->6->8 added to its input; head 8->4."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.c1 = cbr(8, 6)
        self.c2 = nn.Conv2d(6, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.bn2(self.c2(self.c1(x)))
        return self.head(torch.relu(x + y))


class Concat(nn.Module):
    """a: 3->4 (3x3), b: 3->6 (1x1), cat -> fuse 10->5 (3x3) -> head 5->2."""

    def __init__(self):
        super().__init__()
        self.a = cbr(3, 4)
        self.b = cbr(3, 6, k=1)
        self.fuse = cbr(10, 5)
        self.head = nn.Conv2d(5, 2, 1)

    def forward(self, x):
        return self.head(self.fuse(torch.cat([self.a(x), self.b(x)], dim=1)))


class DWSeparable(nn.Module):
    """stem 3->8; depthwise 3x3 on 8; pointwise 8->6; head 6->2."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.dw_bn = nn.BatchNorm2d(8)
        self.pw = cbr(8, 6, k=1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(
            self.pw(torch.relu(self.dw_bn(self.dw(self.stem(x)))))
        )


class DWUpsample(nn.Module):
    """stem 3->8 at 8x8; depthwise ConvTranspose2d k4 s2 to 16x16; head."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.up = nn.ConvTranspose2d(8, 8, 4, 2, 1, groups=8, bias=False)
        self.up_bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.up_bn(self.up(self.stem(x)))))


class SharedHead(nn.Module):
    """Two levels (8x8 and 4x4) of 8 channels; one head conv 8->6 and one cls
    conv 6->2 applied to both levels."""

    def __init__(self):
        super().__init__()
        self.l0 = nn.Conv2d(3, 8, 3, padding=1)
        self.l1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Conv2d(8, 6, 3, padding=1)
        self.cls = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return [
            self.cls(torch.relu(self.head(f)))
            for f in (self.l0(x), self.l1(x))
        ]


class DCNBlock(nn.Module):
    """stem 3->8; mmcv ModulatedDeformConv2dPack 8->6 - BN - ReLU; head."""

    def __init__(self):
        super().__init__()
        from mmcv.ops import ModulatedDeformConv2dPack

        self.stem = cbr(3, 8)
        self.dcn = ModulatedDeformConv2dPack(8, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.dcn(self.stem(x)))))


def randomise(
    net: nn.Module, seed: int = 0, weights: bool = True
) -> nn.Module:
    """Random weights (if ``weights``; else only BN affine parameters), BN
    statistics and offsets, so that a BN of a zero channel is not zero and a
    DCN really samples off-grid; returns ``net`` in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if weights or isinstance(m, nn.BatchNorm2d):
                for name, p in list(m.named_parameters(recurse=False)):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(
                    torch.rand(m.num_features, generator=g) + 0.5
                )
    return net.eval()


def kept_index(cmap, keep: Dict[str, List[int]]) -> List[int]:
    """Positions of a layer axis that survive, given kept group channels."""
    out, off = [], 0
    for s in cmap:
        if s.group is None:
            out.extend(range(off, off + s.length))
        else:
            out.extend(
                off + i - s.start
                for i in keep[s.group]
                if s.start <= i < s.start + s.length
            )
        off += s.length
    return out


def slice_model(
    model: nn.Module, plan, binaries: Dict[str, Tensor]
) -> nn.Module:
    """A deep copy of ``model`` with the pruned channels removed."""
    keep = {
        g: (b > 0.5).nonzero().flatten().tolist() for g, b in binaries.items()
    }
    net = copy.deepcopy(model)
    with torch.no_grad():
        for name, lay in plan.layers.items():
            m = net.get_submodule(name)
            ii = torch.tensor(kept_index(lay.in_map, keep), dtype=torch.long)
            oi = torch.tensor(kept_index(lay.out_map, keep), dtype=torch.long)
            if lay.kind == 'norm':
                for attr in ('weight', 'bias', 'running_mean', 'running_var'):
                    t = getattr(m, attr)
                    if isinstance(t, nn.Parameter):
                        setattr(m, attr, nn.Parameter(t[oi].clone()))
                    elif t is not None:
                        setattr(m, attr, t[oi].clone())
                m.num_features = len(oi)
                continue
            w = m.weight
            if lay.depthwise:
                w = w[oi]
                m.groups = len(oi)
            elif lay.kind == 'deconv':
                w = w[ii][:, oi]
            else:
                w = w[oi][:, ii]
            m.weight = nn.Parameter(w.clone())
            if getattr(m, 'bias', None) is not None:
                m.bias = nn.Parameter(m.bias[oi].clone())
            if isinstance(m, nn.Linear):
                m.in_features, m.out_features = len(ii), len(oi)
            else:
                m.in_channels = len(oi) if lay.depthwise else len(ii)
                m.out_channels = len(oi)
    return net


def count_macs(net: nn.Module, x: Tensor, forward=None) -> int:
    """Independent MAC count per image from forward hooks and module shapes:
    conv ``out.numel/N * C_in/groups * k*k``; transposed conv
    ``in.numel/N * C_out/groups * k*k``; linear ``out.numel/N * in_features``;
    mmcv deformable conv like a conv (its offset conv is counted as a conv).
    ``N`` is the number of images in ``x``: an RoI head's calls carry the
    RoIs in their leading dim and count once per RoI."""
    total = [0]
    images = x.shape[0]

    def hook(m, args, out):
        n = images
        if isinstance(m, nn.ConvTranspose2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total[0] += args[0].numel() // n * (m.out_channels // m.groups) * k
        elif isinstance(m, nn.Conv2d) or 'DeformConv' in type(m).__name__:
            k = m.weight.shape[2] * m.weight.shape[3]
            total[0] += out.numel() // n * m.weight.shape[1] * k
        elif isinstance(m, nn.Linear):
            total[0] += out.numel() // n * m.in_features

    hs = [
        m.register_forward_hook(hook)
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
        or 'DeformConv' in type(m).__name__
    ]
    try:
        with torch.no_grad():
            net(x) if forward is None else forward(net, x)
    finally:
        for h in hs:
            h.remove()
    return total[0]


def set_masks(maskset, values: Dict[str, List[float]]) -> None:
    """Set the continuous masks of some groups."""
    with torch.no_grad():
        for g, v in values.items():
            maskset.mask(g).mask.copy_(torch.tensor(v))
