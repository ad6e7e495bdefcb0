"""How much of the budget the public facts take, and the smallest ε at which they can be released.

Decided from what is public before any record is read — the plan of queries (from the schema's
structure), the number of records ``n``, ε and δ — so the choice itself reveals nothing.

**Usefulness.** A query can give a useful answer when a bucket or category holding ``n / f``
records clears its threshold by :data:`MARGIN_SIGMAS` noise sds: for a value query, one bucket
of the *coarse* grid (a factor of ~5; see :mod:`clinsynth.privacy.histograms`) against
:func:`~clinsynth.privacy.histograms.bulk_threshold`; for a category list, one category against
:func:`category_threshold`. Each gives the largest ``noise_std`` (the sd added to the weighted
counts, :mod:`clinsynth.privacy.statistics`) at which it holds. The release is refused below
:data:`USEFUL_FRACTION` — even *all* the records in one bucket or one category could not be told
from the noise, or, for the target, not even two classes of half the records each: no useful
release is possible. Above it a column that shows nothing falls back to a public default or is
suppressed, with a warning. :data:`COMFORT_FRACTION` (a third of the records) is the bar that
decides the share.

**The share.** The facts get the caller's ``base_share`` of the budget (μ², see
:func:`~clinsynth.privacy.ledger.share_noise_multiplier`) when that meets the comfort bar; a table
with few records per column gets more — just enough to meet it — up to :data:`MAX_SHARE`. The
rest of the budget (training, selection) is calibrated on what the ledger has left.

**The smallest ε.** When even :data:`MAX_SHARE` cannot meet the bar, or the released target has
fewer than two classes, :func:`smallest_epsilon` inverts the same rule: the least ε whose
``noise_std`` (by :func:`facts_noise`, the function the release uses) is at most what the failing
query needs, found by bisection (``noise_std`` never grows with ε), rounded up to two digits.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scipy.special import ndtri

from clinsynth.privacy.histograms import COARSE_WEIGHT, bulk_threshold, coarse_edges

#: The target's classes get at least this part of the facts' μ² (their noise sets whether any
#: model can be trained at all): on a wide table 3 × less noise than weight 1 would give them,
#: for at most 5 % more noise on every other count.
TARGET_SHARE = 0.1
#: The most of the budget the facts may take (a table with few records per column).
MAX_SHARE = 0.5
#: The refusal bar: all records (the target: half of them) in one coarse bucket or category.
USEFUL_FRACTION = 1.0
USEFUL_TARGET_FRACTION = 2.0
#: The share is raised until a third of the records in one coarse bucket or category would clear.
COMFORT_FRACTION = 3.0
MARGIN_SIGMAS = 2.0
_COARSE_FALSE_ALARM = 1e-5  # as histograms.LEVELS: the coarse grid's share of the false-alarm rate


def category_threshold(noise_std: float, threshold_delta: float, n_columns: int) -> float:
    """τ such that a value one record alone holds clears it with probability ≤ δ / ``n_columns``."""
    return 1.0 + noise_std * float(-ndtri(threshold_delta / n_columns))


def _coarse_sigmas(kind: str) -> float:
    """The coarse grid's cut in noise sds (the threshold's factor, as :func:`bulk_threshold`)."""
    return bulk_threshold(1.0, coarse_edges(kind).size - 1, _COARSE_FALSE_ALARM)


def value_limit(n: float, fraction: float, kind: str = "number") -> float:
    """The largest noise_std at which ``n / fraction`` records in one coarse bucket clear its cut by the margin."""
    return COARSE_WEIGHT * (n / fraction) / (_coarse_sigmas(kind) + MARGIN_SIGMAS)


def category_limit(n: float, fraction: float, weight: float, threshold_delta: float, n_columns: int) -> float:
    """The largest noise_std at which a category of ``n / fraction`` records clears τ by the margin."""
    z = float(-ndtri(threshold_delta / n_columns))
    return max(weight * (n / fraction - 1.0) / (z + MARGIN_SIGMAS), 0.0)


@dataclass(frozen=True)
class FactsNoise:
    """The share of the budget the facts take and the noise that follows."""

    share: float
    base_share: float
    noise_multiplier: float
    noise_std: float


def facts_noise(sensitivity: float, comfort_limit: float, epsilon: float, delta: float,
                base_share: float) -> FactsNoise:
    """The rule of the module docstring: ``base_share``, raised (up to :data:`MAX_SHARE`) until
    ``noise_std = σ · sensitivity`` meets ``comfort_limit``."""
    from clinsynth.privacy.ledger import share_noise_multiplier

    sens = max(sensitivity, 1.0)
    sigma = share_noise_multiplier(base_share, epsilon, delta)
    share = base_share
    if sigma * sens > comfort_limit and base_share < MAX_SHARE:
        share = min(MAX_SHARE, base_share * (sigma * sens / comfort_limit) ** 2) if comfort_limit > 0 else MAX_SHARE
        sigma = share_noise_multiplier(share, epsilon, delta)
    return FactsNoise(share=share, base_share=base_share, noise_multiplier=sigma, noise_std=sigma * sens)


def least_epsilon(works: Callable[[float], bool], high: float = 100.0) -> float | None:
    """The least ε ≤ ``high`` for which ``works(ε)`` (non-decreasing in ε), by bisection on log ε,
    rounded up to two significant digits (and further up until it works); None if ``high`` fails."""
    if not works(high):
        return None
    lo, hi = math.log(1e-4), math.log(high)
    if works(math.exp(lo)):
        hi = lo
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if works(math.exp(mid)) else (mid, hi)
    eps = _round_up(math.exp(hi))
    while eps <= high and not works(eps):
        eps = _round_up(eps * 1.05)
    return eps if eps <= high else None


def smallest_epsilon(sensitivity: float, comfort_limit: float, needed_noise_std: float, delta: float,
                     base_share: float, accountant: str = "prv", threshold_delta: float = 0.0,
                     high: float = 100.0) -> float | None:
    """The least ε at which :func:`facts_noise` gives ``noise_std ≤ needed_noise_std`` and the
    ledger's ``accountant`` finds the facts' charge within ε (the GDP rule that chose the noise is
    exact for PRV; RDP's bound is looser at small ε), rounded up to two significant digits; None
    when not even ε = ``high`` does."""
    if not needed_noise_std > 0:
        return None

    def quiet(eps: float) -> bool:
        return facts_noise(sensitivity, comfort_limit, eps, delta, base_share).noise_std <= needed_noise_std

    bound = least_epsilon(quiet, high)
    if bound is None:
        return None
    return least_epsilon(lambda eps: eps >= bound and quiet(eps) and _fits(
        sensitivity, comfort_limit, eps, delta, base_share, accountant, threshold_delta), high)


def _fits(sensitivity: float, comfort_limit: float, epsilon: float, delta: float, base_share: float,
          accountant: str, threshold_delta: float) -> bool:
    """The facts' charge at ``epsilon`` is within it by the ledger's accountant."""
    from clinsynth.privacy.ledger import Charge, epsilon_of

    sigma = facts_noise(sensitivity, comfort_limit, epsilon, delta, base_share).noise_multiplier
    charge = Charge("gaussian", "public facts", noise_multiplier=sigma, sample_rate=1.0, steps=1, delta=threshold_delta)
    return epsilon_of([charge], delta, accountant) <= epsilon  # type: ignore[arg-type]


def _round_up(x: float) -> float:
    """``x`` rounded up to two significant digits (a named ε must work, so never down)."""
    digits = 1 - math.floor(math.log10(x))
    return math.ceil(x * 10**digits - 1e-9) / 10**digits
