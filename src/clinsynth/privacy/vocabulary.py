"""Choosing a code vocabulary from the data under DP: noisy patient counts, kept above a threshold.

Which codes occur is itself private (a rare code can single out a patient), so a DP model may not
read its vocabulary from the data. Either the steward declares it public (a code list file, see
``read_long(vocabulary=...)``) or this mechanism chooses it: Gopi et al.'s DP set union with
Gaussian weighting (ICML 2020):

1. each patient contributes at most k = ``max_codes_per_patient`` codes (a random subset when they
   have more);
2. a patient with m codes adds 1/√m to each of their codes' weights, so every patient's
   contribution has L2 norm 1 whatever m is — a patient with few codes counts more than under a
   plain count, whose sensitivity is √k for everyone;
3. every code that occurs gets its weight plus N(0, σ²);
4. a code is kept when its noisy weight clears τ = max over t = 1 … k of 1/√t + σ Φ⁻¹(1 − δ_v / t).

A code held by one patient alone — the only kind whose *presence* differs between neighbouring
data sets — has weight 1/√t, t that patient's codes, and each of those t codes clears τ with
probability at most δ_v / t: at most δ_v in all. That δ_v is spent outright (``Charge.delta``); the
weights are a Gaussian mechanism with noise multiplier σ. With k = 50 and patients of ~9 codes a
code needs about 2.4× fewer patients than with plain counts (0.35 per patient against 1/√50 = 0.14,
the thresholds within 1 %). Codes kept at ε = 1 / 4 (``bench/bench_dp_vocabulary.py``, 3 seeds):
1,920 simulated patients × 296 codes 6–9 / 46–49 against 1 / 11–15 with plain counts; 20,000 ×
1,000: 191–196 / 483–495 against 88–91 / 299–301. The released weights are noisy and may be used freely.

A model calls :func:`charged_vocabulary`: it chooses σ from its share of the budget, charges the
ledger and runs the mechanism in one call, and names the smallest ε that would work when no code
clears the threshold. :func:`release_vocabulary` is the uncharged core it runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtri

from clinsynth.data.ehr import CodeMatrix
from clinsynth.errors import ConfigError, InputError
from clinsynth.privacy.ledger import Charge, PrivacyLedger, epsilon_of, share_noise_multiplier


class VocabularyRefusal(InputError):
    """No code clears the threshold. ``needed_noise_multiplier`` is the largest noise multiplier at
    which the most common code would clear it by 2 noise sds, so the caller, who chose the noise
    from ε, can name the smallest ε that would work."""

    def __init__(self, message: str, needed_noise_multiplier: float | None):
        super().__init__(message)
        self.needed_noise_multiplier = needed_noise_multiplier


@dataclass(frozen=True)
class VocabularyRelease:
    """The codes kept, their noisy weights (Σ 1/√m over their patients), and the threshold they cleared."""

    vocabulary: tuple[str, ...]
    noisy_counts: np.ndarray
    threshold: float
    candidates: int


def weighted_threshold(noise_multiplier: float, threshold_delta: float, max_codes_per_patient: int) -> float:
    """τ = max over t = 1 … k of 1/√t + σ Φ⁻¹(1 − δ / t): a code one patient of t codes alone holds
    clears it with probability ≤ δ / t, so at most δ for any of that patient's codes."""
    t = np.arange(1, int(max_codes_per_patient) + 1, dtype=np.float64)
    return float(np.max(1.0 / np.sqrt(t) - noise_multiplier * ndtri(threshold_delta / t)))


def vocabulary_charge(noise_multiplier: float, threshold_delta: float, max_codes_per_patient: int) -> Charge:
    """What :func:`release_vocabulary` costs: a Gaussian mechanism plus the δ of its threshold."""
    return Charge("gaussian", f"vocabulary: codes whose noisy patient count (a patient of m codes counts 1/√m) clears the threshold "
                  f"(≤ {max_codes_per_patient} codes per patient)", noise_multiplier=noise_multiplier,
                  sample_rate=1.0, steps=1, delta=threshold_delta, unit="patient")


