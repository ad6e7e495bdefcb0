"""The privacy ledger: every access to real records is a charge; the total is one (ε, δ).

After Opacus' accountants, the ledger is plain data — a list of charges, each a Gaussian mechanism
run ``steps`` times on a Poisson sample of rate ``sample_rate`` with noise multiplier
``noise_multiplier`` (noise std / sensitivity). DP-SGD on a discriminator is such a charge; so is a
Gaussian-noised statistic (``sample_rate = 1``, ``steps = 1``). Charges compose with the
accountant's own method (PRV by default, RDP on request, both from Opacus), and the ledger refuses
— before anything runs — a charge that would take the total past its target.

A mechanism may also spend some δ outright (``Charge.delta``): releasing only the categories whose
noisy count clears a threshold fails with probability at most that δ. Such δ is set aside first,
and the accountant composes the Gaussians at what is left (δ_total − Σ δ_charge): the union bound
that makes the total (ε, δ) hold.

Every charge names its **privacy unit** (``Charge.unit``): ``"record"`` when neighbouring tables
differ by one row (the table models), ``"patient"`` when they differ by all the rows of one patient
(code matrices, the patients family). Charges of different units do not compose into one
guarantee, so a ledger holds one unit (``PrivacyLedger.unit``) and refuses any other.

Noise calibration sits here, with the accountant it inverts: ``calibrate_noise`` finds the smallest
noise multiplier a charge may have within what is left, ``charge_calibrated`` finds it and charges
it in one call, so the σ a mechanism then uses is the σ the ledger holds.
"""
from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from dataclasses import replace as dataclasses_replace
from typing import Any, Literal, Union

import numpy as np

from clinsynth.errors import ConfigError, PrivacyBudgetError

AccountantName = Literal["prv", "rdp"]
UnitName = Literal["record", "patient"]
#: the privacy units a charge may protect: one row, or all the rows of one patient
UNITS: tuple[str, ...] = ("record", "patient")
LEDGER_FORMAT = 1


