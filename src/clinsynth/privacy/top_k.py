"""Private top-k: the k best of K candidates by Gaussian-noised scores (report noisy max, k at once).

The scores are released by one Gaussian mechanism (:func:`~clinsynth.privacy.gaussian.gaussian_release`)
— charged, measured and noised in that call — and the top k of the noisy scores is post-processing
of that release, so the ledger composes it exactly with everything else (DP-SGD included). The
caller gives the scores' L2 sensitivity: for K sums with one term in [0, 1] per record it is √K.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clinsynth.privacy.gaussian import gaussian_release
from clinsynth.privacy.ledger import Charge, PrivacyLedger


@dataclass(frozen=True)
class NoisyTopK:
    """Indices of the k largest noisy scores (best first), all the noisy scores, and their noise sd."""

    top: list[int]
    noisy: np.ndarray
    noise_std: float


def noisy_top_k(ledger: PrivacyLedger, charge: Charge, sensitivity: float, measure: Callable[[], np.ndarray],
                k: int, rng: np.random.Generator) -> NoisyTopK:
    """Charge ``charge``, measure the scores, add noise of sd σ × ``sensitivity`` and keep the top ``k``.

    Ties keep the candidates' order (a stable sort), so the choice is a fixed function of the noisy scores.
    """
    release = gaussian_release(ledger, charge, sensitivity, lambda: [np.asarray(measure(), dtype=float)], rng)
    noisy = release.values[0]
    order = np.argsort(-noisy, kind="stable")[:k]
    return NoisyTopK([int(i) for i in order], noisy, release.noise_std)
