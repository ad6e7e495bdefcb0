"""DP estimates of what the table encoder needs: the schema's facts, numeric scalings, category lists.

In DP mode the encoder may rely only on what the schema declares public or on DP estimates. An
inferred schema read *everything* from the data: bounds and categories (a maximum *is* one
participant's value), but also kinds, decimals, missing-value policies and dtypes — one planted
value with 4 decimals turned an integer column into ``continuous``/``decimals 4``, one NaN turned
``missing: none`` into ``indicator``, and the neighbouring datasets were told apart with certainty.
This module releases all of these with ONE Gaussian mechanism: a set of noisy histograms, one per
*query*. The caller charges it to the privacy ledger.

What is public, what is released
--------------------------------
* **Structure** (public, never read from values by this module): column names; each column's
  value type as its storage gives it — number, text, true/false or date (a number column is one
  whose schema kind is ``integer``/``continuous`` or ``binary`` with numeric categories; text and
  true/false columns are ``binary``/``categorical``); the target; longitudinal groups (by column
  names); identifier columns (``kind: id``, not modelled); the number of records.
* **Declared** (public): a column with ``public: true`` keeps every fact written in its spec —
  kind, decimals, missing policy, dtype, and its bounds or categories when given (a ``public``
  number without bounds still gets its bounds released).
* **Released** through the mechanism, for every other model column:

  - numbers: *bounds* and the encoder's scaling (value histogram), and *kind* (``integer``,
    ``continuous`` or a 0/1 flag), *decimals* and *missing policy* (format histogram);
  - dates: bounds and scaling, day precision and missing policy;
  - text, true/false, the target (and numbers declared ``categorical``): *categories*, and with
    them the kind (``binary`` exactly when two are released, else ``categorical``) and the
    missing policy (a "missing" count in the same histogram).

  The *dtype* follows from the released facts, as pandas would hold such a column (see
  :func:`~clinsynth.privacy.formats.released_dtype`), never from the input's dtype, which one
  float or one NaN changes.
* **Flag domains** are public by rule: a category list that is a subset of one of
  :data:`FLAG_DOMAINS` (same Python type: ``{0, 1}``, ``{False, True}``, ``{"0", "1"}``,
  ``{0.0, 1.0}``) is released whole, a data-independent list; only observed values outside it go
  through the threshold. A number column is released as the 0/1 flag when its format histogram
  says values other than 0 and 1 are negligible.

The mechanism (neighbours differ by adding or removing one record)
------------------------------------------------------------------
* A query is one scalar column, or the columns of one longitudinal group pooled (they share
  bounds and format). A record adds weight ``w/k`` per counted cell of the ``k`` columns in the
  query, each cell to one bucket, so the L2 norm of its change to the histogram is ≤ ``w``:
  ``w = 1`` for value and categorical histograms, ``w =`` :data:`FORMAT_WEIGHT` (0.5) for format
  histograms, which need far less signal than bounds (their counts sit in one or two classes, a
  value histogram's spread over dozens of buckets). The whole release has L2 sensitivity
  ≤ :attr:`StatisticsPlan.sensitivity` ``= sqrt(n_value + n_categorical + w² n_format)``; the
  caller passes ``noise_std = noise_multiplier * sqrt(sensitivity² + extra)`` and charges a
  Gaussian mechanism with that ``noise_multiplier`` (``sample_rate = 1``, ``steps = 1``). Format
  counts are reported in cells (divided by ``w``), with noise sd ``noise_std / w``. A format
  histogram at full weight would raise every other count's noise by up to 41 % (a table of
  numbers only); at 0.5, by up to 12 %.
* Each number query is two histograms (two queries): the **value histogram** counts observed
  values on a **public grid** (buckets of 0.1 in ``asinh(x / 1e-3)``; 30-day buckets for dates);
  the **format histogram** counts each cell in one of the public classes ``NUMBER_FORMATS``
  (missing, exactly 0, exactly 1, other whole, 1 … 6 decimals, more) or ``DATE_FORMATS``
  (missing, midnight, a time of day; the classes and the rules below are coded in
  :mod:`clinsynth.privacy.formats`). In a longitudinal group with dropout, the blanks after a
  participant's last visit are dropout, not missing values, and are not counted. N(0,
  ``noise_std²``) is added to every bucket, empty ones included. Each query draws its noise from
  its own generator, seeded from ``rng`` in plan order, so one query's data-dependent candidate
  list does not shift another's noise.
* Everything after is post-processing. Values: the *bulk* is the buckets whose noisy count clears
  :func:`bulk_threshold`; released bounds are its range widened by half its width each side,
  rounded outward to the released precision; loc/scale and the quantile knots come from the bulk's
  noisy counts. Format, with ``N`` the noisy count of observed cells, a tail of ``m`` buckets is
  *negligible* when its noisy sum is ≤ ``max(4 · sd · √m, 1 % of N)`` and *significant* when it
  exceeds ``3 · sd · √m`` (``sd`` the format counts' noise sd):

  - a scalar number column is the **0/1 flag** when the cells at 0 and 1 are significant and the
    others negligible;
  - else **decimals** is the smallest ``d`` ≤ 6 such that the cells needing at most ``d``
    decimals are significant and those needing more negligible; ``None`` (no rounding) when there
    is none — so too few records for evidence leave values unrounded rather than rounded to
    integers — and the kind is ``integer`` when ``d = 0``, else ``continuous``; a date column has
    day precision (``decimals 0``) when its midnight cells are significant and those with a time
    of day negligible;
  - **missing policy** ``indicator`` when the noisy missing count is significant, else ``none``
    (rare gaps are then filled by :func:`conform`). One group shares one policy.

  The 1 % floor keeps a handful of odd values (too few to matter, possibly typos) from setting a
  whole column's precision; :func:`conform` rounds them, a fixed function of each record.
* Categorical queries count the *observed* values (the candidate list depends on the data) and
  the missing cells (a data-independent candidate, like the flag domain), and keep a non-flag
  value only if its noisy count exceeds ``τ = 1 + noise_std · Φ⁻¹(1 − threshold_delta / c)``,
  ``c`` = the number of columns in categorical queries (fixed by the schema). A value that one
  record alone holds has count ≤ 1, so it is released with probability ≤ ``threshold_delta / c``,
  and one record brings at most ``c`` such values: thresholding adds ``threshold_delta`` to the
  mechanism's δ, which the caller also charges. Noisy counts of values not kept are never
  released. Numeric labels that are whole numbers are released as ints (``1.0`` → ``1``): a NaN
  elsewhere in the column makes pandas hold them as floats.

What stays outside: whether a text column is read as dates, or a column of unique values named
like an identifier as ``id``, is decided by :meth:`clinsynth.schema.Schema.infer` from the values
before any of this; :func:`schema_facts` lists what a release took from structure.
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
from clinsynth.privacy.formats import (
    DATE_FORMATS,
    NUMBER_FORMATS,
    decide_format,
    format_histogram,
    is_number,
    released_dtype,
    significant,
    whole_labels,
)
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
#: A record's weight in a format histogram (1 in the others): see the module docstring.
FORMAT_WEIGHT = 0.5


@dataclass(frozen=True)
class StatisticsPlan:
    """The queries a DP release needs, fixed by the schema's structure alone (so their number can be charged)."""

    numeric: list[list[str]]
    categorical: list[list[str]]
    format: list[list[str]] = field(default_factory=list)

    @property
    def n_queries(self) -> int:
        return len(self.numeric) + len(self.categorical) + len(self.format)

    @property
    def sensitivity(self) -> float:
        """The release's L2 sensitivity: one record moves each value and categorical histogram by
        ≤ 1 and each format histogram by ≤ :data:`FORMAT_WEIGHT`."""
        return math.sqrt(len(self.numeric) + len(self.categorical) + FORMAT_WEIGHT ** 2 * len(self.format))

    def purpose(self) -> str:
        """The ledger's purpose text for this release."""
        return (f"public facts: {len(self.numeric)} numeric and {len(self.categorical)} categorical column group(s), "
                f"{len(self.format)} format histogram(s) (kind, decimals, missing values)")