@dataclass(frozen=True)
class Charge:
    """One use of the real records: what ran, why, and the parameters the accountant needs."""

    mechanism: str
    purpose: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float = 0.0
    unit: UnitName = "record"  # neighbours differ by one record, or by all the rows of one patient

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ConfigError(f"charge '{self.purpose}': noise_multiplier must be > 0 (no noise means no privacy), "
                              f"got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(f"charge '{self.purpose}': sample_rate must be in (0, 1], got {self.sample_rate}")
        if int(self.steps) != self.steps or self.steps < 1:
            raise ConfigError(f"charge '{self.purpose}': steps must be a whole number ≥ 1, got {self.steps}")
        if not 0 <= self.delta < 1:
            raise ConfigError(f"charge '{self.purpose}': delta must be in [0, 1), got {self.delta}")
        if self.unit not in UNITS:
            raise ConfigError(f"charge '{self.purpose}': unit must be 'record' or 'patient', got {self.unit!r}")


def check_units(charges: Sequence[Charge], unit: str | None = None) -> None:
    """Refuse charges of different privacy units (or of another unit than ``unit``): ε adds up only
    when every charge protects the same thing, and a per-record ε says little about a patient."""
    from clinsynth.privacy.unit import PrivacyUnitError

    if not charges:
        return
    first = charges[0]
    expected = unit or first.unit
    for c in charges:
        if c.unit != expected:
            held = f"this ledger's charges protect a {unit}" if unit else f"'{first.purpose}' protects a {first.unit}"
            raise PrivacyUnitError(
                f"'{c.purpose}' protects a {c.unit} but {held}: one guarantee needs one privacy unit; charge "
                "every mechanism per patient when a patient may have several rows")


def epsilon_of(charges: list[Charge], delta: float, accountant: AccountantName = "prv",
               eps_error: float = 1e-3) -> float:
    """ε at ``delta`` of the composition of ``charges``, by the named Opacus accountant.

    The δ the charges spend outright is taken from ``delta`` first; nothing left means ε = ∞.
    PRV returns the upper end of its numerical error band (``eps_error`` wide): a printed ε is never
    an underestimate. RDP is an upper bound by construction (looser, and much faster).
    """
    if not charges:
        return 0.0
    check_units(charges)
    delta = delta - sum(c.delta for c in charges)
    if delta <= 0:
        return float("inf")
    history = tuple((float(c.noise_multiplier), float(c.sample_rate), int(c.steps)) for c in charges)
    return _accountant_epsilon(history, delta, accountant, eps_error if accountant == "prv" else None)


@functools.lru_cache(maxsize=512)
def _accountant_epsilon(history: tuple[tuple[float, float, int], ...], delta: float, accountant: str,
                        eps_error: float | None) -> float:
    """The Opacus accountant's ε of ``history`` at ``delta`` (δ spent outright already taken off),
    remembered: a calibration confirms the total its charge then charges, and a sub-model's charges
    copied into its parent's ledger repeat the totals the sub-model's ledger computed (one PRV call at
    the ledger's precision is ~0.5 s on a busy 2-core machine). A pure function of its arguments."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = PRVAccountant() if accountant == "prv" else RDPAccountant()
    acc.history = list(history)
    # both warn about their internal grids (alpha range, log of 0 off the support), not about the result
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        warnings.simplefilter("ignore")
        if accountant == "prv":
            return float(acc.get_epsilon(delta, eps_error=eps_error))
        return float(acc.get_epsilon(delta))


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε at ``delta`` of a μ-GDP mechanism (Dong, Roth & Su): the root of
    δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2), exact for composed Gaussian mechanisms."""
    from scipy.optimize import brentq
    from scipy.special import ndtr  # Φ: what scipy.stats.norm.cdf computes, without its per-call checks

    def gap(eps: float) -> float:
        return float(ndtr(-eps / mu + mu / 2) - math.exp(eps) * ndtr(-eps / mu - mu / 2)) - delta

    if gap(0.0) <= 0:
        return 0.0
    high = 1.0
    while gap(high) > 0:
        if high > 500:
            return math.inf
        high *= 2
    return float(brentq(gap, 0.0, high, xtol=1e-12, rtol=1e-12))


def gaussian_epsilon(charges: Sequence[Charge], delta: float) -> float | None:
    """The exact ε at ``delta`` of charges that are all Gaussian mechanisms on every record
    (``sample_rate`` 1; ``steps`` repeats), None when one is subsampled (DP-SGD): such a composition
    is μ-GDP with μ = sqrt(Σ steps_i / σ_i²), whose ε is closed-form. Every accountant's ε is an
    upper bound of it; it lets calibration skip accountant calls whose answer it already knows."""
    if any(c.sample_rate < 1.0 for c in charges):
        return None
    delta = delta - sum(c.delta for c in charges)
    if delta <= 0:
        return math.inf
    if not charges:
        return 0.0
    return gdp_epsilon(math.sqrt(sum(c.steps / c.noise_multiplier ** 2 for c in charges)), delta)


#: PRV's ε is the discretised ε at δ − δ/1000, plus ``eps_error``, and the discretisation is within
#: ``eps_error`` of the truth: so PRV ≤ exact(δ − δ/1000) + 2 eps_error. A total this many eps_error
#: below the budget is within it for PRV too (tests/test_ledger.py checks the band against PRV).
PRV_BAND = 3.0


def known_within(charges: Sequence[Charge], delta: float, budget: float, accountant: str,
                 eps_error: float) -> bool | None:
    """Whether the accountant's ε of ``charges`` is ≤ ``budget``, when the exact ε of an all-Gaussian
    ledger already says so: above the budget, every accountant is (each is an upper bound of it);
    for PRV, far enough below it (:data:`PRV_BAND`), PRV is below too. None: ask the accountant."""
    exact = gaussian_epsilon(charges, delta)
    if exact is None:
        return None
    if exact > budget * (1 + 1e-9) + 1e-9:
        return False
    if accountant == "prv":
        left = delta - sum(c.delta for c in charges)
        below = gaussian_epsilon([dataclasses_replace(c, delta=0.0) for c in charges], left * (1 - 1e-3))
        if below is not None and below + PRV_BAND * eps_error < budget:
            return True
    return None


class PrivacyLedger:
    """A budget (ε, δ), the charges made against it, and the accountant that adds them up.

    ``unit`` is the privacy unit of every charge it takes (``"record"`` or ``"patient"``); a
    charge of another unit is refused.

    Example
    -------
    >>> ledger = PrivacyLedger(epsilon=1.0, delta=1e-5)
    >>> ledger.charge(Charge("gaussian", "bounds of age", noise_multiplier=20.0, sample_rate=1.0, steps=1))
    >>> ledger.spent() < 1.0
    True
    """

    def __init__(self, epsilon: float, delta: float, accountant: AccountantName = "prv", unit: UnitName = "record"):
        if not epsilon > 0:
            raise ConfigError(f"epsilon must be > 0, got {epsilon}")
        if not 0 < delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {delta}")
        if accountant not in ("prv", "rdp"):
            raise ConfigError(f"accountant must be 'prv' or 'rdp', got {accountant!r}")
        if unit not in UNITS:
            raise ConfigError(f"the ledger's privacy unit must be 'record' or 'patient', got {unit!r}")
        self.epsilon = float(epsilon)
        self.delta = float(delta)
        self.accountant: AccountantName = accountant
        self.unit: UnitName = unit
        self.charges: list[Charge] = []

    @classmethod
    def for_records(cls, epsilon: float, delta: float | None, n: int, accountant: AccountantName = "prv",
                    unit: UnitName = "record") -> PrivacyLedger:
        """The ledger of a model trained on ``n`` records (patients, when ``unit="patient"``): δ
        defaults to ``default_delta(n)`` and may not exceed 1/n (at that level releasing one whole
        record counts as private)."""
        delta = delta if delta is not None else default_delta(n)
        if delta > 1.0 / n:
            raise ConfigError(f"delta={delta:g} is above 1/n = {1 / n:.2g}: that allows releasing a whole record; "
                              "use a smaller delta (or leave it unset for the default)")
        return cls(epsilon, delta, accountant, unit)

    def spent(self) -> float:
        """Total ε (at the ledger's δ) of everything charged so far."""
        return epsilon_of(self.charges, self.delta, self.accountant)

    def remaining(self) -> float:
        return max(self.epsilon - self.spent(), 0.0)

    def would_spend(self, charge: Charge) -> float:
        """Total ε if ``charge`` were added — without adding it."""
        return epsilon_of([*self.charges, charge], self.delta, self.accountant)

    def charge(self, charge: Charge) -> None:
        """Record ``charge``, or raise ``PrivacyBudgetError`` (recording nothing) if it overspends,
        ``PrivacyUnitError`` if it protects another unit than the ledger's."""
        check_units([charge], self.unit)
        if known_within([*self.charges, charge], self.delta, self.epsilon, self.accountant, 1e-3):
            self.charges.append(charge)  # its total is within the budget by the exact ε (spent() asks PRV)
            return
        total = self.would_spend(charge)
        if total > self.epsilon:
            raise PrivacyBudgetError(
                f"'{charge.purpose}' would take the privacy spend to ε = {total:.3f}, past the budget "
                f"ε = {self.epsilon:g} (already spent {self.spent():.3f}, δ = {self.delta:g}); "
                "raise the budget, add noise, or take fewer steps")
        self.charges.append(charge)

    def table(self) -> list[dict[str, Any]]:
        """One row per charge with the running total ε: the ledger as a report shows it."""
        rows = []
        for i, c in enumerate(self.charges, start=1):
            rows.append({**asdict(c), "cumulative_epsilon": epsilon_of(self.charges[:i], self.delta, self.accountant)})
        return rows

    # -- persistence (saved in the model bundle) -----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"format": LEDGER_FORMAT, "epsilon": self.epsilon, "delta": self.delta,
                "accountant": self.accountant, "unit": self.unit, "charges": [asdict(c) for c in self.charges]}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PrivacyLedger:
        """The ledger ``state_dict`` saved. A state from before privacy units (no ``unit``, charges
        without one) reads as per record: the narrower claim, never a broader one."""
        missing = [k for k in ("format", "epsilon", "delta", "accountant", "charges") if k not in state]
        if missing:
            raise ValueError(f"ledger state is missing {', '.join(missing)}")
        if state["format"] != LEDGER_FORMAT:
            raise ValueError(f"ledger format {state['format']} is not supported (this clinsynth reads {LEDGER_FORMAT})")
        ledger = cls(state["epsilon"], state["delta"], state["accountant"], state.get("unit", "record"))
        fields = set(Charge.__dataclass_fields__)
        for i, c in enumerate(state["charges"]):
            if not {"mechanism", "purpose", "noise_multiplier", "sample_rate", "steps"} <= set(c) <= fields:
                raise ValueError(f"ledger charge {i} has fields {sorted(c)}, expected {sorted(fields)}")
            ledger.charges.append(Charge(**{"unit": ledger.unit, **c}))
        check_units(ledger.charges, ledger.unit)
        if ledger.spent() > ledger.epsilon * (1 + 1e-9):
            raise ValueError(f"ledger state spends ε = {ledger.spent():.3f}, more than its budget {ledger.epsilon}")
        return ledger


