"""The audit against the DP-SGD engine: it must catch a broken configuration and clear a correct one.

A linear classifier; the canaries carry random labels on axes the real records leave empty, so a
model trained without noise memorises each trained canary's label (low loss) and the loss separates
canaries in from out. The correct configuration's claim must survive.

(A clipping bug shows too, but more weakly with this attack: ε ≥ 0.7–0.9 over three seeds, since the
noise, still there, blurs the canaries that were left out.)
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from clinsynth.privacy.audit import audit_model, epsilon_lower_bound
from clinsynth.privacy.dpsgd import PrivateGradient, poisson_batches
from clinsynth.privacy.ledger import Charge, PrivacyLedger, calibrate_noise

DIM, N_REAL, N_CANARIES, CLAIM, DELTA = 450, 1000, 400, 1.0, 1e-5


def train_and_score(x: np.ndarray, y: np.ndarray, canary_x: np.ndarray, canary_y: np.ndarray,
                    mode: str, seed: int = 0) -> np.ndarray:
    """DP-SGD calibrated to ε = CLAIM, run as ``mode`` says; minus the loss of each canary."""
    torch.manual_seed(seed)
    net = nn.Linear(DIM, 2)
    n, q, steps = len(x), 0.1, 600
    ledger = PrivacyLedger(CLAIM, DELTA, accountant="rdp")
    sigma = calibrate_noise(ledger, lambda s: Charge("dp-sgd", "audit", s, q, steps))
    engine = PrivateGradient(net, 0.0 if mode == "no noise" else sigma, 1.0, q * n, torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)  # plain SGD: Adam would rescale pure noise to full-size steps
    X, Y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    for idx in poisson_batches(n, q, steps, seed):
        opt.zero_grad(set_to_none=True)
        idx_t = torch.as_tensor(idx)
        loss = nn.functional.cross_entropy(engine.forward_private(X[idx_t]), Y[idx_t], reduction="none") if len(idx) else None
        engine.add_private_gradient(loss)
        opt.step()
    with torch.no_grad():
        out = net(torch.as_tensor(canary_x, dtype=torch.float32))
        return -nn.functional.cross_entropy(out, torch.as_tensor(canary_y), reduction="none").numpy()


def audit(mode: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.zeros((N_REAL, DIM))
    x[:, :50] = rng.normal(size=(N_REAL, 50))
    y = (x[:, 0] > 0).astype(np.int64)
    # "Dirac" canaries: each on its own axis, unused by the real records, so a model can learn one
    # canary's label without touching any other record's loss
    canary_x = np.zeros((N_CANARIES, DIM))
    canary_x[np.arange(N_CANARIES), 50 + np.arange(N_CANARIES)] = 10.0
    canary_y = rng.integers(0, 2, N_CANARIES)
    included = rng.random(N_CANARIES) < 0.5
    scores = train_and_score(np.vstack([x, canary_x[included]]), np.concatenate([y, canary_y[included]]),
                             canary_x, canary_y, mode, seed)
    return epsilon_lower_bound(scores, included, delta=DELTA)


@pytest.mark.parametrize("seed", [0, 1])
def test_audit_flags_dp_sgd_without_noise(seed):
    result = audit("no noise", seed)
    assert result.flags(CLAIM), result.to_dict()
    assert result.auroc > 0.9


@pytest.mark.parametrize("seed", [0, 1])
def test_audit_clears_correct_dp_sgd(seed):
    result = audit("correct", seed)
    assert not result.flags(CLAIM), result.to_dict()
    assert result.epsilon_lower < CLAIM


def test_audit_of_dp_acgan_flags_a_broken_engine_and_clears_the_real_one(monkeypatch):
    """The whole model, white-box: the discriminator's loss on each canary (measured: ε ≥ 0 for the
    real engine, ε ≥ 1.7 without noise). This test caught a real leak once: unclipped real-record
    gradients added into the fake-record ones in place."""
    import clinsynth
    from clinsynth.data.datasets import simulate_trial
    from clinsynth.schema import Schema

    df = simulate_trial(n=200, seed=1)
    inferred = Schema.infer(df, target="arm")
    schema = inferred.model_copy(update={"columns": [c.model_copy(update={"public": True}) for c in inferred.columns]})
    params = dict(epsilon=CLAIM, epochs=200, batch_size=64, disc_hidden=128, lr_d=3e-3, snapshots="off",
                  select="last", progress=False, accountant="rdp")

    def make_model():
        return clinsynth.create("dp-acgan", **params)

    assert not audit_model(make_model, df, schema, delta=DELTA).flags(CLAIM)
    original = PrivateGradient.__init__

    def no_noise(self, module, noise_multiplier, max_grad_norm, expected_batch_size, generator=None):
        original(self, module, 0.0, max_grad_norm, expected_batch_size, generator)

    monkeypatch.setattr(PrivateGradient, "__init__", no_noise)
    assert audit_model(make_model, df, schema, delta=DELTA).flags(CLAIM)


def test_audit_model_runs_both_attacks_on_a_small_dp_model():
    """The Python entry point end to end, quickly: valid bounds from each attack."""
    import clinsynth
    from clinsynth.data.datasets import simulate_trial
    from clinsynth.schema import Schema

    df = simulate_trial(n=300, seed=2)
    inferred = Schema.infer(df, target="arm")
    schema = inferred.model_copy(update={"columns": [c.model_copy(update={"public": True}) for c in inferred.columns]})
    for attack in ("discriminator", "distance"):
        result = audit_model(lambda: clinsynth.create("dp-acgan", epsilon=1.0, epochs=2, batch_size=64, progress=False,
                                                      snapshots="off", select="last", accountant="rdp"),
                             df, schema, attack=attack, n_canaries=40, delta=DELTA)
        assert result.n_canaries == 40 and 0 <= result.epsilon_lower < CLAIM
