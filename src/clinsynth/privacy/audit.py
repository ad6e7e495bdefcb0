"""Empirical privacy audit: a lower bound on ε from one training run.

The ledger gives an *upper* bound on ε from the mechanism's proof. An audit checks the other side:
if an attacker can tell which canary records were trained on better than ε-DP allows, the proof
or its implementation is wrong. We follow Steinke, Nasr & Jagielski, "Privacy Auditing with One (1)
Training Run" (NeurIPS 2023, arXiv:2305.08846), which needs a single model instead of hundreds:

* m canaries, each put into the training data independently with probability 1/2;
* the attacker scores every canary (higher = more likely trained on), guesses "in" for the k₊
  highest scores, "out" for the k₋ lowest and abstains on the rest: r = k₊ + k₋ guesses;
* their Theorem 3.1: if training is (ε, δ)-DP in each canary's inclusion, the number W of correct
  guesses satisfies, for every v,

      P[W ≥ v] ≤ β(v) + 2·m·δ·α(v),     β(v) = P[B ≥ v],
      α(v) = max_{1 ≤ i ≤ v} P[v − i ≤ B < v] / i,     B ~ Binomial(r, e^ε / (1 + e^ε)).

  With δ = 0 this is plain stochastic dominance by the Binomial, i.e. the guesses can be no more
  accurate than ε-randomised response. The right-hand side is a p-value for the claim "(ε, δ)-DP";
  the reported bound is the largest ε that the observed count rejects at the stated confidence.

r must be fixed before looking at the inclusion bits, so we try a small grid of r and pay for the
search with a Bonferroni correction: the reported confidence holds for the best of the grid.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from clinsynth.errors import ConfigError
from clinsynth.schema import ColumnSpec, Schema

#: Above this ε, e^ε/(1+e^ε) rounds to 1.0 in float64, so no finite count can reject it.
EPS_CAP = 40.0
#: Step of the scan that looks for the first ε a δ > 0 audit no longer rejects (see ``_first_crossing``).
DELTA_SCAN_STEP = 0.01
#: Distances computed per nearest-neighbour query chunk (canaries × synthetic records).
NN_CHUNK_ELEMENTS = 4_000_000
#: Fraction of the canaries guessed on, by default; each r is split evenly between the two tails.
DEFAULT_GUESS_FRACTIONS = (1 / 20, 1 / 10, 1 / 5, 1 / 2, 1)


@dataclass(frozen=True)
class AuditResult:
    """The audit's claim, "training is not (ε, δ)-DP for any ε < epsilon_lower", and its evidence."""

    epsilon_lower: float
    confidence: float
    guesses: int
    correct: int
    accuracy: float
    accuracy_interval: tuple[float, float]
    auroc: float
    n_canaries: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-plain fields, for reports and bundles."""
        out = asdict(self)
        out["accuracy_interval"] = [float(x) for x in self.accuracy_interval]
        return out

    def flags(self, claimed_epsilon: float) -> bool:
        """True when the audit refutes the claimed ε: a mechanism, an accountant or a bug leaks more."""
        if not claimed_epsilon >= 0:
            raise ConfigError(f"claimed_epsilon must be ≥ 0, got {claimed_epsilon}")
        return self.epsilon_lower > claimed_epsilon


# --- the bound ---------------------------------------------------------------------------
def p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """Theorem 3.1's bound on P[≥ v correct of r guesses] under (ε, δ)-DP, capped at 1."""
    q = special.expit(epsilon)
    beta = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    i = np.arange(1, v + 1)
    below = stats.binom.cdf(v - 1, r, q) - stats.binom.cdf(v - 1 - i, r, q)  # P[v − i ≤ B < v]
    alpha = float(np.max(below / i))
    return min(beta + 2 * m * delta * alpha, 1.0)


def _epsilon_for(m: int, r: int, v: int, delta: float, significance: float) -> float:
    """Largest ε the count v of r rejects at ``significance``; 0 when even ε = 0 stands."""
    if p_value(m, r, v, 0.0, delta) > significance:
        return 0.0
    # with δ = 0 the p-value is a Binomial tail, increasing in ε: bisection finds its one crossing
    eps_pure = _bisect(lambda e: p_value(m, r, v, e, 0.0) <= significance, 0.0)
    if delta == 0:
        return eps_pure
    return _first_crossing(lambda e: p_value(m, r, v, e, delta) <= significance, eps_pure)


def _bisect(rejects: Callable[[float], bool], lo: float, hi: float = EPS_CAP, tol: float = 1e-9) -> float:
    """The boundary of a test that rejects at ``lo`` and not at ``hi`` (``hi`` itself if it rejects)."""
    if rejects(hi):
        return hi
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rejects(mid) else (lo, mid)
    return lo


