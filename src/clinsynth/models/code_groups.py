"""Patient groups for the code tree: a Bernoulli mixture over who has which codes, and the counts
a code needs to take the group as a second parent.

Why: a tree gives every code one parent, so a bundle of codes that go together (a syndrome, a
care pathway) is a chain, and the chain forgets: the bundle's fourth code barely knows about its
first. A latent patient group that every code of a bundle can depend on holds the whole bundle at
once (the mixture's components are the bundles), as medGAN's latent space does, but with counts.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import kmeans_plusplus

#: a component's code probabilities stay inside [ε, 1 − ε] so logs stay finite
_EPS = 1e-4
#: patients used to seed the components (k-means++ over a subsample: its cost grows with n × k)
_SEED_PATIENTS = 20_000


def bernoulli_mixture_groups(present: sp.csr_array, groups: int, seed: int, restarts: int = 4,
                             iterations: int = 40, tol: float = 1e-5) -> np.ndarray:
    """Each patient's most likely component (0 … k − 1, k ≤ ``groups``) of a ``groups``-component
    mixture of independent Bernoulli codes, fitted by EM on the sparse presence matrix.

    Components seeded by k-means++, ``restarts`` times, each start fitted on at most 20,000
    patients and the one of highest likelihood refined on all (one start merged two of six planted
    bundles in three tries out of three; four starts on all of 100,000 × 5,000 took 10 s);
    the log-likelihood of a patient under a component is ``x · (log μ − log(1 − μ)) + Σ log(1 − μ)``,
    one sparse product per step, so 100,000 patients × 5,000 codes take seconds. Components no
    patient ends in are dropped and the rest renumbered, so every group has patients."""
    x = sp.csr_array(present, dtype=np.float64, copy=True)
    x.data[:] = 1.0
    n = x.shape[0]
    groups = int(min(groups, n))
    if groups <= 1 or x.shape[1] == 0:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    seed_rows = rng.choice(n, size=_SEED_PATIENTS, replace=False) if n > _SEED_PATIENTS else np.arange(n)
    prevalence = np.asarray(x.mean(axis=0)).ravel()
    subsample = x[seed_rows]
    best, best_likelihood = None, -np.inf
    for _ in range(restarts):
        centres, _ = kmeans_plusplus(subsample, groups, random_state=int(rng.integers(2**31 - 1)))
        mu = np.clip(np.asarray(centres, dtype=np.float64) * 0.8 + 0.2 * prevalence, _EPS, 1 - _EPS)
        fitted = _em(subsample, mu, iterations, tol)
        if fitted[2] > best_likelihood:
            best, best_likelihood = fitted, fitted[2]
    log_p = best[0] if seed_rows.size == n else _em(x, best[1], iterations, tol)[0]
    labels = np.asarray(log_p.argmax(axis=1)).ravel()
    _, relabelled = np.unique(labels, return_inverse=True)
    return relabelled.astype(np.int64)


def _em(x: sp.csr_array, mu: np.ndarray, iterations: int, tol: float) -> tuple[np.ndarray, np.ndarray, float]:
    """EM from component code probabilities ``mu`` (k × V): (each patient's log-joint per
    component, the components' code probabilities, mean log-likelihood per patient) at the end."""
    n, k = x.shape[0], mu.shape[0]
    weights = np.full(k, 1.0 / k)
    previous = -np.inf
    for _ in range(iterations):
        log_p = x @ (np.log(mu) - np.log1p(-mu)).T + np.log1p(-mu).sum(axis=1) + np.log(weights)
        top = log_p.max(axis=1, keepdims=True)
        resp = np.exp(log_p - top)
        total = resp.sum(axis=1, keepdims=True)
        likelihood = float((np.log(total) + top).mean())
        if likelihood - previous < tol * abs(likelihood):
            break
        previous = likelihood
        resp /= total
        mass = resp.sum(axis=0)
        weights = np.clip(mass / n, 1e-12, None)
        mu = np.clip((x.T @ resp).T / np.clip(mass, 1e-12, None)[:, None], _EPS, 1 - _EPS)
    return log_p, mu, likelihood


def group_counts(code: np.ndarray, state: np.ndarray, group: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Patients per code × parent state × group × (code absent, present): (V, S, K, 2).

    One entry per patient having a code: its ``code``, the patient's ``state`` of that code's
    parent (0 for a code without one) and ``group``; ``base`` (V, S, K) holds all patients per
    parent state and group. Only the patients having each code are walked, so sparse stays cheap."""
    with_code = np.zeros(base.shape)
    np.add.at(with_code, (code, state, group), 1.0)
    return np.stack([np.clip(base - with_code, 0.0, None), with_code], axis=-1)


def conditional_information(tables: np.ndarray) -> np.ndarray:
    """I(code; group | parent) in nats for each code's (S, K, 2) table of counts in ``tables`` (V, S, K, 2)."""
    t = np.clip(np.asarray(tables, dtype=np.float64), 0.0, None)
    n = t.sum(axis=(1, 2, 3))
    by_state = t.sum(axis=(2, 3), keepdims=True)
    by_group = t.sum(axis=3, keepdims=True)
    by_code = t.sum(axis=2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(t > 0, t * np.log(t * by_state / (by_group * by_code)), 0.0)
    return terms.sum(axis=(1, 2, 3)) / np.where(n > 0, n, 1.0)
