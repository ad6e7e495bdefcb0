"""Bootstrap confidence intervals for holdout scores, without refitting or re-predicting.

The predictions stay fixed and are re-scored on resampled holdout rows. A resample with
replacement is the holdout with integer weights (how often each row was drawn), and AUROC,
average precision and accuracy of a weighted sample equal those of the repeated rows, so all
resamples are scored at once, as rows of a weight matrix, rather than one at a time.
"""
from __future__ import annotations

import warnings

import numpy as np

Interval = tuple[float, float]


def bootstrap_counts(n: int, n_resamples: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """``(n_resamples, n)`` draw counts: row i of resample b was drawn ``counts[b, i]`` times."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    flat = (idx + (np.arange(n_resamples) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)


def _bootstrap_chunks(y: np.ndarray, n_resamples: int, seed: int, cells: int = 2_500_000):
    """``bootstrap_counts`` in blocks of resamples (memory stays near ``cells`` numbers whatever the
    holdout size), without the resamples that hold a single class of ``y``."""
    rng = np.random.default_rng(seed)
    per_block = max(1, min(n_resamples, cells // max(len(y), 1)))
    classes = np.unique(y)
    for start in range(0, n_resamples, per_block):
        counts = bootstrap_counts(len(y), min(per_block, n_resamples - start), rng)
        present = np.vstack([counts[:, y == c].sum(1) > 0 for c in classes])
        yield counts[present.sum(0) >= 2]


def _grouped(score: np.ndarray, positive: np.ndarray, weights: np.ndarray, descending: bool):
    """Positive and negative weight per distinct score value, in score order: (B, groups) each."""
    order = np.argsort(-score if descending else score, kind="mergesort")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    pos = positive[order]
    return np.add.reduceat(w * pos, starts, axis=1), np.add.reduceat(w * ~pos, starts, axis=1)


def weighted_auroc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Binary AUROC (ties count half) for each row of ``weights``; NaN where a class has no weight."""
    weights = np.atleast_2d(weights)
    pos_w, neg_w = _grouped(score, positive.astype(bool), weights, descending=False)
    below = np.cumsum(neg_w, axis=1) - neg_w
    w1, w0 = pos_w.sum(1), neg_w.sum(1)
    ok = (w1 > 0) & (w0 > 0)
    num = (pos_w * (below + 0.5 * neg_w)).sum(1)
    return np.where(ok, num / np.where(ok, w1 * w0, 1.0), np.nan)


def weighted_average_precision(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (sklearn's step-wise sum, no interpolation) for each row of ``weights``."""
    weights = np.atleast_2d(weights)
    pos_w, neg_w = _grouped(score, positive.astype(bool), weights, descending=True)
    tp, fp = np.cumsum(pos_w, axis=1), np.cumsum(neg_w, axis=1)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    w1, w0 = pos_w.sum(1), neg_w.sum(1)
    ok = (w1 > 0) & (w0 > 0)
    return np.where(ok, (pos_w * precision).sum(1) / np.where(ok, w1, 1.0), np.nan)


def _metric_draws(metric: str, y: np.ndarray, full: np.ndarray, correct: np.ndarray, labels: list[str],
                  weights: np.ndarray) -> np.ndarray:
    """One metric on each weighted resample: binary on the positive class, else the macro mean over
    the classes present (with both members and non-members) in that resample."""
    if metric == "accuracy":
        return weights @ correct.astype(float) / weights.sum(1)
    fn = weighted_auroc if metric == "auroc" else weighted_average_precision
    if len(labels) == 2:
        return fn(y == labels[1], full[:, 1], weights)
    per_class = np.vstack([fn(y == c, full[:, j], weights) for j, c in enumerate(labels)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no class is scorable
        return np.nanmean(per_class, axis=0)


def _interval(draws: np.ndarray, level: float) -> Interval | None:
    draws = draws[np.isfinite(draws)]
    if draws.size < 10:
        return None
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))