@dataclass
class DPRelease:
    """What the mechanism released, ready for the encoder (``schema``, ``numeric``) and the report."""

    schema: Schema                      # the input schema with the DP facts written in
    numeric: dict[str, dict[str, Any]]  # per numeric column: NumericCodec state, loc/scale and knots/scores
    fallback: dict[str, Any]            # per DP-released discrete column: where unknown values (and gaps) go
    threshold: float                    # τ for categories (0.0 when there was no categorical query)
    threshold_delta: float              # δ the thresholding adds (0.0 when nothing could be thresholded)
    noisy_counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # per query, JSON-plain

    def state_dict(self) -> dict[str, Any]:
        """Plain data (a resumed fit restores the release instead of drawing and charging it again)."""
        return {"schema": self.schema.to_json(), "numeric": self.numeric, "fallback": self.fallback,
                "threshold": self.threshold, "threshold_delta": self.threshold_delta,
                "noisy_counts": self.noisy_counts}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> DPRelease:
        return cls(schema=Schema.from_json(state["schema"], "released schema"), numeric=state["numeric"],
                   fallback=state["fallback"], threshold=float(state["threshold"]),
                   threshold_delta=float(state["threshold_delta"]), noisy_counts=state.get("noisy_counts", {}))


# ---------------------------------------------------------------------------------------
def is_number_column(spec: ColumnSpec, schema: Schema) -> bool:
    """A model column whose values are numbers by structure and whose kind DP releases: ``integer``,
    ``continuous``, or ``binary`` with numeric categories (what inference calls a 2-valued number
    column: one third value would make it ``integer``). The target stays a class label."""
    if spec.kind in ("integer", "continuous"):
        return True
    return (spec.kind == "binary" and spec.name != schema.target
            and all(is_number(c) for c in spec.categories or []))


