"""DP estimates of what the table encoder needs: numeric bounds and scalings, category lists.

In DP mode the encoder may rely only on what the schema declares public or on DP estimates;
an inferred schema's bounds and categories were read from the data and would leak (a maximum *is*
one participant's value). This module releases the estimates with ONE Gaussian mechanism: a set
of noisy histograms, one per *query*. The caller charges it to the privacy ledger.

What is public
--------------
* The schema's **structure** — column names, kinds, missing policies, dtypes, decimals, target,
  longitudinal groups — is metadata the data steward reviews and approves before release; it is
  treated as public. Its **values** (``bounds``, ``categories``) are public only where the column
  says ``public: true``; everything else is re-estimated here.
* **Flag domains** are public by rule: a column whose schema categories are a subset of one of
  :data:`FLAG_DOMAINS` (same Python type: ``{0, 1}``, ``{False, True}``, ``{"0", "1"}``,
  ``{0.0, 1.0}``) is a flag, and its *whole* flag domain is released without thresholding — a
  data-independent list. Only observed values outside the domain go through the threshold.

The mechanism (neighbours differ by adding or removing one record)
------------------------------------------------------------------
* A query is one scalar column, or the columns of one longitudinal group pooled (they share
  bounds). A record adds weight ``1/k`` per observed value, ``k`` the number of columns in the
  query, so its total contribution — and the L2 norm of its change to the histogram — is ≤ 1.
  The whole release has L2 sensitivity ≤ ``sqrt(n_queries)``; the caller passes
  ``noise_std = noise_multiplier * sqrt(n_queries + extra)`` and charges a Gaussian mechanism
  with that ``noise_multiplier`` (``sample_rate = 1``, ``steps = 1``).
* Numeric queries count values on a **public grid** (buckets of 0.1 in ``asinh(x / 1e-3)``;
  30-day buckets for dates) and add N(0, ``noise_std²``) to every bucket, empty ones included.
  Everything after is post-processing: the *bulk* is the buckets whose noisy count clears
  :func:`bulk_threshold`; released bounds are its range widened by half its width each side,
  loc/scale and the quantile knots come from the bulk's noisy counts.
* Categorical queries count the *observed* values (the candidate list depends on the data) and
  keep a non-flag value only if its noisy count exceeds
  ``τ = 1 + noise_std · Φ⁻¹(1 − threshold_delta / c)``, ``c`` = the number of columns in
  categorical queries (fixed by the schema). A value that one record alone holds has count ≤ 1,
  so it is released with probability ≤ ``threshold_delta / c``, and one record brings at most
  ``c`` such values: thresholding adds ``threshold_delta`` to the mechanism's δ, which the
  caller also charges. Noisy counts of values not kept are never released.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtri

from clinsynth.data.transforms import datetime_days, numeric_bounds, numeric_values
from clinsynth.errors import ConfigError, InputError
from clinsynth.schema import DISCRETE_KINDS, NUMERIC_KINDS, Category, ColumnSpec, Schema, parse_datetimes, wall_clock

#: Public candidate categories of flag columns; a schema whose list fits one releases all of it.
FLAG_DOMAINS: tuple[tuple[Category, ...], ...] = ((0, 1), (False, True), ("0", "1"), (0.0, 1.0))

_ASINH_UNIT = 1e-3        # t = asinh(x / unit): ~linear below 1e-3, ~log (10 %/bucket) above
_ASINH_STEP = 0.1
_ASINH_HALF_SPAN = 300    # buckets each side of 0: t in [-30, 30], |x| up to ~5e9
_DAY_NS = 86_400 * 10**9
_DATE_STEP_DAYS = 30
_DATE_SPAN = ("1800-01-01", "2200-01-01")
_BULK_SIGMAS = 4.0        # a bucket is "bulk" when its noisy count clears ≥ 4 noise sds …
_BULK_FALSE_ALARM = 1e-4  # … and so many that a pure-noise bucket anywhere on the grid clears it this rarely
_WIDEN = 0.5              # released bounds: bulk range widened by half its width on each side
_P_EPS = 1e-6             # as NumericCodec: normal scores stay within ±4.75
_PUBLIC_PROBS = (0.02, 0.98)


@dataclass(frozen=True)
class StatisticsPlan:
    """The queries a DP release needs, fixed by the schema alone (so their number can be charged)."""

    numeric: list[list[str]]
    categorical: list[list[str]]

    @property
    def n_queries(self) -> int:
        return len(self.numeric) + len(self.categorical)


@dataclass
class DPRelease:
    """What the mechanism released, ready for the encoder (``schema``, ``numeric``) and the report."""

    schema: Schema                      # the input schema with the DP bounds/categories written in
    numeric: dict[str, dict[str, Any]]  # per numeric column: NumericCodec state, loc/scale and knots/scores
    fallback: dict[str, Any]            # per DP-released categorical column: where unknown values go
    threshold: float                    # τ for categories (0.0 when there was no categorical query)
    threshold_delta: float              # δ the thresholding adds (0.0 when nothing could be thresholded)
    noisy_counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # per query, JSON-plain


# ---------------------------------------------------------------------------------------
def _needs_numeric(spec: ColumnSpec) -> bool:
    return spec.kind in NUMERIC_KINDS and not (spec.public and spec.bounds is not None)


def _needs_categories(spec: ColumnSpec) -> bool:
    return spec.kind in DISCRETE_KINDS and not spec.public


def plan_statistics(schema: Schema) -> StatisticsPlan:
    """The queries for every non-public model column; a longitudinal group's columns pool into one."""
    group_of = {c: g.name for g in schema.longitudinal for c in g.columns}
    numeric: list[list[str]] = []
    categorical: list[list[str]] = []
    pooled: dict[tuple[str, bool], list[str]] = {}
    for spec in schema.model_columns:
        if _needs_numeric(spec):
            queries, is_numeric = numeric, True
        elif _needs_categories(spec):
            queries, is_numeric = categorical, False
        else:
            continue
        group = group_of.get(spec.name)
        if group is None:
            queries.append([spec.name])
            continue
        key = (group, is_numeric)
        if key not in pooled:
            pooled[key] = []
            queries.append(pooled[key])
        pooled[key].append(spec.name)
    return StatisticsPlan(numeric=numeric, categorical=categorical)