def budget_problems(epsilon: Any, delta: Any, accountant: Any = "prv", shares: dict[str, Any] | None = None,
                    private: bool = True) -> list[str]:
    """What is wrong with a model's budget settings, one phrase each (empty: nothing): the one
    check every model runs. ``private=False`` (a model that takes the settings but runs without a
    budget) leaves ε and δ unchecked; the caller refuses them if set."""
    bad = []
    if private and not (isinstance(epsilon, (int, float)) and 0 < epsilon < float("inf")):
        bad.append(f"epsilon={epsilon!r} (a positive number)")
    if private and delta is not None and not (isinstance(delta, float) and 0 < delta < 1):
        bad.append(f"delta={delta!r} (in (0, 1), or None for the default)")
    if accountant not in ("prv", "rdp"):
        bad.append(f"accountant={accountant!r} ('prv' or 'rdp')")
    for name, value in (shares or {}).items():
        if not (isinstance(value, (int, float)) and 0 < value < 1):
            bad.append(f"{name}={value!r} (between 0 and 1)")
    return bad


def default_delta(n: int) -> float:
    """min(1e-5, 1/(10 n)), rounded down to one significant digit: never above 1/n."""
    import math

    raw = min(1e-5, 1.0 / (10 * max(n, 1)))
    exponent = math.floor(math.log10(raw))
    return math.floor(raw / 10**exponent) * 10**exponent