def _first_crossing(rejects: Callable[[float], bool], upper: float) -> float:
    """First ε at which a δ > 0 test stops rejecting, searched below the δ = 0 bound ``upper``.

    The δ term is not provably monotone in ε, and only the *first* crossing gives an honest bound
    (the test at the true ε must be the one that failed), so we scan up from 0 before bisecting.
    """
    lo = 0.0
    for eps in np.arange(DELTA_SCAN_STEP, upper, DELTA_SCAN_STEP):
        if not rejects(float(eps)):
            return _bisect(rejects, lo, float(eps))
        lo = float(eps)
    return _bisect(rejects, lo, upper)


def default_guess_counts(m: int) -> list[int]:
    """r ∈ {m/20, m/10, m/5, m/2, m}: few guesses suit a strong rare signal, many a weak broad one."""
    return sorted({min(m, max(2, round(f * m))) for f in DEFAULT_GUESS_FRACTIONS})


def _tie_safe_order(scores: np.ndarray) -> np.ndarray:
    """Indices by ascending score, ties broken by a fixed random permutation.

    Ties must not be broken by position: a caller who lists members first would leak the labels.
    """
    perm = np.random.default_rng(0).permutation(len(scores))
    return perm[np.argsort(scores[perm], kind="stable")]


def _count_correct(order: np.ndarray, included: np.ndarray, r: int) -> int:
    """Correct guesses when the top ⌈r/2⌉ are called members and the bottom ⌊r/2⌋ non-members."""
    k_in, k_out = r - r // 2, r // 2
    top = order[len(order) - k_in:]
    bottom = order[:k_out]
    return int(included[top].sum() + (~included[bottom]).sum())


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact two-sided binomial interval: a plain accuracy would hide how few guesses it rests on."""
    a = 1 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def auroc(scores: np.ndarray, included: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is absent."""
    n_in = int(included.sum())
    n_out = len(included) - n_in
    if n_in == 0 or n_out == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[included].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))