def category_threshold(noise_std: float, threshold_delta: float, n_columns: int) -> float:
    """τ such that a value one record alone holds clears it with probability ≤ δ / ``n_columns``."""
    return 1.0 + noise_std * float(-ndtri(threshold_delta / n_columns))


# -- numeric queries ----------------------------------------------------------------------
def _iso_day(days: float) -> str:
    return pd.Timestamp(int(days) * _DAY_NS, unit="ns").isoformat()


def grid_edges(kind: str) -> np.ndarray:
    """The public bucket edges (x space; days since 1970 for dates), strictly increasing."""
    if kind == "datetime":
        lo, hi = (datetime_days(d) for d in _DATE_SPAN)
        n = math.ceil((hi - lo) / _DATE_STEP_DAYS)
        return lo + _DATE_STEP_DAYS * np.arange(n + 1, dtype=float)
    # integer steps keep the t = 0 edge exactly 0, so non-negative data never spills below 0
    t = np.arange(-_ASINH_HALF_SPAN, _ASINH_HALF_SPAN + 1) * _ASINH_STEP
    return _ASINH_UNIT * np.sinh(t)


def bulk_threshold(noise_std: float, n_buckets: int) -> float:
    """The noisy count a bucket must exceed to be bulk: ≥ 4 sds, and high enough that the
    largest of ``n_buckets`` pure-noise counts clears it with probability ≤ 1e-4 (5.1 sds on the
    600-bucket number grid); else one stray bucket in ~60 would stretch bounds to absurd values."""
    return noise_std * max(_BULK_SIGMAS, float(-ndtri(_BULK_FALSE_ALARM / n_buckets)))


