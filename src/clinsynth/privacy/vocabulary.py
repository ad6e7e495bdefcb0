"""Choosing a code vocabulary from the data under DP: noisy patient counts, kept above a threshold.

Which codes occur is itself private (a rare code can single out a patient), so a DP model may not
read its vocabulary from the data. Either the steward declares it public (a code list file, see
``read_long(vocabulary=...)``) or this mechanism chooses it, after Gopi et al.'s DP set union with
the Gaussian mechanism:

1. each patient contributes at most ``max_codes_per_patient`` codes (a random subset when they
   have more), so one patient moves at most that many code counts, each by 1: L2 sensitivity √k;
2. every code that occurs gets its patient count plus N(0, (σ √k)²);
3. a code is kept when its noisy count clears τ = 1 + σ √k Φ⁻¹(1 − δ_v / k).

A code held by one patient alone — the only kind whose *presence* differs between neighbouring
data sets — clears τ with probability at most δ_v / k, so at most δ_v for the k codes a patient can
hold: that δ_v is spent outright (``Charge.delta``), the counts are a Gaussian mechanism with
noise multiplier σ. The released counts are noisy and may be used freely afterwards.

A model calls :func:`charged_vocabulary`: it chooses σ from its share of the budget, charges the
ledger and runs the mechanism in one call, and names the smallest ε that would work when no code
clears the threshold. :func:`release_vocabulary` is the uncharged core it runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from clinsynth.data.ehr import CodeMatrix
from clinsynth.errors import ConfigError, InputError
from clinsynth.privacy.ledger import Charge, PrivacyLedger, epsilon_of, share_noise_multiplier
from clinsynth.privacy.statistics import category_threshold


class VocabularyRefusal(InputError):
    """No code clears the threshold. ``needed_noise_multiplier`` is the largest noise multiplier at
    which the most common code would clear it by 2 noise sds, so the caller, who chose the noise
    from ε, can name the smallest ε that would work."""

    def __init__(self, message: str, needed_noise_multiplier: float | None):
        super().__init__(message)
        self.needed_noise_multiplier = needed_noise_multiplier


@dataclass(frozen=True)
class VocabularyRelease:
    """The codes kept, their noisy patient counts, and the threshold they cleared."""

    vocabulary: tuple[str, ...]
    noisy_counts: np.ndarray
    threshold: float
    candidates: int


def vocabulary_charge(noise_multiplier: float, threshold_delta: float, max_codes_per_patient: int) -> Charge:
    """What :func:`release_vocabulary` costs: a Gaussian mechanism plus the δ of its threshold."""
    return Charge("gaussian", f"vocabulary: codes whose noisy patient count clears the threshold "
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
    counts = np.bincount(capped.indices, minlength=codes.n_codes).astype(np.float64)
    present = np.flatnonzero(counts > 0)  # only codes that occur are candidates: the domain is unknown
    std = noise_multiplier * np.sqrt(max_codes_per_patient)
    noisy = counts[present] + rng.normal(0.0, std, size=present.size)
    tau = category_threshold(std, threshold_delta, int(max_codes_per_patient))
    kept = present[noisy >= tau]
    if kept.size == 0:
        top = float(counts.max(initial=0.0))
        z = (tau - 1.0) / std if std > 0 else 0.0
        needed = (top - 1.0) / ((z + 2.0) * np.sqrt(max_codes_per_patient)) if top > 1 else None
        raise VocabularyRefusal(f"no code's noisy patient count clears the DP threshold {tau:.0f} "
                                f"({codes.n_patients} patients; the most common code is in {int(top)}); "
                                "declare the vocabulary public (a code list) or raise ε", needed)
    return VocabularyRelease(vocabulary=tuple(codes.vocabulary[i] for i in kept),
                             noisy_counts=noisy[noisy >= tau], threshold=float(tau), candidates=int(present.size))


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
