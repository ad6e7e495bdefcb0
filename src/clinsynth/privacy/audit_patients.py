"""The one-run privacy audit at patient level: canary *patients*, each with several visits.

:mod:`clinsynth.privacy.audit` audits a per-record guarantee with canary records. A model of
patients (``dp-visitchain``) promises more: neighbouring tables differ by *all the rows of one
patient*. So the canary here is a whole patient, and the coin decides for all of its visits at
once. The bound is the same theorem (Steinke, Nasr & Jagielski 2023, Theorem 3.1, through
:func:`~clinsynth.privacy.audit.epsilon_lower_bound`), read per patient:

* ``make_canary_patients`` builds m patients from the long schema: per-patient columns drawn
  uniformly over their declared domain and held on every visit, 3–6 visits each (by default) at
  distinct times drawn uniformly within the time column's bounds, every visit column drawn
  uniformly and independently per visit (no missing values). A canary resembles no real patient
  and no other canary: its visits jump across the whole range of every lab, transitions a real
  patient rarely makes;
* each canary patient goes into the training table with probability ½, all its visits together;
* the model is fitted once and every canary is scored; the audit reports the ε the scores refute.

The attack (``attack=``):

* ``"likelihood"`` (white-box, the default): the fitted model's ``membership_scores`` — for the
  visit chain, the log-likelihood of the canary's visits under its released transition tables
  (:meth:`~clinsynth.models.visitchain.VisitChain.membership_scores`). The tables are in the model
  bundle, which is released, so this is an attacker the guarantee must hold against. A trained-on
  canary put weight on its own, otherwise rare, cells; without noise that shows plainly;
* ``"distance"`` (black-box): minus the distance from the canary's patient-level summary (number
  of visits, first-visit time, span, per-patient columns, first and last value and mean of each
  visit column) to the nearest of as many synthetic patients as training patients, after scaling
  each feature by the real patients' spread. Weaker against a counting model, which never copies
  a patient.

The bound is honest for any attack, as long as the scores depend on the coins only through the
fitted model.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from clinsynth.errors import ConfigError
from clinsynth.privacy.audit import AuditResult, _canary_column, _canary_ids, distance_scores, epsilon_lower_bound
from clinsynth.schema import ColumnSpec, Schema

#: visits per canary patient, inclusive: several, so a canary is a patient and not a row
DEFAULT_VISITS = (3, 6)


def _check_long(schema: Schema) -> None:
    if getattr(schema, "patient", None) is None or getattr(schema, "time", None) is None:
        raise ConfigError("canary patients need a long-format schema that names its patient and time columns "
                          "(Schema.infer(df, patient='id', time='day')); for one row per record use "
                          "clinsynth.privacy.audit")


def _check_visits(visits: tuple[int, int]) -> tuple[int, int]:
    ok = (isinstance(visits, (tuple, list)) and len(visits) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in visits)
          and 1 <= visits[0] <= visits[1])
    if not ok:
        raise ConfigError(f"visits must be (fewest, most) visits per canary patient, whole numbers with "
                          f"1 ≤ fewest ≤ most, got {visits!r}")
    return int(visits[0]), int(visits[1])


def make_canary_patients(schema: Schema, m: int, rng: np.random.Generator,
                         visits: tuple[int, int] = DEFAULT_VISITS) -> pd.DataFrame:
    """m canary patients in the long format of ``schema``: one row per visit, rows of a patient
    together and in time order, new ids that clash with no real one (see the module docstring)."""
    _check_long(schema)
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ConfigError(f"the number of canary patients must be a whole number ≥ 1, got {m}")
    m = int(m)
    lo, hi = _check_visits(visits)
    count = rng.integers(lo, hi + 1, size=m)
    owner = np.repeat(np.arange(m), count)
    rows = len(owner)
    columns: dict[str, Any] = {}
    for spec in schema.columns:
        if spec.name == schema.patient:
            columns[spec.name] = _canary_ids(spec, m).iloc[owner].reset_index(drop=True)
        elif spec.name == schema.time:
            columns[spec.name] = _canary_times(spec, count, rng)
        elif spec.level == "patient":
            columns[spec.name] = _canary_column(spec, m, rng).iloc[owner].reset_index(drop=True)
        else:
            columns[spec.name] = _canary_column(spec, rows, rng)
    return pd.DataFrame(columns, index=pd.RangeIndex(rows))


def _canary_times(spec: ColumnSpec, count: np.ndarray, rng: np.random.Generator) -> pd.Series:
    """Per patient, ``count`` distinct times drawn uniformly within the column's bounds, in order."""
    if spec.bounds is None:
        raise ConfigError(f"time column '{spec.name}': canary patients need its bounds; add \"bounds\": "
                          "[first, last] to the schema")
    if spec.kind == "datetime":
        first, last = pd.Timestamp(spec.bounds[0]), pd.Timestamp(spec.bounds[1])
        daily = spec.decimals == 0
        unit = 86_400 * 10**9 if daily else 10**9  # whole days, or whole seconds
        start = (first.normalize() if daily else first).as_unit("ns")
        steps = _distinct_sorted(int((last.as_unit("ns").value - start.value) // unit), count, rng)
        stamps = pd.Series(start + pd.to_timedelta(steps * unit, unit="ns"))
        if first.tz is None and spec.dtype and "," in spec.dtype:  # a zone-aware column: bounds are wall-clock
            from clinsynth.data.transforms import localize

            stamps = pd.Series(localize(pd.DatetimeIndex(stamps), spec.dtype))
        return _as_time_dtype(stamps, spec)
    a, b = float(spec.bounds[0]), float(spec.bounds[1])
    if spec.kind == "integer" or spec.decimals is not None:
        step = 1.0 if spec.kind == "integer" else 10.0 ** -spec.decimals
        base = math.ceil(a / step - 1e-9)
        steps = _distinct_sorted(int(math.floor(b / step + 1e-9)) - base, count, rng)
        values = np.round((base + steps) * step, 0 if spec.kind == "integer" else spec.decimals)
    else:
        values = np.concatenate([np.sort(rng.uniform(a, b, size=k)) for k in count])
    return _as_time_dtype(pd.Series(values), spec)


def _distinct_sorted(top: int, count: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per patient, ``count`` distinct whole numbers in [0, top], sorted; concatenated."""
    if top + 1 < int(count.max()):
        raise ConfigError(f"the time column's bounds hold only {top + 1} distinct times, fewer than the "
                          f"{int(count.max())} visits of a canary patient; give fewer visits")
    return np.concatenate([np.sort(rng.choice(top + 1, size=int(k), replace=False)) for k in count]).astype(np.int64)


def _as_time_dtype(s: pd.Series, spec: ColumnSpec) -> pd.Series:
    if spec.dtype is None:
        return s
    try:
        return s.astype(spec.dtype)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"time column '{spec.name}': canary times cannot be held as its dtype {spec.dtype!r} "
                          f"({e})") from None


# --- the experiment ----------------------------------------------------------------------
def run_patient_audit(fit_and_score: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray], df: pd.DataFrame,
                      schema: Schema, n_canaries: int = 200, visits: tuple[int, int] = DEFAULT_VISITS,
                      delta: float = 0.0, confidence: float = 0.95, seed: int = 0) -> AuditResult:
    """One training run with canary patients flipped in or out (all of each one's visits); the ε
    lower bound it supports, per patient.

    ``fit_and_score(training_frame, canaries)`` must train on ``training_frame`` (``df`` plus the
    included canary patients' rows) and return one score per canary patient, in the order their
    ids first appear in ``canaries``, higher meaning "more likely trained on".
    """
    _check_long(schema)
    if isinstance(n_canaries, bool) or int(n_canaries) != n_canaries or n_canaries < 20 or n_canaries % 2:
        raise ConfigError(f"n_canaries must be an even whole number ≥ 20, got {n_canaries}")
    if not 0 <= delta < 1:
        raise ConfigError(f"delta must be in [0, 1), got {delta}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    n_canaries = int(n_canaries)
    rng = np.random.default_rng(seed)
    canaries = make_canary_patients(schema, n_canaries, rng, visits)
    included = rng.random(n_canaries) < 0.5
    ids = pd.unique(canaries[schema.patient])
    chosen = canaries[canaries[schema.patient].isin(ids[included])]
    training = pd.concat([df, chosen], ignore_index=True)
    schema.validate(training)
    scores = np.asarray(fit_and_score(training, canaries.copy()), dtype=float)
    if scores.shape != (n_canaries,):
        raise ConfigError(f"fit_and_score must return one score per canary patient ({n_canaries}), got shape "
                          f"{scores.shape}")
    if not np.isfinite(scores).all():
        raise ConfigError(f"fit_and_score returned {int((~np.isfinite(scores)).sum())} non-finite score(s)")
    return epsilon_lower_bound(scores, included, delta=delta, confidence=confidence)


def patient_summaries(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """One numeric row per patient (in order of first appearance): visits, first time, span, the
    per-patient columns and, per visit column, its first and last value and its mean — the
    black-box attack's view of a patient. Categories become their code; missing becomes -1."""
    from clinsynth.data.transforms import numeric_values

    data = df.copy()
    time = schema.column(schema.time)
    data["__t"] = numeric_values(data[schema.time], time.kind)
    for spec in schema.columns:
        if spec.name in (schema.patient, schema.time) or spec.kind == "id":
            continue
        if spec.kind in ("binary", "categorical"):
            cats = list(spec.categories or [])
            data[spec.name] = pd.Series(pd.Categorical(data[spec.name], categories=cats).codes, index=data.index)
        else:
            data[spec.name] = numeric_values(data[spec.name], spec.kind)
    data = data.sort_values([schema.patient, "__t"], kind="stable")
    g = data.groupby(schema.patient, sort=False)
    out = {"visits": g.size(), "first": g["__t"].first(), "span": g["__t"].last() - g["__t"].first()}
    for spec in schema.columns:
        if spec.name in (schema.patient, schema.time) or spec.kind == "id":
            continue
        if spec.level == "patient":
            out[spec.name] = g[spec.name].first()
        else:
            out[f"{spec.name}:first"] = g[spec.name].first()
            out[f"{spec.name}:last"] = g[spec.name].last()
            out[f"{spec.name}:mean"] = g[spec.name].mean()
    frame = pd.DataFrame(out).astype(float).fillna(-1.0)
    return frame.loc[pd.unique(df[schema.patient])]


def audit_patients(make_model: Callable[[], Any], df: pd.DataFrame, schema: Schema, attack: str = "likelihood",
                   n_canaries: int = 200, visits: tuple[int, int] = DEFAULT_VISITS, delta: float = 0.0,
                   confidence: float = 0.95, seed: int = 0) -> AuditResult:
    """Audit a model of patients per patient: ``make_model()`` gives a fresh, unfitted model (e.g.
    ``lambda: clinsynth.create("dp-visitchain", epsilon=1)``); ``df`` is the long table and
    ``schema`` its long schema; ``attack`` is ``"likelihood"`` (the model's ``membership_scores``)
    or ``"distance"`` (nearest synthetic patient; see the module docstring).

    Example
    -------
    >>> result = audit_patients(lambda: clinsynth.create("dp-visitchain", epsilon=1), df, schema)  # doctest: +SKIP
    >>> result.flags(1.0)                                                                          # doctest: +SKIP
    False
    """
    if attack not in ("likelihood", "distance"):
        raise ConfigError(f"attack must be 'likelihood' or 'distance', got {attack!r}")

    def fit_and_score(training: pd.DataFrame, canaries: pd.DataFrame) -> np.ndarray:
        model = make_model().fit(training, schema)
        if attack == "likelihood":
            if not hasattr(model, "membership_scores"):
                raise ConfigError(f"{model.name} exposes no membership_scores: use attack='distance'")
            return model.membership_scores(canaries)
        synthetic = model.sample(int(training[schema.patient].nunique()), seed=seed)
        real = patient_summaries(df, schema)
        scale = real.std().replace(0.0, 1.0).fillna(1.0)

        def encode(frame: pd.DataFrame) -> np.ndarray:
            summary = patient_summaries(frame, schema).reindex(columns=real.columns, fill_value=-1.0)
            return (summary / scale).to_numpy()

        return distance_scores(lambda f: f, encode(synthetic), encode(canaries))

    return run_patient_audit(fit_and_score, df, schema, n_canaries=n_canaries, visits=visits, delta=delta,
                             confidence=confidence, seed=seed)
