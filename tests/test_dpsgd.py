"""The DP-SGD engine against hand computations: clipping, noise, sampling, calibration."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from clinsynth.errors import PrivacyBudgetError
from clinsynth.privacy.dpsgd import PrivateGradient, poisson_batches
from clinsynth.privacy.ledger import Charge, PrivacyLedger, calibrate_noise, epsilon_of


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.LeakyReLU(0.2), nn.Linear(8, 3))


def per_record_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y, reduction="none")


def hand_clipped_sum(net: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> list[torch.Tensor]:
    """One record at a time, the textbook way."""
    total = [torch.zeros_like(p) for p in net.parameters()]
    for i in range(len(x)):
        grads = torch.autograd.grad(per_record_loss(net(x[i:i + 1]), y[i:i + 1]).sum(), list(net.parameters()))
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        factor = min(1.0, clip / (norm.item() + 1e-6))
        for t, g in zip(total, grads):
            t += factor * g
    return total


def test_clipped_sum_matches_one_record_at_a_time():
    net = small_net()
    x, y = torch.randn(32, 5) * 3, torch.randint(0, 3, (32,))
    expected = hand_clipped_sum(net, x, y, clip=0.5)
    engine = PrivateGradient(net, noise_multiplier=0.0, max_grad_norm=0.5, expected_batch_size=16)
    engine.add_private_gradient(per_record_loss(engine.forward_private(x), y))
    for p, e in zip(net.parameters(), expected):
        assert torch.allclose(p.grad, e / 16, atol=1e-5)
    # every record's gradient was large, so clipping was active: the unclipped mean differs
    assert engine.per_sample_norms is not None


def test_one_record_moves_the_update_by_at_most_the_clip_norm():
    net = small_net()
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    outlier = torch.full((1, 5), 1e4)

    def update(xs, ys):
        for p in net.parameters():
            p.grad = None
        engine = PrivateGradient(net, 0.0, max_grad_norm=1.0, expected_batch_size=1)
        engine.add_private_gradient(per_record_loss(engine.forward_private(xs), ys))
        grads = [p.grad.clone() for p in net.parameters()]
        engine.detach()
        return grads

    without = update(x, y)
    with_outlier = update(torch.cat([x, outlier]), torch.cat([y, torch.tensor([0])]))
    moved = torch.sqrt(sum((a - b).pow(2).sum() for a, b in zip(without, with_outlier)))
    assert 0.5 < moved.item() <= 1.0 + 1e-5


def test_public_gradient_is_kept_unclipped_and_noise_has_the_stated_scale():
    net = small_net()
    fake = torch.randn(64, 5) * 100
    per_record_loss(net(fake), torch.zeros(64, dtype=torch.long)).mean().backward()
    public = [p.grad.clone() for p in net.parameters()]
    engine = PrivateGradient(net, noise_multiplier=2.0, max_grad_norm=0.5, expected_batch_size=10,
                             generator=torch.Generator().manual_seed(1))
    engine.add_private_gradient(None)  # an empty Poisson batch still releases noise
    noise = torch.cat([(p.grad - g).flatten() for p, g in zip(net.parameters(), public)])
    assert noise.std().item() == pytest.approx(2.0 * 0.5 / 10, rel=0.15)
    assert abs(noise.mean().item()) < 0.02
    # the public part is the plain gradient: far larger than any clipped contribution could be
    assert max(g.abs().max().item() for g in public) > 1.0


def test_public_part_plus_private_part_is_exactly_public_plus_clipped_sum():
    """The GAN's case: fake-record gradient already in ``.grad``, then the real batch. (An earlier
    version let autograd add the unclipped real gradients into the saved public tensors in place;
    the whole-model audit caught it.)"""
    net = small_net()
    fake, x, y = torch.randn(16, 5), torch.randn(24, 5) * 50, torch.randint(0, 3, (24,))
    per_record_loss(net(fake), torch.zeros(16, dtype=torch.long)).mean().backward()
    public = [p.grad.clone() for p in net.parameters()]
    expected = hand_clipped_sum(net, x, y, clip=0.1)
    engine = PrivateGradient(net, 0.0, max_grad_norm=0.1, expected_batch_size=12)
    engine.add_private_gradient(per_record_loss(engine.forward_private(x), y))
    for p, g, e in zip(net.parameters(), public, expected):
        assert torch.allclose(p.grad, g + e / 12, atol=1e-5)


def test_unclipped_private_gradients_never_reach_grad():
    net = small_net()
    x, y = torch.randn(8, 5) * 1e3, torch.randint(0, 3, (8,))
    engine = PrivateGradient(net, 0.0, max_grad_norm=1e-3, expected_batch_size=8)
    engine.add_private_gradient(per_record_loss(engine.forward_private(x), y))
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in net.parameters()))
    assert total.item() <= 1e-3 + 1e-7
    assert all(getattr(p, "grad_sample", None) is None for p in net.parameters())


def test_poisson_batches_have_the_sampling_the_accountant_assumes():
    n, q, steps = 1000, 0.03, 4000
    sizes = []
    hits = np.zeros(n)
    for idx in poisson_batches(n, q, steps, seed=0):
        assert len(np.unique(idx)) == len(idx)
        sizes.append(len(idx))
        hits[idx] += 1
    sizes = np.array(sizes)
    assert sizes.mean() == pytest.approx(n * q, rel=0.02)
    assert sizes.var() == pytest.approx(n * q * (1 - q), rel=0.1)  # binomial, not fixed-size
    assert hits.mean() / steps == pytest.approx(q, rel=0.02)
    assert (hits / steps).std() < 0.01  # every record equally likely
    assert sum(1 for idx in poisson_batches(50, 0.01, 2000, seed=1) if len(idx) == 0) > 1000  # empty steps happen


def test_calibrated_noise_is_the_smallest_that_fits_the_budget():
    ledger = PrivacyLedger(1.0, 1e-5, accountant="rdp")
    ledger.charge(Charge("gaussian", "stats", 30.0, 1.0, 1))
    reserved = [Charge("gaussian", "selection", 30.0, 1.0, 1)]

    def sgd(sigma: float) -> Charge:
        return Charge("dp-sgd", "d", sigma, 0.05, 400)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sigma = calibrate_noise(ledger, sgd, reserved)
        assert epsilon_of([*ledger.charges, sgd(sigma), *reserved], 1e-5, "rdp") <= 1.0
        assert epsilon_of([*ledger.charges, sgd(sigma * 0.98), *reserved], 1e-5, "rdp") > 1.0
        with pytest.raises(PrivacyBudgetError, match="too small"):
            calibrate_noise(PrivacyLedger(0.001, 1e-5, accountant="rdp"), lambda s: Charge("dp-sgd", "d", s, 0.5, 10_000))


def test_expected_batch_is_the_batch_size_or_a_quarter_of_the_records():
    from clinsynth.errors import InputError
    from clinsynth.privacy.dpsgd import expected_batch

    assert expected_batch(512, 5201, "m") == 512
    assert expected_batch(512, 2048, "m") == 512
    assert expected_batch(512, 2047, "m") == 511
    assert expected_batch(1000, 455, "m") == 113
    assert expected_batch(1000, 4, "m") == 1
    with pytest.raises(InputError, match="3 records are too few"):
        expected_batch(1000, 3, "m")
