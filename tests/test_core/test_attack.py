"""FGSM-with-random-init (FastAT) and PGD over a loss closure, pure torch.

A toy classifier that normalises 0..255 pixels itself stands in for a
detector: the attack sees images in pixel units and a scalar loss.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmprune.core.attack import fgsm_random_init, pgd, preserve_buffers

EPS = 8.0  # pixel units (8/255 of the range): big enough to matter here


class ToyNet(nn.Module):
    """conv-BN-ReLU-pool-linear on pixel images [N, 3, H, W] in 0..255."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = (x - 127.5) / 64.0
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _data(n=6, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 3, size, size), generator=g) * 255.0
    y = torch.randint(0, 3, (n, ), generator=g)
    return x, y


def _loss_fn(model, y):
    return lambda x_adv: F.cross_entropy(model(x_adv), y)


@pytest.fixture
def toy():
    torch.manual_seed(0)
    return ToyNet().eval()


@pytest.mark.parametrize('attack', ['fgsm', 'pgd'])
def test_attack_raises_loss_and_stays_feasible(toy, attack):
    x, y = _data()
    # Pixels on both ends of the range, so the clamp is exercised.
    x[:, :, 0, :] = 0.0
    x[:, :, 1, :] = 255.0
    loss_fn = _loss_fn(toy, y)
    g = torch.Generator().manual_seed(1)
    if attack == 'fgsm':
        x_adv = fgsm_random_init(loss_fn, x, EPS, 1.25 * EPS, generator=g)
    else:
        x_adv = pgd(loss_fn, x, EPS, 2.0, steps=10, generator=g)
    noise = torch.sign(torch.randn(x.shape, generator=g)) * EPS
    with torch.no_grad():
        clean, adv = float(loss_fn(x)), float(loss_fn(x_adv))
        rand = float(loss_fn((x + noise).clamp(0, 255)))
    # An untrained net moves little, but the attack moves it ~10x more than
    # random noise of the same L-inf size.
    assert adv > clean + 0.02, (clean, adv)
    assert adv - clean > 5 * abs(rand - clean), (clean, adv, rand)
    delta = x_adv - x
    assert float(delta.abs().max()) <= EPS + 1e-4
    # The attack used the budget (not a no-op).
    assert float(delta.abs().max()) > 0.9 * EPS
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 255.0
    assert not x_adv.requires_grad


def test_pgd_beats_its_random_start(toy):
    x, y = _data(seed=3)
    loss_fn = _loss_fn(toy, y)
    g = torch.Generator().manual_seed(0)
    x_fgsm = fgsm_random_init(loss_fn, x, EPS, 1.25 * EPS,
                              generator=torch.Generator().manual_seed(0))
    x_pgd = pgd(loss_fn, x, EPS, 2.0, steps=20, generator=g)
    with torch.no_grad():
        assert float(loss_fn(x_pgd)) > float(loss_fn(x_fgsm))


def test_padding_is_never_perturbed(toy):
    x, y = _data(n=2, size=10)
    mask = torch.ones(2, 1, 10, 10)
    mask[0, :, 6:, :] = 0  # image 0 padded at the bottom
    mask[1, :, :, 7:] = 0  # image 1 padded on the right
    for x_adv in (
            fgsm_random_init(_loss_fn(toy, y), x, EPS, 10.0, mask),
            pgd(_loss_fn(toy, y), x, EPS, 2.0, 5, valid_mask=mask)):
        # Bit-identical on padding, moved on real pixels.
        assert torch.equal(x_adv[0, :, 6:, :], x[0, :, 6:, :])
        assert torch.equal(x_adv[1, :, :, 7:], x[1, :, :, 7:])
        assert float((x_adv - x)[0, :, :6].abs().max()) > 0


def test_out_of_range_pixels_are_not_pushed_further(toy):
    # Photometric augmentation can leave pixels outside 0..255: the attack
    # keeps them feasible (never further out, never more than eps).
    x, y = _data(n=2, size=8)
    x[:, :, :2] = 270.0
    x[:, :, 2:4] = -10.0
    x_adv = pgd(_loss_fn(toy, y), x, EPS, 3.0, 5, generator=torch.Generator(
    ).manual_seed(0))
    assert float((x_adv - x).abs().max()) <= EPS + 1e-4
    assert float(x_adv[:, :, :2].max()) <= 270.0
    assert float(x_adv[:, :, 2:4].min()) >= -10.0


