"""The Gaussian mechanism on a vector of statistics: charge the ledger, measure, add noise — one call.

A model that releases counts or scores of the real records hands this module three things: the
``Charge`` (the noise multiplier σ, or a function of σ for the smallest σ the budget has left), the
statistics' **L2 sensitivity** Δ (how far adding or removing one record can move the whole vector,
the model's own analysis, written next to its call), and a function that measures them. The
mechanism then

1. charges the ledger — refused before any record is read if it would overspend;
2. measures the statistics (only now);
3. adds N(0, (σ Δ)²) to every entry, from the caller's generator, in the order the statistics are
   given.

Because σ is read from the charge the ledger accepted, the noise and the charge cannot drift
apart. The noisy values are the release: anything computed from them afterwards is
post-processing and costs nothing more.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from clinsynth.errors import ConfigError
from clinsynth.privacy.ledger import Charge, MakeCharge, PrivacyLedger, charge_calibrated

#: A charge, or σ → charge for the smallest σ the ledger's remaining budget allows.
ChargeOrCalibrate = Charge | MakeCharge


@dataclass(frozen=True)
class GaussianRelease:
    """The noisy statistics (in the order measured), the charge made and the noise sd added."""

    values: list[np.ndarray]
    charge: Charge
    noise_std: float


def _charge(ledger: PrivacyLedger, charge: ChargeOrCalibrate, low: float) -> Charge:
    """Charge ``charge`` (calibrating σ first when given a function of it) and return what was charged."""
    if not isinstance(charge, Charge):
        make = charge
        sigma = charge_calibrated(ledger, make, low=low)
        made = make(sigma)
        if not isinstance(made, Charge):
            raise ConfigError("a Gaussian release is one charge; got several")
        charge = made
    else:
        ledger.charge(charge)
    if charge.mechanism != "gaussian" or charge.sample_rate != 1.0 or charge.steps != 1:
        raise ConfigError(f"'{charge.purpose}': a Gaussian release is one 'gaussian' charge on all records "
                          f"(sample_rate 1, steps 1), got {charge.mechanism!r}, {charge.sample_rate:g}, {charge.steps}")
    return charge


def _check_sensitivity(sensitivity: float) -> None:
    if not (isinstance(sensitivity, (int, float)) and 0 < sensitivity < math.inf):
        raise ConfigError(f"sensitivity must be a positive number, got {sensitivity!r}")


def gaussian_release(ledger: PrivacyLedger, charge: ChargeOrCalibrate, sensitivity: float,
                     measure: Callable[[], Sequence[np.ndarray | float]], rng: np.random.Generator,
                     low: float = 0.05) -> GaussianRelease:
    """Release the statistics ``measure()`` returns, with noise of sd σ × ``sensitivity`` on each entry.

    ``sensitivity`` bounds the L2 change of all of them together when one record is added or
    removed. ``charge`` is charged first (a function of σ is calibrated down to ``low`` and
    charged, see :func:`~clinsynth.privacy.ledger.charge_calibrated`); ``measure`` runs only once
    the ledger has accepted it.

    Example
    -------
    >>> ledger = PrivacyLedger(epsilon=1.0, delta=1e-5)
    >>> counts = np.array([120.0, 80.0])  # one record moves one count by 1: Δ = 1
    >>> out = gaussian_release(ledger, Charge("gaussian", "class counts", 5.0, 1.0, 1), 1.0,
    ...                        lambda: [counts], np.random.default_rng(0))
    >>> out.noise_std, len(ledger.charges)
    (5.0, 1)
    """
    _check_sensitivity(sensitivity)
    made = _charge(ledger, charge, low)
    std = made.noise_multiplier * sensitivity
    values = []
    for statistic in measure():
        exact = np.asarray(statistic, dtype=np.result_type(statistic, np.float64))
        values.append(exact + rng.normal(0.0, std, size=exact.shape))
    return GaussianRelease(values, made, std)


def symmetric_gaussian_release(ledger: PrivacyLedger, charge: ChargeOrCalibrate, sensitivity: float,
                               measure: Callable[[], np.ndarray], rng: np.random.Generator,
                               diagonal: bool) -> GaussianRelease:
    """Release a symmetric matrix whose statistics are its upper triangle (with the diagonal when
    ``diagonal``): each gets noise of sd σ × ``sensitivity`` and is mirrored below.

    The noise is drawn as a full square matrix and its lower triangle dropped, so the generator's
    stream is the one a full-matrix draw leaves (the reference runs of the DP models depend on it).
    """
    _check_sensitivity(sensitivity)
    made = _charge(ledger, charge, 0.05)
    std = made.noise_multiplier * sensitivity
    exact = np.asarray(measure())
    if exact.ndim != 2 or exact.shape[0] != exact.shape[1]:
        raise ConfigError(f"'{made.purpose}': a symmetric release needs a square matrix, got shape {exact.shape}")
    noise = rng.normal(0.0, std, size=exact.shape)
    return GaussianRelease([exact + (np.triu(noise, 0 if diagonal else 1) + np.triu(noise, 1).T)], made, std)