def _bucket(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bucket index per value (``edges[i] <= x < edges[i + 1]``); values off the grid go to its ends."""
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)


def _histogram(df: pd.DataFrame, specs: list[ColumnSpec], edges: np.ndarray) -> np.ndarray:
    """Exact weighted counts: each record adds 1/k per observed value of the k query columns."""
    counts = np.zeros(edges.size - 1)
    for spec in specs:
        x = numeric_values(df[spec.name], spec.kind)  # the encoder's own reading (dates as days)
        x = x[~np.isnan(x)]
        counts += np.bincount(_bucket(edges, x), minlength=counts.size)
    return counts / len(specs)


def _widen(a: float, b: float, spec: ColumnSpec) -> tuple[float, float]:
    """Bounds from the bulk range [a, b]: wider by half its width each side, never across 0
    for one-signed data (lab values stay non-negative), rounded outward to the column's precision."""
    pad = _WIDEN * (b - a)
    lo, hi = a - pad, b + pad
    if spec.kind == "datetime":  # whole days, kept on the grid (pandas cannot hold dates before 1677)
        edges = grid_edges("datetime")
        return float(max(math.floor(lo), edges[0])), float(min(math.ceil(hi), edges[-1]))
    if a >= 0:
        lo = max(lo, 0.0)
    if b <= 0:
        hi = min(hi, 0.0)
    digits = 0 if spec.kind == "integer" else spec.decimals
    if digits is not None:
        unit = 10.0 ** -digits
        lo, hi = math.floor(round(lo / unit, 9)) * unit, math.ceil(round(hi / unit, 9)) * unit
    return float(lo), float(hi)


def _location_scale(mids: np.ndarray, weights: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """Weighted mean and sd of bucket midpoints; a degenerate sd falls back to a quarter of the bounds."""
    loc = float(np.average(mids, weights=weights))
    scale = float(np.sqrt(np.average((mids - loc) ** 2, weights=weights)))
    if not scale > 1e-12:
        scale = (hi - lo) / 4 if hi > lo else 1.0
    return loc, scale


def _quantile_table(edges: np.ndarray, mass: np.ndarray) -> tuple[list[float], list[float]]:
    """NumericCodec's quantile state from a histogram: strictly increasing knots and normal scores.

    Flat stretches of the CDF (buckets with no mass) keep their first edge, except the last
    point, which keeps the range's right edge; scores must increase strictly for the inverse.
    """
    cum = np.concatenate([[0.0], np.cumsum(mass)]) / mass.sum()
    probs = np.clip(cum, _P_EPS, 1 - _P_EPS)
    _, keep = np.unique(probs, return_index=True)
    keep[-1] = probs.size - 1
    return edges[keep].tolist(), ndtri(probs[keep]).tolist()


def _public_numeric_state(spec: ColumnSpec) -> dict[str, Any]:
    """Encoder state from declared bounds alone: a normal spread over them (±2 sd at the bounds)."""
    lo, hi = numeric_bounds(spec)
    scale = (hi - lo) / 4 if hi > lo else 1.0
    return {"loc": (lo + hi) / 2, "scale": scale, "knots": [lo, hi], "scores": ndtri(_PUBLIC_PROBS).tolist()}


def _numeric_query(df: pd.DataFrame, specs: list[ColumnSpec], noise_std: float,
                   rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """One noisy histogram and what it yields: per-column bounds and the shared encoder state.

    Returns (result, report), or None when no bucket clears the noise (too few records).
    """
    kind = "datetime" if specs[0].kind == "datetime" else "number"
    edges = grid_edges(specs[0].kind)
    noisy = _histogram(df, specs, edges) + rng.normal(0.0, noise_std, edges.size - 1)
    cut = bulk_threshold(noise_std, edges.size - 1)
    kept = np.flatnonzero(noisy > cut)
    if kept.size == 0:
        return None
    first, last = int(kept[0]), int(kept[-1])
    a, b = float(edges[first]), float(edges[last + 1])
    bounds = {s.name: _widen(a, b, s) for s in specs}
    lo, hi = bounds[specs[0].name]
    mids = (edges[kept] + edges[kept + 1]) / 2
    loc, scale = _location_scale(mids, noisy[kept], lo, hi)
    # buckets below the cut are mostly noise: as mass they would smear the CDF over empty gaps
    mass = np.where(noisy > cut, noisy, 0.0)[first:last + 1]
    knots, scores = _quantile_table(edges[first:last + 2], mass)
    state = {"loc": loc, "scale": scale, "knots": knots, "scores": scores}
    report = {"kind": kind, "columns": [s.name for s in specs], "edges": edges[first:last + 2].tolist(),
              "counts": noisy[first:last + 1].tolist(), "keep_above": cut}
    if kind == "datetime":
        report["unit"] = "days since 1970-01-01"
    return {"bounds": bounds, "state": state}, report


def _bounds_for_spec(spec: ColumnSpec, bounds: tuple[float, float]) -> tuple[float, float] | tuple[str, str]:
    if spec.kind == "datetime":
        return _iso_day(bounds[0]), _iso_day(bounds[1])
    return bounds


# -- categorical queries ------------------------------------------------------------------
def flag_domain(categories: list[Category] | None) -> tuple[Category, ...] | None:
    """The flag domain a category list fits (same Python type, subset), or None."""
    if not categories:
        return None
    for domain in FLAG_DOMAINS:
        kind = type(domain[0])
        if all(type(c) is kind for c in categories) and set(categories) <= set(domain):
            return domain
    return None


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _observed_counts(df: pd.DataFrame, columns: list[str]) -> dict[Any, float]:
    """Exact weighted counts of the observed values (1/k per value of the k query columns)."""
    values = pd.concat([df[c].dropna() for c in columns], ignore_index=True)
    counts = values.astype(object).value_counts(sort=False)
    return {_plain(v): float(n) / len(columns) for v, n in counts.items()}


def sort_categories(categories: list[Category]) -> list[Category]:
    """The order Schema.infer gives: natural for numbers and flags, as text otherwise."""
    if any(isinstance(c, str) for c in categories):
        return sorted(categories, key=str)
    try:
        return sorted(categories)
    except TypeError:
        return sorted(categories, key=str)


def _categorical_query(df: pd.DataFrame, columns: list[str], domain: tuple[Category, ...] | None,
                       noise_std: float, tau: float, rng: np.random.Generator) -> dict[Any, float]:
    """Released categories with their noisy counts: the flag domain whole, other values above τ."""
    counts = _observed_counts(df, columns)
    public = list(domain or ())
    others = sorted((v for v in counts if v not in set(public)), key=lambda v: (type(v).__name__, str(v)))
    candidates = public + others
    noisy = np.array([counts.get(v, 0.0) for v in candidates]) + rng.normal(0.0, noise_std, len(candidates))
    return {v: float(n) for i, (v, n) in enumerate(zip(candidates, noisy)) if i < len(public) or n > tau}


def _category_problem(spec: ColumnSpec, kept: list[Category], is_target: bool, is_flag: bool) -> str | None:
    fix = "declare its categories public in the schema (\"public\": true with \"categories\") or raise ε"
    if not kept:
        return f"no category of column '{spec.name}' is common enough to release at this ε; {fix}"
    if len(kept) < 2 and (is_target or (spec.kind == "binary" and not is_flag)):
        role = "the target" if is_target else "binary column"
        return (f"only one category ({kept[0]!r}) of {role} '{spec.name}' is common enough to release "
                f"at this ε; {fix}")
    return None


# -- the release --------------------------------------------------------------------------
def _check_arguments(df: pd.DataFrame, plan: StatisticsPlan, noise_std: float, threshold_delta: float) -> None:
    if not (np.isfinite(noise_std) and noise_std >= 0):
        raise ConfigError(f"noise_std must be a finite number ≥ 0, got {noise_std}")
    if plan.categorical and not 0 < threshold_delta < 1:
        raise ConfigError(f"threshold_delta must be in (0, 1) to release DP category lists, got {threshold_delta}")
    absent = [c for q in plan.numeric + plan.categorical for c in q if c not in df.columns]
    if absent:
        raise InputError(f"columns in the schema but not in the table: {', '.join(absent)}; "
                         "pass the table the schema describes")


def _query_label(schema: Schema, columns: list[str]) -> str:
    if len(columns) == 1:
        return columns[0]
    return "group:" + next(g.name for g in schema.longitudinal if columns[0] in g.columns)


def release_statistics(df: pd.DataFrame, schema: Schema, noise_std: float, threshold_delta: float,
                       rng: np.random.Generator) -> DPRelease:
    """Run the one Gaussian mechanism of :func:`plan_statistics`'s queries and post-process it.

    ``noise_std`` is the sd added to every count; choosing it (and charging the ledger, together
    with ``threshold_delta``) is the caller's job. Raises ``InputError`` naming every column whose
    estimate drowned in the noise.
    """
    plan = plan_statistics(schema)
    _check_arguments(df, plan, noise_std, threshold_delta)
    updates: dict[str, dict[str, Any]] = {}
    numeric = {s.name: _public_numeric_state(s) for s in schema.model_columns
               if s.kind in NUMERIC_KINDS and not _needs_numeric(s)}
    report: dict[str, dict[str, Any]] = {}
    too_few: list[str] = []
    for columns in plan.numeric:
        specs = [schema.column(c) for c in columns]
        out = _numeric_query(df, specs, noise_std, rng)
        if out is None:
            too_few.extend(columns)
            continue
        result, report[_query_label(schema, columns)] = out
        for spec in specs:
            numeric[spec.name] = dict(result["state"])
            updates[spec.name] = {"bounds": _bounds_for_spec(spec, result["bounds"][spec.name]), "public": False}

    n_thresholded = sum(len(q) for q in plan.categorical)
    tau = category_threshold(noise_std, threshold_delta, n_thresholded) if n_thresholded else 0.0
    fallback: dict[str, Any] = {}
    problems: list[str] = []
    if too_few:
        problems.append(f"too few records for a DP estimate of column(s) {', '.join(too_few)} at this ε; "
                        "declare bounds public in the schema (\"public\": true with \"bounds\") or raise ε")
    for columns in plan.categorical:
        spec = schema.column(columns[0])
        domain = flag_domain(spec.categories)
        released = _categorical_query(df, columns, domain, noise_std, tau, rng)
        kept = sort_categories(list(released))
        problem = _category_problem(spec, kept, spec.name == schema.target, domain is not None)
        if problem:
            problems.append(problem)
            continue
        report[_query_label(schema, columns)] = {
            "kind": "categorical", "columns": columns, "categories": kept,
            "counts": [released[c] for c in kept], "flag_domain": domain is not None}
        for name in columns:
            fallback[name] = max(kept, key=lambda c: released[c])
            kind = schema.column(name).kind
            updates[name] = {"categories": kept, "public": False,
                             "kind": "categorical" if kind == "binary" and len(kept) != 2 else kind}
    if problems:
        raise InputError("; ".join(problems))
    return DPRelease(schema=_updated_schema(schema, updates), numeric=numeric, fallback=fallback,
                     threshold=tau, threshold_delta=threshold_delta if n_thresholded else 0.0,
                     noisy_counts=report)


def charged_release(df: pd.DataFrame, schema: Schema, ledger: Any, share: float,
                    rng: np.random.Generator) -> DPRelease:
    """``release_statistics`` at ``share`` of the ledger's budget, charged first (nothing when the
    schema declares every fact public). Categorical thresholding spends δ/10 outright."""
    from clinsynth.privacy.ledger import Charge, share_noise_multiplier

    plan = plan_statistics(schema)
    sigma = share_noise_multiplier(share, ledger.epsilon, ledger.delta)
    threshold_delta = ledger.delta / 10 if plan.categorical else 0.0
    if plan.n_queries:
        ledger.charge(Charge(
            "gaussian", f"public facts: {len(plan.numeric)} numeric and {len(plan.categorical)} categorical "
            "column group(s)", noise_multiplier=sigma, sample_rate=1.0, steps=1, delta=threshold_delta))
    return release_statistics(df, schema, sigma * math.sqrt(max(plan.n_queries, 1)), threshold_delta, rng)


def _updated_schema(schema: Schema, updates: dict[str, dict[str, Any]]) -> Schema:
    """A validated copy of ``schema`` with the released values written in."""
    data = schema.model_dump()
    data["columns"] = [{**c, **updates.get(c["name"], {})} for c in data["columns"]]
    return Schema.model_validate(data)


# -- conforming the training data ---------------------------------------------------------
def _clip_numeric(s: pd.Series, lo: float, hi: float) -> pd.Series:
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        s = pd.to_numeric(s, errors="coerce")
    if pd.api.types.is_integer_dtype(s) and math.ceil(lo) <= math.floor(hi):
        return s.clip(math.ceil(lo), math.floor(hi))  # whole-number bounds keep the integer dtype
    if pd.api.types.is_integer_dtype(s):
        s = s.astype(float)
    return s.clip(lo, hi)


def _clip_datetime(s: pd.Series, bounds: tuple[str, str]) -> pd.Series:
    # bounds are wall-clock times (see schema.wall_clock); one given with an offset is read on its own wall clock
    lo, hi = (pd.Timestamp(b) for b in bounds)
    lo, hi = (b.tz_localize(None) if b.tz is not None else b for b in (lo, hi))
    if pd.api.types.is_datetime64_any_dtype(s):
        if s.dt.tz is not None:
            lo, hi = (b.tz_localize(s.dt.tz, ambiguous=False, nonexistent="shift_forward") for b in (lo, hi))
        return s.clip(lo, hi)
    # dates held as text stay text: only the clipped entries are rewritten
    parsed = wall_clock(parse_datetimes(s))
    out = s.copy()
    for mask, bound in ((parsed < lo, lo), (parsed > hi, hi)):
        if mask.any():
            out[mask.to_numpy()] = bound.strftime("%Y-%m-%d") if bound == bound.normalize() else bound.isoformat()
    return out


def _map_unknown(s: pd.Series, spec: ColumnSpec, fallback: Any) -> pd.Series:
    unknown = (pd.Index(spec.categories or []).get_indexer(s) < 0) & s.notna().to_numpy()
    if not unknown.any():
        return s
    if spec.missing == "indicator":
        return s.mask(unknown)
    return s.mask(unknown, fallback)


def conform(df: pd.DataFrame, release: DPRelease) -> pd.DataFrame:
    """Fit raw training data into the released schema, record by record, before encoding.

    Numbers (dates too) are clipped into the released bounds; a category the release does not
    list becomes missing (policy ``indicator``) or the column's fallback. It is a fixed function
    of each record, so the DP training that follows covers it. Rows and missing values are kept.
    """
    out = df.copy()
    for spec in release.schema.model_columns:
        if spec.name not in out.columns:
            continue
        if spec.kind in ("continuous", "integer") and spec.bounds is not None:
            out[spec.name] = _clip_numeric(out[spec.name], float(spec.bounds[0]), float(spec.bounds[1]))
        elif spec.kind == "datetime" and spec.bounds is not None:
            out[spec.name] = _clip_datetime(out[spec.name], spec.bounds)
        elif spec.kind in DISCRETE_KINDS and spec.name in release.fallback:
            out[spec.name] = _map_unknown(out[spec.name], spec, release.fallback[spec.name])
    return out