def share_noise_multiplier(share: float, epsilon: float, delta: float) -> float:
    """Noise multiplier of a Gaussian mechanism that takes ``share`` of an (ε, δ) budget.

    Budgets split naturally in Gaussian-DP terms (Dong, Roth & Su): a Gaussian mechanism with noise
    multiplier σ is μ = 1/σ GDP, and Gaussians compose by adding μ². The budget (ε, δ) is the μ
    whose GDP curve passes through it; a share ``s`` of it is μ√s, so σ = 1/(μ√s). Exact for
    Gaussian statistics composing with each other, close for DP-SGD (which is near-Gaussian after
    many steps). This only *chooses* the noise; the ledger charges the mechanism's true cost.
    """
    import math

    from scipy.optimize import brentq
    from scipy.special import ndtr as norm_cdf

    if not 0 < share <= 1:
        raise ConfigError(f"a budget share must be in (0, 1], got {share}")

    def gdp_delta(mu: float) -> float:
        return norm_cdf(-epsilon / mu + mu / 2) - math.exp(epsilon) * norm_cdf(-epsilon / mu - mu / 2)

    mu = brentq(lambda m: gdp_delta(m) - delta, 1e-6, 100.0)
    return 1.0 / (mu * math.sqrt(share))


# -- calibration: the accountant run backwards -------------------------------------------------
#: σ → the charge(s) a mechanism with noise multiplier σ would make
MakeCharge = Callable[[float], Union[Charge, Sequence[Charge]]]