def cap_codes_per_patient(matrix: sp.csr_array, cap: int, rng: np.random.Generator) -> sp.csr_array:
    """Keep at most ``cap`` codes of each patient, a uniform random subset of those with more
    (sorted indices): what bounds one patient's influence on every count a DP code model takes."""
    per_row = np.diff(matrix.indptr)
    if per_row.max(initial=0) <= cap:
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), per_row)
    order = np.lexsort((rng.random(matrix.nnz), rows))  # random order within each row
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - matrix.indptr[rows[order]]
    keep = rank < cap
    indptr = np.concatenate([[0], np.cumsum(np.minimum(per_row, cap))])
    out = sp.csr_array((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)
    out.sort_indices()
    return out


def release_vocabulary(codes: CodeMatrix, noise_multiplier: float, threshold_delta: float,
                       max_codes_per_patient: int, rng: np.random.Generator) -> VocabularyRelease:
    """Run the mechanism of the module docstring, uncharged (models call :func:`charged_vocabulary`).

    Kept codes stay in the input's column order. Raises :class:`VocabularyRefusal` when no code
    clears the threshold (too few patients for this ε: declare the vocabulary public or raise ε).
    """
    if not noise_multiplier > 0:
        raise ConfigError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    if not 0 < threshold_delta < 1:
        raise ConfigError(f"threshold_delta must be in (0, 1), got {threshold_delta}")
    if isinstance(max_codes_per_patient, bool) or not isinstance(max_codes_per_patient, (int, np.integer)) \
            or max_codes_per_patient < 1:
        raise ConfigError(f"max_codes_per_patient must be a whole number ≥ 1, got {max_codes_per_patient!r}")
    capped = cap_codes_per_patient(codes.matrix, int(max_codes_per_patient), rng)
    weights = patient_weights(capped)
    counts = np.bincount(capped.indices, minlength=codes.n_codes)
    present = np.flatnonzero(counts > 0)  # only codes that occur are candidates: the domain is unknown
    noisy = weights[present] + rng.normal(0.0, noise_multiplier, size=present.size)
    tau = weighted_threshold(noise_multiplier, threshold_delta, int(max_codes_per_patient))
    kept = present[noisy >= tau]
    if kept.size == 0:
        top = float(weights.max(initial=0.0))
        z = float(-ndtri(threshold_delta / max_codes_per_patient))  # τ ≤ 1 + σ z: a needed σ that is safe
        needed = (top - 1.0) / (z + 2.0) if top > 1 else None
        raise VocabularyRefusal(f"no code's noisy patient count clears the DP threshold ({codes.n_patients} patients; "
                                f"the most common code is in {int(counts.max(initial=0))}, a count of {top:.1f} with "
                                f"each patient of m codes counted 1/√m, against {tau:.1f}); declare the vocabulary "
                                "public (a code list) or raise ε", needed)
    return VocabularyRelease(vocabulary=tuple(codes.vocabulary[i] for i in kept),
                             noisy_counts=noisy[noisy >= tau], threshold=float(tau), candidates=int(present.size))


def patient_weights(capped: sp.csr_array) -> np.ndarray:
    """Each code's Σ 1/√m over the patients having it, m the patient's (capped) number of codes."""
    per_patient = np.diff(capped.indptr)
    share = np.repeat(1.0 / np.sqrt(np.maximum(per_patient, 1)), per_patient)
    return np.bincount(capped.indices, weights=share, minlength=capped.shape[1])


def charged_vocabulary(codes: CodeMatrix, ledger: PrivacyLedger, share: float, max_codes_per_patient: int,
                       rng: np.random.Generator) -> VocabularyRelease:
    """The DP vocabulary at ``share`` of the ledger's budget (μ², see ``share_noise_multiplier``),
    charged and released in one call: a Gaussian mechanism whose threshold spends δ/10 outright.

    A refusal (no code clears the threshold) names the smallest ε at which the most common code
    would, found with the same rule; the charge stays in the ledger (the counts were drawn).
    """
    sigma = share_noise_multiplier(share, ledger.epsilon, ledger.delta)
    charge = vocabulary_charge(sigma, ledger.delta / 10, max_codes_per_patient)
    ledger.charge(charge)
    try:
        return release_vocabulary(codes, sigma, charge.delta, max_codes_per_patient, rng)
    except VocabularyRefusal as refusal:
        hint = _smallest_epsilon_hint(refusal.needed_noise_multiplier, share, ledger, max_codes_per_patient)
        raise VocabularyRefusal(f"{refusal} (ε = {ledger.epsilon:g} here; {hint})",
                                refusal.needed_noise_multiplier) from None


def _smallest_epsilon_hint(needed: float | None, share: float, ledger: PrivacyLedger, max_codes_per_patient: int) -> str:
    """The smallest ε at which the vocabulary's noise (``share`` of it) lets the most common code
    clear the threshold, and the ledger's accountant finds the charge within ε."""
    from clinsynth.privacy.facts_budget import least_epsilon

    delta = ledger.delta

    def works(eps: float) -> bool:
        sigma = share_noise_multiplier(share, eps, delta)
        charge = vocabulary_charge(sigma, delta / 10, max_codes_per_patient)
        return sigma <= needed and epsilon_of([charge], delta, ledger.accountant) <= eps

    eps = least_epsilon(works) if needed else None
    return (f"the smallest ε that would work is {eps:g}" if eps is not None
            else "no ε up to 100 would: declare the vocabulary public")