def _check_audit_inputs(scores: Any, included: Any, delta: float, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float)
    inc = np.asarray(included)
    if s.ndim != 1 or s.size == 0:
        raise ConfigError(f"scores must be a non-empty 1-D array (one per canary), got shape {s.shape}")
    if inc.shape != s.shape:
        raise ConfigError(f"included must have one flag per score: {inc.shape} flags for {s.shape} scores")
    if not np.isfinite(s).all():
        raise ConfigError(f"scores must be finite; {int((~np.isfinite(s)).sum())} are NaN or infinite")
    if inc.dtype != bool:
        if not np.isin(inc, (0, 1)).all():
            raise ConfigError("included must hold booleans (or 0/1): whether each canary was trained on")
        inc = inc.astype(bool)
    if not 0 <= delta < 1:
        raise ConfigError(f"delta must be in [0, 1), got {delta}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    return s, inc


def _check_guess_counts(guess_counts: Sequence[int] | None, m: int) -> list[int]:
    if guess_counts is None:
        return default_guess_counts(m)
    counts = sorted({int(r) for r in guess_counts})
    if not counts or any(int(r) != r for r in guess_counts) or counts[0] < 1 or counts[-1] > m:
        raise ConfigError(f"guess_counts must be whole numbers between 1 and the {m} canaries, got {list(guess_counts)}")
    return counts


def epsilon_lower_bound(scores: np.ndarray, included: np.ndarray, delta: float = 0.0, confidence: float = 0.95,
                        guess_counts: Sequence[int] | None = None) -> AuditResult:
    """Lower bound on ε, holding with probability ≥ ``confidence``, from canary attack scores.

    ``scores``: one per canary, higher = more likely trained on. ``included``: the coin flips.
    Each r in ``guess_counts`` is tested at (1 − confidence) / len(guess_counts) (Bonferroni), and
    the best bound is reported with its own guess count, accuracy and Clopper–Pearson interval.
    """
    s, inc = _check_audit_inputs(scores, included, delta, confidence)
    m = len(s)
    counts = _check_guess_counts(guess_counts, m)
    significance = (1 - confidence) / len(counts)
    order = _tie_safe_order(s)
    tried = []
    for r in counts:
        v = _count_correct(order, inc, r)
        tried.append((_epsilon_for(m, r, v, delta, significance), r, v))
    eps, r, v = max(tried)  # best bound; among equal bounds (e.g. none), the most guesses
    return AuditResult(epsilon_lower=float(eps), confidence=float(confidence), guesses=r, correct=v,
                       accuracy=v / r, accuracy_interval=clopper_pearson(v, r, confidence),
                       auroc=auroc(s, inc), n_canaries=m)


# --- canaries ----------------------------------------------------------------------------
def make_canaries(schema: Schema, m: int, rng: np.random.Generator) -> pd.DataFrame:
    """m records that obey ``schema`` but sit nowhere in particular in the joint distribution.

    Every field is drawn uniformly and independently over its declared domain (labels included),
    so a canary resembles no real patient: a model that reproduces one has memorised it. They are
    complete records (no missing values, no dropout) so that nothing about them is left to chance.
    """
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ConfigError(f"the number of canaries must be a whole number ≥ 1, got {m}")
    m = int(m)
    columns = {spec.name: _canary_column(spec, m, rng) for spec in schema.columns}
    return pd.DataFrame(columns, index=pd.RangeIndex(m))


def _canary_column(spec: ColumnSpec, m: int, rng: np.random.Generator) -> pd.Series:
    if spec.kind == "id":
        return _canary_ids(spec, m)
    if spec.kind in ("binary", "categorical"):
        return _canary_categories(spec, m, rng)
    if spec.kind == "datetime":
        return _canary_datetimes(spec, m, rng)
    return _canary_numbers(spec, m, rng)


def _canary_ids(spec: ColumnSpec, m: int) -> pd.Series:
    """"canary-000001"…; a numeric id column gets -1, -2, … so its dtype survives and no real id clashes."""
    if spec.dtype is not None and _is_numeric_dtype(spec.dtype):
        return _as_dtype(pd.Series(-np.arange(1, m + 1)), spec)
    return _as_dtype(pd.Series([f"canary-{i:06d}" for i in range(1, m + 1)]), spec)


def _canary_categories(spec: ColumnSpec, m: int, rng: np.random.Generator) -> pd.Series:
    cats = list(spec.categories or [])
    picks = rng.integers(0, len(cats), size=m)
    values = [cats[i] for i in picks]
    if spec.dtype == "category":
        return pd.Series(pd.Categorical(values, categories=cats))
    return _as_dtype(pd.Series(values, dtype=object), spec)


def _numeric_bounds(spec: ColumnSpec) -> tuple[float, float]:
    if spec.bounds is None:
        raise ConfigError(f"column '{spec.name}': canaries need its bounds; add \"bounds\": [low, high] to the schema")
    return float(spec.bounds[0]), float(spec.bounds[1])


def _canary_numbers(spec: ColumnSpec, m: int, rng: np.random.Generator) -> pd.Series:
    lo, hi = _numeric_bounds(spec)
    if spec.kind == "integer":
        a, b = math.ceil(lo), math.floor(hi)
        if a > b:
            raise ConfigError(f"column '{spec.name}': bounds [{lo}, {hi}] hold no whole number")
        x = rng.integers(a, b + 1, size=m).astype(float)
    else:
        x = rng.uniform(lo, hi, size=m)
        if spec.decimals is not None:
            x = np.clip(np.round(x, spec.decimals), lo, hi)
    return _as_dtype(pd.Series(x), spec)


def _canary_datetimes(spec: ColumnSpec, m: int, rng: np.random.Generator) -> pd.Series:
    if spec.bounds is None:
        raise ConfigError(f"column '{spec.name}': canaries need its bounds; add \"bounds\": [first, last] to the schema")
    lo, hi = pd.Timestamp(spec.bounds[0]), pd.Timestamp(spec.bounds[1])
    tz = lo.tz
    ns = rng.integers(lo.as_unit("ns").value, hi.as_unit("ns").value + 1, size=m)
    ts = pd.Series(pd.to_datetime(ns, unit="ns", utc=tz is not None))
    if tz is not None:
        ts = ts.dt.tz_convert(tz)
    if spec.decimals == 0:  # a column of whole days stays whole days
        ts = ts.dt.normalize().clip(lower=lo.normalize())
    if tz is None and spec.dtype and "," in spec.dtype:  # a zone-aware column: its bounds are wall-clock times
        from clinsynth.data.transforms import localize

        ts = pd.Series(localize(pd.DatetimeIndex(ts), spec.dtype))
    return _as_dtype(ts, spec)


def _is_numeric_dtype(dtype: str) -> bool:
    try:
        return pd.api.types.is_numeric_dtype(pd.api.types.pandas_dtype(dtype)) and dtype != "bool"
    except TypeError:
        return False


def _as_dtype(s: pd.Series, spec: ColumnSpec) -> pd.Series:
    """Cast to the real column's dtype, so concatenating canaries with real rows keeps it."""
    if spec.dtype is None:
        return s
    try:
        return s.astype(spec.dtype)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"column '{spec.name}': canary values cannot be held as its dtype {spec.dtype!r} ({e})") from None