def _needs_numeric(spec: ColumnSpec, schema: Schema) -> bool:
    valued = spec.kind == "datetime" or is_number_column(spec, schema)
    return valued and not (spec.public and (spec.bounds is not None or spec.kind in DISCRETE_KINDS))


def _needs_categories(spec: ColumnSpec, schema: Schema) -> bool:
    return spec.kind in DISCRETE_KINDS and not spec.public and not is_number_column(spec, schema)


def _needs_format(spec: ColumnSpec, schema: Schema) -> bool:
    return _needs_numeric(spec, schema) and not spec.public


def plan_statistics(schema: Schema) -> StatisticsPlan:
    """The queries for every non-public model column; a longitudinal group's columns pool into one."""
    group_of = {c: g.name for g in schema.longitudinal for c in g.columns}
    plan: dict[str, list[list[str]]] = {"numeric": [], "categorical": [], "format": []}
    pooled: dict[tuple[str, str], list[str]] = {}
    for spec in schema.model_columns:
        for part, needed in (("numeric", _needs_numeric), ("format", _needs_format), ("categorical", _needs_categories)):
            if not needed(spec, schema):
                continue
            group = group_of.get(spec.name)
            if group is None:
                plan[part].append([spec.name])
                continue
            if (group, part) not in pooled:
                pooled[(group, part)] = []
                plan[part].append(pooled[(group, part)])
            pooled[(group, part)].append(spec.name)
    return StatisticsPlan(**plan)


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


def _values(df: pd.DataFrame, spec: ColumnSpec) -> np.ndarray:
    """The encoder's own reading of a column (dates as days), NaN for missing."""
    return numeric_values(df[spec.name], "datetime" if spec.kind == "datetime" else "continuous")


def _histogram(df: pd.DataFrame, specs: list[ColumnSpec], edges: np.ndarray) -> np.ndarray:
    """Exact weighted counts: each record adds 1/k per observed value of the k query columns."""
    counts = np.zeros(edges.size - 1)
    for spec in specs:
        x = _values(df, spec)
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

    ``specs`` carry the released kind and decimals (bounds are rounded to them). Returns
    (result, report), or None when no bucket clears the noise (too few records).
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


