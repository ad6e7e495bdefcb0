"""The privacy ledger against independent numbers: dp-accounting's accountants and the exact
Gaussian mechanism (Balle & Wang 2018), and its refusal to overspend."""
from __future__ import annotations

import math

import dp_accounting as dpa
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from scipy.optimize import brentq
from scipy.stats import norm

from clinsynth.errors import ConfigError, PrivacyBudgetError
from clinsynth.privacy.ledger import Charge, PrivacyLedger, epsilon_of

# (noise multiplier, sample rate, steps, delta); the first is the SPRINT work's DP run
CONFIGS = [
    (1.0, 1 / 6000, 3_000_000, 1e-5),
    (1.1, 0.01, 10_000, 1e-5),
    (0.8, 0.05, 2_000, 1e-6),
    (2.0, 0.001, 100_000, 1e-5),
    (5.0, 1.0, 10, 1e-5),
]


def _event(sigma: float, q: float) -> dpa.DpEvent:
    gaussian = dpa.GaussianDpEvent(sigma)
    return gaussian if q >= 1 else dpa.PoissonSampledDpEvent(q, gaussian)


def dp_accounting_rdp(sigma, q, steps, delta) -> float:
    acc = rdp_privacy_accountant.RdpAccountant()
    acc.compose(_event(sigma, q), steps)
    return acc.get_epsilon(delta)


def dp_accounting_pld(sigma, q, steps, delta) -> float:
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(_event(sigma, q), steps)
    return acc.get_epsilon(delta)


def exact_gaussian_epsilon(sigma: float, delta: float) -> float:
    """ε of one Gaussian mechanism with noise multiplier ``sigma``, solved from the exact δ(ε)."""
    def gap(eps: float) -> float:
        return norm.cdf(1 / (2 * sigma) - eps * sigma) - math.exp(eps) * norm.cdf(-1 / (2 * sigma) - eps * sigma) - delta
    return brentq(gap, 0.0, 100.0)


def charge(sigma, q, steps, purpose="test") -> Charge:
    return Charge("dp-sgd" if q < 1 else "gaussian", purpose, sigma, q, steps)


@pytest.mark.parametrize("sigma, q, steps, delta", CONFIGS)
def test_rdp_matches_dp_accounting(sigma, q, steps, delta):
    ours = epsilon_of([charge(sigma, q, steps)], delta, "rdp")
    assert ours == pytest.approx(dp_accounting_rdp(sigma, q, steps, delta), rel=0.01)


@pytest.mark.parametrize("sigma, q, steps, delta", CONFIGS[1:])
def test_prv_matches_dp_accounting_pld(sigma, q, steps, delta):
    ours = epsilon_of([charge(sigma, q, steps)], delta, "prv")
    assert ours == pytest.approx(dp_accounting_pld(sigma, q, steps, delta), rel=0.01)


def test_prv_on_the_sprint_run_is_tighter_than_rdp_and_near_pld():
    # PRV and PLD are both numerical; on 3,000,000 steps they differ by ~2 % (PRV lower), RDP is looser
    sigma, q, steps, delta = CONFIGS[0]
    prv = epsilon_of([charge(sigma, q, steps)], delta, "prv", eps_error=0.01)  # coarser: 3M steps are slow
    assert prv < dp_accounting_rdp(sigma, q, steps, delta)
    assert prv == pytest.approx(dp_accounting_pld(sigma, q, steps, delta), rel=0.03)


@pytest.mark.parametrize("sigma, k", [(2.0, 1), (4.0, 4), (10.0, 9)])
def test_gaussian_statistics_match_the_exact_mechanism(sigma, k):
    # k Gaussian mechanisms of multiplier σ compose exactly to one of multiplier σ / √k
    exact = exact_gaussian_epsilon(sigma / math.sqrt(k), 1e-5)
    ours = epsilon_of([charge(sigma, 1.0, 1, f"stat {i}") for i in range(k)], 1e-5, "prv")
    assert ours == pytest.approx(exact, rel=0.01)


def test_ledger_refuses_to_overspend_and_records_nothing():
    ledger = PrivacyLedger(epsilon=2.0, delta=1e-5, accountant="rdp")
    ledger.charge(charge(1.1, 0.01, 1_000, "discriminator"))
    spent = ledger.spent()
    assert 0 < spent < 2.0
    with pytest.raises(PrivacyBudgetError, match=r"'selection' would take the privacy spend to ε = .*past the budget ε = 2"):
        ledger.charge(charge(1.1, 0.01, 100_000, "selection"))
    assert len(ledger.charges) == 1 and ledger.spent() == spent
    assert ledger.remaining() == pytest.approx(2.0 - spent)


def test_composition_spends_more_than_each_part():
    ledger = PrivacyLedger(epsilon=10.0, delta=1e-5, accountant="rdp")
    ledger.charge(charge(20.0, 1.0, 1, "bounds"))
    first = ledger.spent()
    ledger.charge(charge(1.1, 0.01, 1_000, "discriminator"))
    rows = ledger.table()
    assert [r["purpose"] for r in rows] == ["bounds", "discriminator"]
    assert rows[0]["cumulative_epsilon"] == pytest.approx(first)
    assert rows[1]["cumulative_epsilon"] > max(first, epsilon_of([charge(1.1, 0.01, 1_000)], 1e-5, "rdp"))