# --- the experiment ----------------------------------------------------------------------
def run_audit(fit_and_score: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray], df: pd.DataFrame, schema: Schema,
              n_canaries: int = 200, delta: float = 0.0, confidence: float = 0.95, seed: int = 0) -> AuditResult:
    """One training run with canaries flipped in or out; returns the ε lower bound it supports.

    ``fit_and_score(training_frame, canaries)`` must train on ``training_frame`` (``df`` plus the
    included canaries, appended in canary order) and return one attack score per canary row,
    higher meaning "more likely trained on". Whatever it does, the bound stays honest as long as
    the scores depend on the inclusion coins only through the trained model.
    """
    if isinstance(n_canaries, bool) or int(n_canaries) != n_canaries or n_canaries < 20 or n_canaries % 2:
        raise ConfigError(f"n_canaries must be an even whole number ≥ 20, got {n_canaries}")
    n_canaries = int(n_canaries)
    if not 0 <= delta < 1:
        raise ConfigError(f"delta must be in [0, 1), got {delta}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    canaries = make_canaries(schema, n_canaries, rng)
    included = rng.random(n_canaries) < 0.5
    training = pd.concat([df, canaries[included]], ignore_index=True)
    schema.validate(training)
    scores = np.asarray(fit_and_score(training, canaries.copy()), dtype=float)
    if scores.shape != (n_canaries,):
        raise ConfigError(f"fit_and_score must return one score per canary ({n_canaries}), got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ConfigError(f"fit_and_score returned {int((~np.isfinite(scores)).sum())} non-finite score(s)")
    return epsilon_lower_bound(scores, included, delta=delta, confidence=confidence)


def distance_scores(model_encode: Callable[[pd.DataFrame], np.ndarray], synthetic: pd.DataFrame,
                    canaries: pd.DataFrame) -> np.ndarray:
    """Black-box attack: minus the distance from each canary to its nearest synthetic record.

    A generator that memorised a canary tends to emit something close to it; ``model_encode`` puts
    records in the model's own feature space, where distance means what the model thinks it means.
    """
    syn = _encoded(model_encode, synthetic, "synthetic")
    can = _encoded(model_encode, canaries, "canaries")
    if syn.shape[1] != can.shape[1]:
        raise ConfigError(f"model_encode gave {syn.shape[1]} features for synthetic records but {can.shape[1]} for canaries")
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1).fit(syn)
    chunk = max(1, NN_CHUNK_ELEMENTS // len(syn))
    dist = np.concatenate([nn.kneighbors(can[i:i + chunk], return_distance=True)[0][:, 0]
                           for i in range(0, len(can), chunk)])
    return -dist


def _encoded(model_encode: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame, what: str) -> np.ndarray:
    x = np.asarray(model_encode(frame), dtype=float)
    if x.ndim != 2 or x.shape[0] != len(frame) or x.shape[0] == 0:
        raise ConfigError(f"model_encode must return one row per record of {what} ({len(frame)}), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ConfigError(f"model_encode returned non-finite values for {what}")
    return x


def audit_model(make_model: Callable[[], Any], df: pd.DataFrame, schema: Schema, attack: str = "discriminator",
                n_canaries: int = 200, delta: float = 0.0, confidence: float = 0.95, seed: int = 0) -> AuditResult:
    """Audit a clinsynth model: ``make_model()`` gives a fresh, unfitted model (e.g.
    ``lambda: clinsynth.create("dp-acgan", epsilon=1)``); the attack is white-box
    (``"discriminator"``: the model's ``membership_scores``) or black-box (``"distance"``: to the
    nearest of as many synthetic records as training records).

    Example
    -------
    >>> result = audit_model(lambda: clinsynth.create("dp-acgan", epsilon=1), df, schema)  # doctest: +SKIP
    >>> result.flags(1.0)                                                                  # doctest: +SKIP
    False
    """
    if attack not in ("discriminator", "distance"):
        raise ConfigError(f"attack must be 'discriminator' or 'distance', got {attack!r}")

    def fit_and_score(training: pd.DataFrame, canaries: pd.DataFrame) -> np.ndarray:
        model = make_model().fit(training, schema)
        if attack == "discriminator":
            return model.membership_scores(canaries)
        synthetic = model.sample(len(training), seed=seed)
        return distance_scores(lambda f: model.encoder_.encode(model._conform(f)), synthetic, canaries)

    return run_audit(fit_and_score, df, schema, n_canaries=n_canaries, delta=delta, confidence=confidence, seed=seed)