def test_deterministic_with_a_generator(toy):
    x, y = _data()
    loss_fn = _loss_fn(toy, y)

    def run(seed):
        return pgd(loss_fn, x, EPS, 2.0, 3,
                   generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))
    a = fgsm_random_init(loss_fn, x, EPS, 10.0,
                         generator=torch.Generator().manual_seed(2))
    b = fgsm_random_init(loss_fn, x, EPS, 10.0,
                         generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def test_model_state_untouched_in_train_mode():
    """Params, pre-existing grads and BN running stats survive the attack."""
    torch.manual_seed(0)
    model = ToyNet().train()
    x, y = _data()
    # A gradient already accumulated by the caller must survive.
    F.cross_entropy(model(x), y).backward()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    grads = {k: v.grad.clone() for k, v in model.named_parameters()}
    with preserve_buffers(model):
        pgd(_loss_fn(model, y), x, EPS, 2.0, 3)
        # Inside, the train-mode forwards did move the running stats.
        assert int(model.bn.num_batches_tracked) > 1
    bufs_after = dict(model.named_buffers())
    assert int(bufs_after['bn.num_batches_tracked']) == 1
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k]), k
        assert torch.equal(v.grad, grads[k]), k
    # And the buffers equal those after the caller's single forward.
    torch.manual_seed(0)
    ref = ToyNet().train()
    F.cross_entropy(ref(x), y).backward()
    for k, v in ref.named_buffers():
        assert torch.equal(bufs_after[k], v), k


def test_no_grad_fields_created():
    torch.manual_seed(0)
    model = ToyNet().train()
    x, y = _data()
    with preserve_buffers(model):
        fgsm_random_init(_loss_fn(model, y), x, EPS, 10.0)
    assert all(p.grad is None for p in model.parameters())


def test_adversarial_accuracy_below_clean_on_trained_toy():
    """Train a toy classifier; PGD must cost accuracy (never add it)."""
    g = torch.Generator().manual_seed(0)
    n = 96
    y = torch.randint(0, 3, (n, ), generator=g)
    # Class = which colour channel is brighter, by a margin of ~20 pixels.
    x = torch.rand((n, 3, 8, 8), generator=g) * 60 + 90
    x[torch.arange(n), y] += 20
    torch.manual_seed(0)
    model = ToyNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()

    def acc(images):
        with torch.no_grad():
            return float((model(images).argmax(1) == y).float().mean())

    clean = acc(x)
    x_adv = pgd(_loss_fn(model, y), x, 12.0, 3.0, 10,
                generator=torch.Generator().manual_seed(0))
    adv = acc(x_adv)
    assert clean >= 0.95
    assert adv < clean - 0.3, (clean, adv)


def test_bad_arguments_are_named(toy):
    x, y = _data()
    loss_fn = _loss_fn(toy, y)
    with pytest.raises(ValueError, match='eps must be >= 0'):
        pgd(loss_fn, x, -1.0, 1.0, 1)
    with pytest.raises(ValueError, match='alpha must be > 0'):
        pgd(loss_fn, x, 1.0, 0.0, 1)
    with pytest.raises(ValueError, match='steps must be an integer >= 1'):
        pgd(loss_fn, x, 1.0, 1.0, 0)
    with pytest.raises(ValueError, match=r'\[N, C, H, W\]'):
        pgd(loss_fn, x[0], 1.0, 1.0, 1)
    with pytest.raises(ValueError, match='valid_mask'):
        pgd(loss_fn, x, 1.0, 1.0, 1, valid_mask=torch.ones(6, 3, 12, 12))
    with pytest.raises(ValueError, match='pixel_range'):
        pgd(loss_fn, x, 1.0, 1.0, 1, pixel_range=(1.0, 0.0))
    with pytest.raises(ValueError, match='scalar'):
        pgd(lambda z: z.sum(dim=0), x, 1.0, 1.0, 1)
    with pytest.raises(RuntimeError, match='does not depend on'):
        pgd(lambda z: toy.fc.weight.sum(), x, 1.0, 1.0, 1)