def test_state_round_trip_and_validation():
    ledger = PrivacyLedger(epsilon=2.0, delta=1e-6, accountant="rdp")
    ledger.charge(charge(1.1, 0.01, 500, "discriminator"))
    again = PrivacyLedger.from_state_dict(ledger.state_dict())
    assert again.charges == ledger.charges and again.spent() == ledger.spent()
    state = ledger.state_dict()
    del state["delta"]
    with pytest.raises(ValueError, match="missing delta"):
        PrivacyLedger.from_state_dict(state)
    state = ledger.state_dict()
    state["epsilon"] = 0.01
    with pytest.raises(ValueError, match="more than its budget"):
        PrivacyLedger.from_state_dict(state)


@pytest.mark.parametrize("kwargs, message", [
    (dict(noise_multiplier=0.0, sample_rate=0.1, steps=1), "no noise"),
    (dict(noise_multiplier=1.0, sample_rate=0.0, steps=1), "sample_rate"),
    (dict(noise_multiplier=1.0, sample_rate=0.1, steps=0), "steps"),
])
def test_charges_without_privacy_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Charge("dp-sgd", "broken", **kwargs)


# -- the closed form of an all-Gaussian ledger, and calibration that uses it ----------------------
GAUSSIAN_LEDGERS = [  # noise multipliers of Gaussian charges on every record (the DP counting models')
    [5.0],
    [19.94, 14.10, 7.80, 11.80, 5.10],  # dp-visitchain at ε = 1 on the simulated long trial
    [3.0, 3.0, 40.0],
    [1.2],
    [60.0, 25.0, 9.0, 9.0],
]


@pytest.mark.parametrize("sigmas", GAUSSIAN_LEDGERS)
def test_closed_form_matches_dp_accounting_pld(sigmas):
    from clinsynth.privacy.ledger import gaussian_epsilon

    ours = gaussian_epsilon([charge(s, 1.0, 1) for s in sigmas], 1e-5)
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for s in sigmas:
        acc.compose(dpa.GaussianDpEvent(s))
    assert ours == pytest.approx(acc.get_epsilon(1e-5), abs=2e-3)
    assert gaussian_epsilon([charge(1.0, 0.01, 100)], 1e-5) is None  # subsampled: no closed form


@pytest.mark.parametrize("sigmas", GAUSSIAN_LEDGERS)
@pytest.mark.parametrize("eps_error", [1e-2, 1e-3])
def test_prv_sits_in_the_band_the_calibration_relies_on(sigmas, eps_error):
    """exact(δ) ≤ PRV ≤ exact(δ − δ/1000) + 2 eps_error: calibration skips PRV only outside
    [exact − PRV_BAND eps_error, exact] (PRV_BAND = 3), so its answers are PRV's."""
    from clinsynth.privacy.ledger import PRV_BAND, gaussian_epsilon

    charges = [charge(s, 1.0, 1) for s in sigmas]
    prv = epsilon_of(charges, 1e-5, "prv", eps_error)
    assert gaussian_epsilon(charges, 1e-5) <= prv <= gaussian_epsilon(charges, 1e-5 * (1 - 1e-3)) + 2 * eps_error
    assert PRV_BAND > 2


@pytest.mark.parametrize("epsilon, fixed", [(1.0, [19.94, 14.10, 7.80]), (4.0, [11.8]), (0.5, []),
                                            (2.0, "dp-sgd")])
def test_calibration_finds_the_same_sigma_in_fewer_accountant_calls(epsilon, fixed, monkeypatch):
    """The closed form only skips steps whose answer it knows: σ is the one asking PRV at every
    step gives, with a fraction of the calls (none saved with a subsampled charge on the ledger)."""
    from clinsynth.privacy import ledger as module

    calls = []
    original = module.epsilon_of
    monkeypatch.setattr(module, "epsilon_of", lambda *a, **k: calls.append(a[2:]) or original(*a, **k))

    def fresh() -> PrivacyLedger:
        ledger = PrivacyLedger(epsilon=epsilon, delta=1e-5)
        if fixed == "dp-sgd":
            ledger.charges.append(charge(1.5, 0.05, 40))
        else:
            ledger.charges.extend(charge(s, 1.0, 1, "fixed") for s in fixed)
        return ledger

    make = lambda s: Charge("gaussian", "tables", s, 1.0, 1, delta=1e-7)  # noqa: E731
    module._accountant_epsilon.cache_clear()
    slow = module.calibrate_noise(fresh(), make, analytic=False)
    asked, calls[:] = len(calls), []
    module._accountant_epsilon.cache_clear()
    fast = module.calibrate_noise(fresh(), make)
    assert fast == slow
    prv_calls = sum(1 for c in calls if c and c[0] == "prv")
    if fixed == "dp-sgd":
        assert len(calls) == asked
    else:
        assert prv_calls <= 0.6 * asked
    ledger = fresh()
    ledger.charge(make(fast))
    assert ledger.spent() <= epsilon  # the accountant's total
