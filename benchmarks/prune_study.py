"""The seed's Fig. 1 and Table 1, at toy scale, on the synthetic KITTI data.

A small conv net classifies 32 x 32 crops of the synthetic cars,
pedestrians and cyclists while mmprune's core prunes it (masks after BN,
clipped STE, mask SGD lr 0.01, the seed's settings):

* Fig. 1 analogue: L_HW over iterations for target 0.5, b = 10, with and
  without mask regularisation (weight decay on the masks), and with mask
  init 1.0 and 0.3. The seed's observation: with init 1.0 and no mask
  regularisation, L_HW never falls (the clipped estimator passes no gradient
  at M = 1.0).
* Table 1 analogue: the psi reached by the loss alone (no projection) at
  target 0.2 for b = 10 and b = 50.

    python benchmarks/prune_study.py [--iters 600] [--out work_dirs/prune_study]

Writes ``fig1_loss_hw.png``, ``table1.json`` and prints one JSON object
and a summary line.
"""
import argparse
import json
import os
import os.path as osp
import sys
import tempfile

import numpy as np
import torch
from torch import nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmprune.core import (  # noqa: E402
    CostModel,
    discover_groups,
    hw_loss,
    install_masks,
)
from mmprune.datasets import make_synthetic_kitti  # noqa: E402
from mmprune.datasets.kitti_io import read_label_file  # noqa: E402

CLASSES = ('Car', 'Pedestrian', 'Cyclist')


def crops(root, size=32):
    """Object crops [N, 3, size, size] in [0, 1] and labels [N]."""
    import cv2
    xs, ys = [], []
    lbl_dir = osp.join(root, 'training', 'label_2')
    for name in sorted(os.listdir(lbl_dir)):
        img = cv2.imread(osp.join(root, 'training', 'image_2',
                                  name[:-4] + '.png'))
        for obj in read_label_file(osp.join(lbl_dir, name)):
            if obj.type not in CLASSES:
                continue
            x1, y1, x2, y2 = (int(v) for v in obj.bbox)
            if x2 - x1 < 4 or y2 - y1 < 4:
                continue
            patch = cv2.resize(img[y1:y2 + 1, x1:x2 + 1], (size, size))
            xs.append(torch.from_numpy(patch).permute(2, 0, 1).float() / 255)
            ys.append(CLASSES.index(obj.type))
    return torch.stack(xs), torch.tensor(ys)


class SmallNet(nn.Module):
    """conv-bn-relu x 3 (one residual block) + linear: a ResNet20 stand-in."""

    def __init__(self, width=16, classes=3):
        super().__init__()

        def cbr(cin, cout, stride=1):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1,
                                           bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = cbr(3, width)
        self.block1 = cbr(width, width)
        self.block2 = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width))
        self.down = cbr(width, 2 * width, 2)
        self.conv = cbr(2 * width, 4 * width, 2)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block2(self.block1(x)))
        x = self.conv(self.down(x))
        return self.fc(x.mean(dim=(2, 3)))


def run(xs, ys, iters, target, b, mask_init, mask_decay, seed=0):
    """Train with pruning; returns per-iteration L_HW and the final psi."""
    torch.manual_seed(seed)
    net = SmallNet()
    plan = discover_groups(net, torch.rand(1, 3, 32, 32))
    cost = CostModel(plan)
    masks = install_masks(net, plan, mask_init=mask_init)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9,
                          weight_decay=5e-4)
    mask_opt = torch.optim.SGD(masks.parameters(), lr=0.01,
                               weight_decay=mask_decay)
    gen = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(iters):
        idx = torch.randint(0, len(xs), (64,), generator=gen)
        task = nn.functional.cross_entropy(net(xs[idx]), ys[idx])
        psi = cost.psi(masks.binaries())
        lhw = hw_loss(psi, target, 'hinge')
        opt.zero_grad()
        mask_opt.zero_grad()
        (task + b * lhw).backward()
        opt.step()
        mask_opt.step()
        curve.append(float(lhw))
    with torch.no_grad():
        psi = float(cost.psi(masks.binaries()))
        acc = float((net(xs).argmax(1) == ys).float().mean())
    return dict(curve=curve, psi=psi, accuracy=acc)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--iters', type=int, default=600)
    p.add_argument('--images', type=int, default=60)
    p.add_argument('--out', default='work_dirs/prune_study')
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        make_synthetic_kitti(root, num_images=args.images, seed=7)
        xs, ys = crops(root)
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    fig1 = {}
    for init in (1.0, 0.3):
        for decay in (5e-4, 0.0):
            key = f'init={init}, mask_decay={decay}'
            fig1[key] = run(xs, ys, args.iters, 0.5, 10.0, init, decay)
    table1 = {}
    for b in (10.0, 50.0):
        table1[f'b={b:g}'] = run(xs, ys, args.iters, 0.2, b, 1.0, 5e-4)

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, res in fig1.items():
        ax.plot(np.arange(len(res['curve'])), res['curve'], label=key)
    ax.set_xlabel('iteration')
    ax.set_ylabel('L_HW (hinge, target 0.5)')
    ax.set_title('Fig. 1 analogue: L_HW with / without mask regularisation')
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = osp.join(args.out, 'fig1_loss_hw.png')
    fig.savefig(png, dpi=120)
    summary = dict(
        benchmark='prune_study', samples=int(len(xs)), iters=args.iters,
        fig1={k: dict(final_loss_hw=round(v['curve'][-1], 4),
                      first_loss_hw=round(v['curve'][0], 4),
                      psi=round(v['psi'], 4)) for k, v in fig1.items()},
        table1={k: dict(psi=round(v['psi'], 4),
                        accuracy=round(v['accuracy'], 4), target=0.2)
                for k, v in table1.items()},
        plot=png)
    with open(osp.join(args.out, 'table1.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary))
    t = summary['table1']
    print(f"prune_study: target 0.2 -> psi {t['b=10']['psi']} (b=10), "
          f"{t['b=50']['psi']} (b=50); plot {png}")


if __name__ == '__main__':
    main()
