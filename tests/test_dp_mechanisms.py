"""The mechanisms of ``clinsynth.privacy``: each charges the ledger and adds its noise in one call.

What must hold for every one: an overspend is refused before the statistics are measured (nothing
charged, nothing read); the noise added has the sd the charge implies (σ × sensitivity); the σ a
calibrated release reports is the one in the ledger; a release's extra query is answered once.
"""
from __future__ import annotations

import numpy as np
import pytest

from clinsynth.data.datasets import simulate_trial
from clinsynth.errors import ConfigError, PrivacyBudgetError
from clinsynth.privacy.gaussian import gaussian_release, symmetric_gaussian_release
from clinsynth.privacy.ledger import Charge, PrivacyLedger, charge_calibrated, epsilon_of
from clinsynth.privacy.statistics import charged_release
from clinsynth.schema import Schema


def _gaussian(sigma: float, purpose: str = "counts") -> Charge:
    return Charge("gaussian", purpose, noise_multiplier=sigma, sample_rate=1.0, steps=1)


def _unread():
    raise AssertionError("the statistics were measured before the ledger accepted the charge")


def test_an_overspend_is_refused_before_anything_is_measured():
    ledger = PrivacyLedger(1.0, 1e-5, accountant="rdp")
    with pytest.raises(PrivacyBudgetError):
        gaussian_release(ledger, _gaussian(0.5), 1.0, _unread, np.random.default_rng(0))
    with pytest.raises(PrivacyBudgetError):
        symmetric_gaussian_release(ledger, _gaussian(0.5), 1.0, _unread, np.random.default_rng(0), diagonal=True)
    assert ledger.charges == []


def test_noise_has_the_sd_of_the_charge_times_the_sensitivity():
    ledger = PrivacyLedger(1e4, 1e-5, accountant="rdp")
    zeros = np.zeros(20_000)
    out = gaussian_release(ledger, _gaussian(2.0), 3.0, lambda: [zeros, 5.0], np.random.default_rng(1))
    assert out.noise_std == 6.0 and ledger.charges == [out.charge]
    assert out.values[0].std() == pytest.approx(6.0, rel=0.03)
    assert out.values[1].shape == ()  # a scalar statistic stays a scalar


def test_a_calibrated_release_uses_the_sigma_the_ledger_holds():
    ledger = PrivacyLedger(1.0, 1e-5, accountant="rdp")
    out = gaussian_release(ledger, _gaussian, 2.0, lambda: [np.zeros(3)], np.random.default_rng(0))
    assert ledger.charges == [out.charge] and out.noise_std == out.charge.noise_multiplier * 2.0
    assert 0.95 < epsilon_of(ledger.charges, ledger.delta, "rdp") <= 1.0  # the smallest σ within the budget
    sgd = PrivacyLedger(1.0, 1e-5, accountant="rdp")
    sigma = charge_calibrated(sgd, lambda s: [Charge("dp-sgd", "a", s, 0.01, 100), Charge("dp-sgd", "b", s, 0.02, 50)])
    assert [c.noise_multiplier for c in sgd.charges] == [sigma, sigma] and sgd.spent() <= 1.0


def test_a_symmetric_release_is_symmetric_and_noises_the_diagonal_only_when_asked():
    ledger = PrivacyLedger(1e4, 1e-5, accountant="rdp")
    exact = np.arange(16.0).reshape(4, 4)
    exact = exact + exact.T
    for diagonal in (True, False):
        noisy = symmetric_gaussian_release(ledger, _gaussian(1.0), 1.0, lambda: exact, np.random.default_rng(2),
                                           diagonal=diagonal).values[0]
        np.testing.assert_array_equal(noisy, noisy.T)
        assert (np.diagonal(noisy) != np.diagonal(exact)).all() == diagonal
        assert (noisy[np.triu_indices(4, 1)] != exact[np.triu_indices(4, 1)]).all()


def test_a_release_is_one_gaussian_charge_on_all_records():
    ledger = PrivacyLedger(1e4, 1e-5, accountant="rdp")
    with pytest.raises(ConfigError, match="one 'gaussian' charge"):
        gaussian_release(ledger, Charge("dp-sgd", "x", 1.0, 0.1, 10), 1.0, lambda: [np.zeros(2)], np.random.default_rng(0))
    with pytest.raises(ConfigError, match="sensitivity"):
        gaussian_release(ledger, _gaussian(1.0), 0.0, lambda: [np.zeros(2)], np.random.default_rng(0))


def test_the_extra_query_of_a_release_is_charged_with_it_and_answered_once():
    df = simulate_trial(n=400, seed=1)
    ledger = PrivacyLedger(2.0, 1e-5, accountant="rdp")
    release = charged_release(df, Schema.infer(df, target="arm"), ledger, 0.1, np.random.default_rng(0), extra=1.0,
                              extra_purpose=", class × dropout table")
    assert len(ledger.charges) == 1 and "class × dropout table" in ledger.charges[0].purpose
    assert release.extra.noise_sd == release.budget["noise_std"]
    noisy = release.extra.answer(np.full((2, 3), 100.0))
    assert noisy.shape == (2, 3) and (noisy != 100.0).all()
    with pytest.raises(RuntimeError, match="answered already"):
        release.extra.answer(np.zeros(2))
    plain = charged_release(df, Schema.infer(df, target="arm"), PrivacyLedger(2.0, 1e-5, accountant="rdp"), 0.1,
                            np.random.default_rng(0))
    assert plain.extra is None