def calibrate_noise(ledger: PrivacyLedger, make_charge: MakeCharge,
                    reserved: Sequence[Charge] = (), low: float = 0.3, high: float = 200.0,
                    rel_tol: float = 0.005, analytic: bool = True) -> float:
    """Smallest noise multiplier σ with ``ledger + make_charge(σ) + reserved`` within the budget.

    ε falls as σ grows, so bisection works. RDP (fast, an upper bound) brackets σ first; the
    ledger's own accountant then lowers it as far as it allows — PRV at a coarse error (0.01, 25×
    faster; its upper end is used, so it errs high), confirmed once at the ledger's precision.
    ``make_charge`` may return several charges (phases that share σ, e.g. an autoencoder's
    pretraining and a GAN's critic); they are calibrated together.

    On a ledger of Gaussian mechanisms on every record (no subsampling) the exact ε is closed-form
    (:func:`gaussian_epsilon`); a step of the search whose answer it settles (``known_within``)
    skips the accountant. The steps, hence σ, are the same as asking every time (``analytic=False``);
    the accountant is still asked where the answer is close, and the total a ledger reports
    (:meth:`PrivacyLedger.spent`) is always the accountant's.
    """
    def charges(sigma: float) -> list[Charge]:
        made = make_charge(sigma)
        return [made] if isinstance(made, Charge) else list(made)

    def within(sigma: float, accountant: str, eps_error: float = 1e-2) -> bool:
        """The accountant's total with σ is within the budget (asked only when the exact ε of an
        all-Gaussian ledger does not already say: the same answers, so the same σ, in fewer calls)."""
        total = [*ledger.charges, *charges(sigma), *reserved]
        known = known_within(total, ledger.delta, ledger.epsilon, accountant, eps_error) if analytic else None
        if known is not None:
            return known
        return epsilon_of(total, ledger.delta, accountant, eps_error) <= ledger.epsilon

    def bisect(lo: float, hi: float, accountant: str) -> float:
        while hi / lo > 1 + rel_tol:
            mid = (lo * hi) ** 0.5
            if within(mid, accountant):
                hi = mid
            else:
                lo = mid
        return hi

    if not within(high, "rdp"):
        raise PrivacyBudgetError(
            f"the budget ε = {ledger.epsilon:g} is too small for this training even with noise multiplier {high:g} "
            f"(already charged: {ledger.spent():.3f}); raise ε, train fewer epochs or use a smaller batch")
    sigma = bisect(low, high, "rdp") if not within(low, "rdp") else low
    if ledger.accountant == "rdp" or sigma <= low:
        return sigma
    if not within(sigma, ledger.accountant):  # PRV's error band can sit above RDP's bound
        sigma = bisect(sigma, high, ledger.accountant)
    else:
        floor = max(low, sigma / 2)
        sigma = floor if within(floor, ledger.accountant) else bisect(floor, sigma, ledger.accountant)
    while not within(sigma, ledger.accountant, eps_error=1e-3):  # the ledger's own precision
        sigma *= 1 + rel_tol
    return sigma


def charge_calibrated(ledger: PrivacyLedger, make_charge: MakeCharge, reserved: Sequence[Charge] = (),
                      low: float = 0.3) -> float:
    """Calibrate σ (:func:`calibrate_noise`) and charge ``make_charge(σ)`` to ``ledger`` in one call.

    Returns σ, the noise multiplier every charge made holds: a DP-SGD engine or a Gaussian release
    built with it adds the noise the ledger accounts for. ``reserved`` is left within the budget,
    not charged (the caller charges it later, e.g. epoch selection after training).
    """
    sigma = calibrate_noise(ledger, make_charge, reserved, low=low)
    made = make_charge(sigma)
    for charge in [made] if isinstance(made, Charge) else list(made):
        ledger.charge(charge)
    return sigma