# -- format queries -----------------------------------------------------------------------
def _format_query(df: pd.DataFrame, specs: list[ColumnSpec], noise_std: float, rng: np.random.Generator,
                  after_dropout: dict[str, np.ndarray], may_be_flag: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """One format histogram at :data:`FORMAT_WEIGHT` (``noise_std`` is the release's; the counts
    come back in cells, with noise sd ``noise_std / FORMAT_WEIGHT``) and the facts it gives."""
    dates = specs[0].kind == "datetime"
    weighted = FORMAT_WEIGHT * format_histogram(df, specs, after_dropout)
    noisy = (weighted + rng.normal(0.0, noise_std, weighted.size)) / FORMAT_WEIGHT
    facts = decide_format(noisy, noise_std / FORMAT_WEIGHT, dates, may_be_flag)
    report = {"kind": "format", "columns": [s.name for s in specs],
              "classes": list(DATE_FORMATS if dates else NUMBER_FORMATS), "counts": noisy.tolist(),
              "noise_sd": noise_std / FORMAT_WEIGHT,
              **{k: v for k, v in facts.items() if k != "fallback"}}
    return facts, report


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
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # one label whatever dtype a NaN gave the column
    return value


def _observed_counts(df: pd.DataFrame, columns: list[str]) -> tuple[dict[Any, float], float]:
    """Exact weighted counts of the observed values and of the missing cells (1/k per cell of
    the k query columns)."""
    values = pd.concat([df[c].dropna() for c in columns], ignore_index=True)
    counts: dict[Any, float] = {}
    for v, n in values.astype(object).value_counts(sort=False).items():
        key = _plain(v)
        counts[key] = counts.get(key, 0.0) + float(n) / len(columns)
    missing = sum(int(df[c].isna().sum()) for c in columns) / len(columns)
    return counts, missing


def sort_categories(categories: list[Category]) -> list[Category]:
    """The order Schema.infer gives: natural for numbers and flags, as text otherwise."""
    if any(isinstance(c, str) for c in categories):
        return sorted(categories, key=str)
    try:
        return sorted(categories)
    except TypeError:
        return sorted(categories, key=str)


def _categorical_query(df: pd.DataFrame, columns: list[str], domain: tuple[Category, ...] | None,
                       noise_std: float, tau: float, rng: np.random.Generator) -> tuple[dict[Any, float], float]:
    """Released categories with their noisy counts (the flag domain whole, other values above τ),
    and the noisy count of missing cells."""
    counts, missing = _observed_counts(df, columns)
    public = list(whole_labels(list(domain)) if domain else ())
    others = sorted((v for v in counts if v not in set(public)), key=lambda v: (type(v).__name__, str(v)))
    candidates = public + others
    noisy = np.array([missing] + [counts.get(v, 0.0) for v in candidates]) + rng.normal(0.0, noise_std, len(candidates) + 1)
    kept = {v: float(n) for i, (v, n) in enumerate(zip(candidates, noisy[1:])) if i < len(public) or n > tau}
    return kept, float(noisy[0])


def _category_problem(spec: ColumnSpec, kept: list[Category], is_target: bool) -> str | None:
    fix = "declare its categories public in the schema (\"public\": true with \"categories\") or raise ε"
    if not kept:
        return f"no category of column '{spec.name}' is common enough to release at this ε; {fix}"
    if len(kept) < 2 and is_target:
        return f"only one category ({kept[0]!r}) of the target '{spec.name}' is common enough to release at this ε; {fix}"
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


def _query_rngs(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    """One generator per query, seeded in plan order: a fixed draw from ``rng`` whatever the data."""
    return [np.random.default_rng(int(s)) for s in rng.integers(0, 2**63 - 1, size=n)]


def release_statistics(df: pd.DataFrame, schema: Schema, noise_std: float, threshold_delta: float,
                       rng: np.random.Generator) -> DPRelease:
    """Run the one Gaussian mechanism of :func:`plan_statistics`'s queries and post-process it.

    ``noise_std`` is the sd added to every count; choosing it (and charging the ledger, together
    with ``threshold_delta``) is the caller's job. Raises ``InputError`` naming every column whose
    estimate drowned in the noise.
    """
    plan = plan_statistics(schema)
    _check_arguments(df, plan, noise_std, threshold_delta)
    rngs = iter(_query_rngs(rng, plan.n_queries))
    grouped = {c for g in schema.longitudinal for c in g.columns}
    blanks = {c for _, groups in schema.timelines() if all(g.dropout for g in groups) for g in groups for c in g.columns}
    after_dropout = schema._after_dropout(df) if plan.format and schema.longitudinal else {}
    updates: dict[str, dict[str, Any]] = {}
    fallback: dict[str, Any] = {}
    report: dict[str, dict[str, Any]] = {}
    for columns in plan.format:  # first: the bounds are rounded to the released precision
        specs = [schema.column(c) for c in columns]
        facts, report["format:" + _query_label(schema, columns)] = _format_query(
            df, specs, noise_std, next(rngs), after_dropout, may_be_flag=len(columns) == 1 and columns[0] not in grouped)
        for spec in specs:
            if "fallback" in facts:
                fallback[spec.name] = facts["fallback"]
            updates[spec.name] = {"kind": facts["kind"], "decimals": facts["decimals"], "missing": facts["missing"],
                                  "categories": facts.get("categories"), "bounds": None, "public": False,
                                  "dtype": released_dtype(spec, facts["kind"], facts["missing"], facts.get("categories"),
                                                          blanks=spec.name in blanks)}
    numeric = {s.name: _public_numeric_state(s) for s in schema.model_columns
               if s.kind in NUMERIC_KINDS and not _needs_numeric(s, schema)}
    too_few: list[str] = []
    for columns in plan.numeric:
        specs = [schema.column(c).model_copy(update=updates.get(c, {})) for c in columns]
        query_rng = next(rngs)
        if specs[0].kind in DISCRETE_KINDS:  # released as a 0/1 flag: its value histogram is not needed
            continue
        out = _numeric_query(df, specs, noise_std, query_rng)
        if out is None:
            too_few.extend(columns)
            continue
        result, report[_query_label(schema, columns)] = out
        for spec in specs:
            numeric[spec.name] = dict(result["state"])
            updates.setdefault(spec.name, {}).update(
                bounds=_bounds_for_spec(spec, result["bounds"][spec.name]), public=False)

    n_thresholded = sum(len(q) for q in plan.categorical)
    tau = category_threshold(noise_std, threshold_delta, n_thresholded) if n_thresholded else 0.0
    problems: list[str] = []
    if too_few:
        problems.append(f"too few records for a DP estimate of column(s) {', '.join(too_few)} at this ε; "
                        "declare bounds public in the schema (\"public\": true with \"bounds\") or raise ε")
    for columns in plan.categorical:
        spec = schema.column(columns[0])
        domain = flag_domain(spec.categories)
        released, missing_count = _categorical_query(df, columns, domain, noise_std, tau, next(rngs))
        kept = sort_categories(list(released))
        problem = _category_problem(spec, kept, spec.name == schema.target)
        if problem:
            problems.append(problem)
            continue
        missing = "indicator" if significant(np.array([missing_count]), noise_std) else "none"
        report[_query_label(schema, columns)] = {
            "kind": "categorical", "columns": columns, "categories": kept,
            "counts": [released[c] for c in kept], "flag_domain": domain is not None,
            "missing_count": missing_count, "missing": missing}
        for name in columns:
            fallback[name] = max(kept, key=lambda c: released[c])
            kind = "binary" if len(kept) == 2 else "categorical"
            updates[name] = {"categories": kept, "public": False, "kind": kind, "missing": missing,
                             "dtype": released_dtype(schema.column(name), kind, missing, kept)}
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
        ledger.charge(Charge("gaussian", plan.purpose(), noise_multiplier=sigma, sample_rate=1.0, steps=1,
                             delta=threshold_delta))
    return release_statistics(df, schema, sigma * max(plan.sensitivity, 1.0), threshold_delta, rng)


def _updated_schema(schema: Schema, updates: dict[str, dict[str, Any]]) -> Schema:
    """A validated copy of ``schema`` with the released values written in."""
    data = schema.model_dump()
    data["columns"] = [{**c, **updates.get(c["name"], {})} for c in data["columns"]]
    return Schema.model_validate(data)


# -- what a release took from where -------------------------------------------------------
def schema_facts(schema: Schema) -> dict[str, Any]:
    """What a DP model's schema took from structure only, what the steward declared public and
    what went through the ledger, for the console and the guarantee page. ``schema`` is the
    released one (a model's ``schema_``): ``public`` marks declared columns there."""
    model = schema.model_columns
    declared = [c.name for c in model if c.public]
    released = [c.name for c in model if not c.public]
    ids = [c.name for c in schema.columns if c.kind == "id"]
    structure = [f"{len(schema.columns)} column names", "each column's value type (number, text, true/false, date)"] \
        if schema.columns else []
    if schema.codes is not None:
        structure.append(f"a {'presence' if schema.codes.binary else 'count'} code block")
    if schema.target is not None:
        structure.append(f"target '{schema.target}'")
    if schema.longitudinal:
        structure.append(f"{len(schema.longitudinal)} longitudinal group(s) by column name")
    if ids:
        structure.append(f"identifier column(s) {', '.join(ids)} (not modelled)")
    structure.append("the number of records")
    parts = [f"DP schema — from structure only: {', '.join(structure)}"]
    if declared:
        parts.append(f"declared public: {', '.join(declared)}")
    if released:
        parts.append(f"released through the ledger: kind, decimals, bounds, categories, missing policy "
                     f"(and so dtype) of {len(released)} column(s)")
    if schema.codes is not None:
        parts.append(f"code vocabulary {'declared public' if schema.codes.public else 'released through the ledger'}")
    return {"structure": structure, "declared_public": declared, "released": released, "summary": "; ".join(parts)}


# -- conforming the training data ---------------------------------------------------------
def _clip_numeric(s: pd.Series, lo: float, hi: float) -> pd.Series:
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        s = pd.to_numeric(s, errors="coerce")
    if pd.api.types.is_integer_dtype(s) and math.ceil(lo) <= math.floor(hi):
        return s.clip(math.ceil(lo), math.floor(hi))  # whole-number bounds keep the integer dtype
    if pd.api.types.is_integer_dtype(s):
        s = s.astype(float)
    return s.clip(lo, hi)


def _round_numeric(s: pd.Series, spec: ColumnSpec) -> pd.Series:
    """Values to the column's released precision (integers stay as they are)."""
    digits = 0 if spec.kind == "integer" else spec.decimals
    if digits is None or pd.api.types.is_integer_dtype(s):
        return s
    return s.round(digits)


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
            out[mask.to_numpy()] = _date_text(bound)
    return out


def _date_text(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.isoformat()


def _map_unknown(s: pd.Series, spec: ColumnSpec, fallback: Any) -> pd.Series:
    unknown = (pd.Index(spec.categories or []).get_indexer(s) < 0) & s.notna().to_numpy()
    if not unknown.any():
        return s
    if spec.missing == "indicator":
        return s.mask(unknown)
    return s.mask(unknown, fallback)


def _gap_value(spec: ColumnSpec, release: DPRelease, s: pd.Series) -> Any:
    """What fills a gap where the released schema has no room for one: the released centre of a
    number (at its precision) or date, the most common released category."""
    if spec.kind in DISCRETE_KINDS:
        return release.fallback[spec.name]
    loc = release.numeric[spec.name]["loc"]
    if spec.kind == "datetime":
        ts = pd.Timestamp(round(loc * _DAY_NS), unit="ns")
        ts = ts.normalize() if spec.decimals == 0 else ts.floor("s")
        if pd.api.types.is_datetime64_any_dtype(s):
            return ts.tz_localize(s.dt.tz) if s.dt.tz is not None else ts
        return _date_text(ts)
    lo, hi = numeric_bounds(spec) if spec.bounds is not None else (-math.inf, math.inf)
    digits = 0 if spec.kind == "integer" else spec.decimals
    value = min(max(loc, lo), hi)
    return float(round(value, digits)) if digits is not None else value


def _fill_gaps(s: pd.Series, spec: ColumnSpec, release: DPRelease, after: np.ndarray | None) -> pd.Series:
    """Gaps in a column released with missing policy ``none`` (blanks after dropout stay blank)."""
    gaps = s.isna().to_numpy()
    if after is not None:
        gaps = gaps & ~after
    if not gaps.any():
        return s
    return s.mask(gaps, _gap_value(spec, release, s))


def conform(df: pd.DataFrame, release: DPRelease) -> pd.DataFrame:
    """Fit raw training data into the released schema, record by record, before encoding.

    Numbers (dates too) are clipped into the released bounds and rounded to the released precision;
    a category the release does not list (a number other than 0 and 1 in a released flag) becomes
    missing (policy ``indicator``) or the column's fallback; a gap in a column released with
    policy ``none`` becomes its fallback or released centre. It is a fixed function of each record
    (given the release), so the DP training that follows covers it. Rows are kept.
    """
    out = df.copy()
    schema = release.schema
    after = schema._after_dropout(out) if schema.longitudinal else {}
    for spec in schema.model_columns:
        if spec.name not in out.columns:
            continue
        s = out[spec.name]
        if spec.kind in ("continuous", "integer") and spec.bounds is not None:
            s = _round_numeric(_clip_numeric(s, float(spec.bounds[0]), float(spec.bounds[1])), spec)
        elif spec.kind == "datetime" and spec.bounds is not None:
            s = _clip_datetime(s, spec.bounds)
        elif spec.kind in DISCRETE_KINDS and spec.name in release.fallback:
            s = _map_unknown(s, spec, release.fallback[spec.name])
        released = spec.name in release.fallback or (spec.name in release.numeric and not spec.public)
        if released and spec.missing == "none":
            s = _fill_gaps(s, spec, release, after.get(spec.name))
        out[spec.name] = s
    return out
