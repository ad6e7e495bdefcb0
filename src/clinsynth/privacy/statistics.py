"""DP estimates of what the table encoder needs: the schema's facts, numeric scalings, category lists.

In DP mode the encoder may rely only on what the schema declares public or on DP estimates. An
inferred schema read *everything* from the data: bounds and categories (a maximum *is* one
participant's value), but also kinds, decimals, missing-value policies and dtypes — one planted
value with 4 decimals turned an integer column into ``continuous``/``decimals 4``, one NaN turned
``missing: none`` into ``indicator``, and the neighbouring datasets were told apart with certainty.
This module releases all of these with ONE Gaussian mechanism: a set of noisy histograms, one per
*query*. :func:`charged_release` charges it to the privacy ledger in the same call that adds
the noise (``release_statistics``, the uncharged core, is for tests and for it).

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
  value histogram's spread over dozens of buckets), and ``w = w_T ≥ 1`` for the target's
  categories (:attr:`StatisticsPlan.target_weight`: on a wide table the target gets a tenth of
  the release's μ², or its classes drown and no model can be trained).
  The whole release has L2 sensitivity ≤ :attr:`StatisticsPlan.sensitivity` ``= sqrt(n_value +
  n_categorical − 1 + w_T² + 0.25 n_format + extra)``; the caller passes ``noise_std =
  noise_multiplier * sensitivity`` and charges a Gaussian mechanism with that ``noise_multiplier``
  (``sample_rate = 1``, ``steps = 1``). Counts are reported in records (divided by ``w``), with
  noise sd ``noise_std / w``. A format histogram at full weight would raise every other count's
  noise by up to 41 % (a table of numbers only); at 0.5, by up to 12 %.
* How much of the budget the release gets, and when it is refused, is decided from ``n``, ε and
  the plan before any value is read (:mod:`clinsynth.privacy.facts_budget`, through
  :func:`charged_release`): the caller's share, raised up to one half for a table with few
  records per column; refused (:class:`FactsRefusal`, naming the smallest ε that would work)
  only when not even all the records in one coarse bucket or one category (the target: two
  classes of half each) could be told from the noise.
* Each number query is two histograms: the **value histogram** counts observed values on two
  **public grids** at once — fine (buckets of 0.1 in ``asinh(x / 1e-3)``; 30 days for dates) and
  coarse (16 fine buckets, a factor of ~5; 480 days) at weights 0.8 and 0.6 (0.95 and 0.3 on a
  large table), one record moving the pair by 1 in L2 (:mod:`clinsynth.privacy.histograms`) — and the **format histogram**
  counts each cell in one of the public classes ``NUMBER_FORMATS``
  (missing, exactly 0, exactly 1, other whole, 1 … 6 decimals, more) or ``DATE_FORMATS``
  (missing, midnight, a time of day; the classes and the rules below are coded in
  :mod:`clinsynth.privacy.formats`). In a longitudinal group with dropout, the blanks after a
  participant's last visit are dropout, not missing values, and are not counted. N(0,
  ``noise_std²``) is added to every bucket, empty ones included. Each query draws its noise from
  its own generator, seeded from ``rng`` in plan order, so one query's data-dependent candidate
  list does not shift another's noise.
* Everything after is post-processing. Values (:mod:`clinsynth.privacy.histograms`): the noisy
  counts are read at four levels, fine to coarse; the *bulk* of a level is its buckets whose noisy
  count clears :func:`bulk_threshold`; the finest level holding most of the bulk mass, extended
  by coarser levels' bulk past its ends (and, where the format histogram's count of observed cells
  evidently exceeds what it holds, by the coarse buckets next to it), gives the located range and the masses; released bounds
  are that range widened by half its width each side, rounded outward to the released precision;
  loc/scale and the quantile knots come from the masses. Where no level locates anything, the
  bounds are a wide public default by kind (read from no record), with a
  :class:`~clinsynth.errors.ReleaseWarning`. Format, with ``N`` the noisy count of observed cells, a tail of ``m`` buckets is
  *negligible* when its noisy sum is ≤ ``max(4 · sd · √m, 1 % of N)`` and not evidently (2 sds)
  above 10 % of ``N`` (on a small table 4 sds can be most of the cells), and *significant* when it
  exceeds ``3 · sd · √m``
  (``sd`` the format counts' noise sd):

  - a scalar number column is the **0/1 flag** when the cells at 0 and 1 are significant, the
    others negligible, and the other whole numbers evidently rare (their noisy count plus 2 sds
    under 10 % of ``N``: a count column read as a flag would lose every value above 1);
  - else **decimals** is the smallest ``d`` ≤ 6 such that the cells needing at most ``d``
    decimals are significant and those needing more negligible; ``None`` (no rounding) when there
    is none — so too few records for evidence leave values unrounded rather than rounded to
    integers — and the kind is ``integer`` when ``d = 0``, else ``continuous``; a date column has
    day precision (``decimals 0``) when its midnight cells are significant and those with a time
    of day negligible;
  - **missing policy** ``indicator`` unless the noisy missing count is under one sd, then
    ``none`` (rare gaps are filled by :func:`conform`); the same rule for a categorical query's
    missing count, and never ``indicator`` for the target (it has no blank). One group shares one
    policy. The bar is lower than the significance above because the two errors differ: a false
    ``none`` writes every blank as the column's centre (a lab 24 % blank on 353 records: 0 %
    blanks and a spike in 2 of 3 seeds at 3 sds), while a false ``indicator`` costs only the rate
    the model's own noisy counts give a state no record holds (see :mod:`clinsynth.privacy.formats`).

  The 1 % floor keeps a handful of odd values (too few to matter, possibly typos) from setting a
  whole column's precision; :func:`conform` rounds them, a fixed function of each record.
* Categorical queries count the *observed* values (the candidate list depends on the data) and
  the missing cells (a data-independent candidate, like the flag domain), and keep a non-flag
  value only if its noisy count exceeds ``τ = 1 + noise_std · Φ⁻¹(1 − threshold_delta / c)``,
  ``c`` = the number of columns in categorical queries (fixed by the schema). A value that one
  record alone holds has count ≤ 1, so it is released with probability ≤ ``threshold_delta / c``,
  and one record brings at most ``c`` such values: thresholding adds ``threshold_delta`` to the
  mechanism's δ, which the caller also charges. Noisy counts of values not kept are never
  released. The target must keep two classes, or the release is refused; another column keeps
  what clears τ — one category (rarer values, if any, are written as it, or as missing where the
  column has missing values), or for a text column none, whose values become
  :data:`RARE_LABEL` — with a :class:`~clinsynth.errors.ReleaseWarning`. Numeric labels that are whole numbers are released as ints (``1.0`` → ``1``): a NaN
  elsewhere in the column makes pandas hold them as floats.

What stays outside: whether a text column is read as dates, or a column of unique values named
like an identifier as ``id``, is decided by :meth:`clinsynth.schema.Schema.infer` from the values
before any of this; :func:`schema_facts` lists what a release took from structure and, from
:meth:`DPRelease.record`, how each fact was estimated (grid, public default, merged categories)
and at what share of the budget.

Size: ~760 lines, ~120 of them the description above (the contract a privacy reviewer reads). The
plan, the three kinds of query and the release share one sensitivity account and one noise order
(each query's generator is seeded from ``rng`` in plan order; the reference ledgers and samples of
``tests/test_dp_reference.py`` depend on it), so they stay together. What reads a release
afterwards lives apart: :mod:`clinsynth.privacy.conform` (training records fitted into it) and
:mod:`clinsynth.privacy.schema_facts` (what a schema took from where).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd

from clinsynth.data.transforms import numeric_bounds, numeric_values
from clinsynth.errors import ConfigError, InputError
from clinsynth.privacy.facts_budget import (
    COMFORT_FRACTION,
    TARGET_SHARE,
    USEFUL_FRACTION,
    USEFUL_TARGET_FRACTION,
    category_limit,
    category_threshold,
    facts_noise,
    smallest_epsilon,
    value_limit,
)
from clinsynth.privacy.formats import (
    DATE_FORMATS,
    NUMBER_FORMATS,
    decide_format,
    format_histogram,
    is_number,
    keeps_missing,
    released_dtype,
    whole_labels,
)
from clinsynth.privacy.histograms import (
    bucket,
    bulk_threshold,
    coarse_edges,
    coarse_weight,
    composite_state,
    grid_edges,
    levels,
    locate,
    public_default,
    public_state,
    step_label,
    widen,
    zero_spike,
)
from clinsynth.schema import DISCRETE_KINDS, NUMERIC_KINDS, Category, ColumnSpec, Schema

__all__ = ["FLAG_DOMAINS", "FORMAT_WEIGHT", "RARE_LABEL", "DPRelease", "ExtraQuery", "FactsRefusal", "StatisticsPlan",
           "bulk_threshold", "category_threshold", "charged_release", "flag_domain", "grid_edges",
           "plan_statistics", "release_statistics", "sort_categories"]

#: Public candidate categories of flag columns; a schema whose list fits one releases all of it.
FLAG_DOMAINS: tuple[tuple[Category, ...], ...] = ((0, 1), (False, True), ("0", "1"), (0.0, 1.0))
#: The one category of a text column none of whose values is common enough to release.
RARE_LABEL = "(rare)"

#: nanoseconds in a day (dates are released in days)
DAY_NS = 86_400 * 10**9
#: A record's weight in a format histogram (1 in the others): see the module docstring.
FORMAT_WEIGHT = 0.5


class FactsRefusal(InputError):
    """No useful release of some public fact is possible at this noise.

    ``needed_noise_std`` is the largest noise sd at which it would be (None: at none), so the
    caller that chose the noise from ε can name the smallest ε that would work; ``before_reading``
    says it came from the plan alone (the target assumed two classes of half the records each)."""

    def __init__(self, message: str, needed_noise_std: float | None, before_reading: bool = False):
        super().__init__(message)
        self.needed_noise_std = needed_noise_std
        self.before_reading = before_reading


@dataclass(frozen=True)
class StatisticsPlan:
    """The queries a DP release needs, fixed by the schema's structure alone (so their number can be charged).

    ``target`` names the target when its categories are queried and thresholded (not a flag
    domain; its query is weighted up, see :attr:`target_weight`); ``extra`` is the squared weight of queries the caller adds to the same
    mechanism (dp-acgan's class × dropout table)."""

    numeric: list[list[str]]
    categorical: list[list[str]]
    format: list[list[str]] = field(default_factory=list)
    target: str | None = None
    extra: float = 0.0

    @property
    def n_queries(self) -> int:
        return len(self.numeric) + len(self.categorical) + len(self.format)

    @property
    def _rest(self) -> float:
        """Σ w² over every query but the target's."""
        others = len(self.categorical) - (self.target is not None)
        return len(self.numeric) + others + FORMAT_WEIGHT ** 2 * len(self.format) + self.extra

    @property
    def target_weight(self) -> float:
        """The target query's weight: 1, or enough for :data:`~clinsynth.privacy.facts_budget.TARGET_SHARE`
        of the release's μ² when many other queries share it (its noise sd is ``noise_std / weight``)."""
        if self.target is None:
            return 1.0
        return max(1.0, math.sqrt(TARGET_SHARE / (1.0 - TARGET_SHARE) * self._rest))

    def weight(self, columns: list[str]) -> float:
        """A categorical query's weight."""
        return self.target_weight if columns == [self.target] else 1.0

    @property
    def sensitivity(self) -> float:
        """The release's L2 sensitivity: one record moves each value histogram pair (fine and coarse
        grid) and each categorical histogram by ≤ 1 (the target's by ≤ its weight), each format
        histogram by ≤ :data:`FORMAT_WEIGHT`, and the caller's extra queries by ≤ √extra."""
        return math.sqrt(self._rest + (self.target_weight ** 2 if self.target is not None else 0.0))

    def purpose(self) -> str:
        """The ledger's purpose text for this release."""
        return (f"public facts: {len(self.numeric)} numeric (fine and coarse grid) and {len(self.categorical)} "
                f"categorical column group(s), {len(self.format)} format histogram(s) (kind, decimals, missing values)")


class ExtraQuery:
    """The caller's own query inside a release's Gaussian mechanism (dp-acgan's class × dropout
    table): charged with the release by :func:`charged_release`, answered here once, with the
    release's generator, when the caller has counted it. One record moves its counts by at most
    ``weight`` in L2 (``weight² = extra``), so counts in records get noise sd ``noise_std / weight``.
    A second answer would be a second release the ledger never saw, so it is refused."""

    def __init__(self, noise_std: float, weight: float, rng: np.random.Generator):
        self.noise_sd = noise_std / weight
        self._rng: np.random.Generator | None = rng

    def answer(self, counts: np.ndarray) -> np.ndarray:
        """``counts`` plus the release's noise (noisy counts may be negative: clip them afterwards)."""
        if self._rng is None:
            raise RuntimeError("the extra query of a release was answered already; its charge covers one answer")
        rng, self._rng = self._rng, None
        counts = np.asarray(counts, dtype=float)
        return counts + rng.normal(0.0, self.noise_sd, size=counts.shape)


@dataclass
class DPRelease:
    """What the mechanism released, ready for the encoder (``schema``, ``numeric``) and the report."""

    schema: Schema                      # the input schema with the DP facts written in
    numeric: dict[str, dict[str, Any]]  # per numeric column: NumericCodec state, loc/scale and knots/scores
    fallback: dict[str, Any]            # per DP-released discrete column: where unknown values (and gaps) go
    threshold: float                    # τ for categories of weight 1 (0.0 when there was no categorical query)
    threshold_delta: float              # δ the thresholding adds (0.0 when nothing could be thresholded)
    noisy_counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # per query, JSON-plain
    facts: list[dict[str, Any]] = field(default_factory=list)  # per query: how each fact was estimated
    budget: dict[str, Any] = field(default_factory=dict)       # share, noise (set by charged_release)
    extra: ExtraQuery | None = None     # the caller's own query, when charged_release was given one (not saved)

    def state_dict(self) -> dict[str, Any]:
        """Plain data (a resumed fit restores the release instead of drawing and charging it again)."""
        return {"schema": self.schema.to_json(), "numeric": self.numeric, "fallback": self.fallback,
                "threshold": self.threshold, "threshold_delta": self.threshold_delta,
                "noisy_counts": self.noisy_counts, "facts": self.facts, "budget": self.budget}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> DPRelease:
        return cls(schema=Schema.from_json(state["schema"], "released schema"), numeric=state["numeric"],
                   fallback=state["fallback"], threshold=float(state["threshold"]),
                   threshold_delta=float(state["threshold_delta"]), noisy_counts=state.get("noisy_counts", {}),
                   facts=state.get("facts", []), budget=state.get("budget", {}))

    def record(self) -> dict[str, Any]:
        """What the release says about itself, for the ledger's reader (the guarantee page, the
        model bundle): the budget and, per query, the facts, mechanism, noise and outcome. Holds
        no count and no value that is not in the released schema."""
        return {"budget": self.budget, "queries": self.facts}


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


def plan_statistics(schema: Schema, extra: float = 0.0) -> StatisticsPlan:
    """The queries for every non-public model column; a longitudinal group's columns pool into one.
    ``extra``: squared weight of the caller's own queries in the same mechanism."""
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
    # a target whose categories fit a flag domain is released whole: weighting it up would buy nothing
    thresholded = [schema.target] in plan["categorical"] and flag_domain(schema.column(schema.target).categories) is None
    return StatisticsPlan(**plan, target=schema.target if thresholded else None, extra=float(extra))


# -- is a useful release possible? (public: the plan, n and the noise only) ---------------------
def _thresholded(plan: StatisticsPlan) -> int:
    return sum(len(q) for q in plan.categorical)


def facts_limits(plan: StatisticsPlan, schema: Schema, n: int, threshold_delta: float,
                 fraction: float, target_fraction: float | None = None) -> dict[str, float]:
    """Per query that can fail, the largest noise_std at which ``n / fraction`` records (the
    target: ``n / target_fraction``) in one coarse bucket or one category clear the cut (see
    :mod:`clinsynth.privacy.facts_budget`). Flag domains are released whole and cannot fail;
    format queries degrade to "no evidence"."""
    limits: dict[str, float] = {}
    for columns in plan.numeric:
        kind = "datetime" if schema.column(columns[0]).kind == "datetime" else "number"
        limits[_query_label(schema, columns)] = value_limit(n, fraction, kind)
    for columns in plan.categorical:
        if flag_domain(schema.column(columns[0]).categories) is None:
            f = target_fraction if target_fraction is not None and columns == [plan.target] else fraction
            limits[_query_label(schema, columns)] = category_limit(n, f, plan.weight(columns), threshold_delta,
                                                                   _thresholded(plan))
    return limits


def check_useful(plan: StatisticsPlan, schema: Schema, n: int, noise_std: float, threshold_delta: float) -> None:
    """Refuse, before any value is read, when no useful release is possible: not even all the
    records in one coarse bucket or one category (the target: two classes of half the records)
    could be told from the noise."""
    limits = facts_limits(plan, schema, n, threshold_delta, USEFUL_FRACTION, USEFUL_TARGET_FRACTION)
    failing = {label: limit for label, limit in limits.items() if noise_std > limit}
    if not failing:
        return
    numbers = [q for q in failing if any(q == _query_label(schema, c) for c in plan.numeric)]
    categories = [q for q in failing if q not in numbers]
    parts = []
    if numbers:
        parts.append(f"too few records ({n:,}) for a DP estimate of column(s) {', '.join(numbers)} at this ε; "
                     "declare bounds public in the schema (\"public\": true with \"bounds\") or raise ε")
    for label in categories:
        parts.append(f"too few records ({n:,}) to release any category of column '{label}' at this ε; "
                     "declare its categories public in the schema (\"public\": true with \"categories\") or raise ε")
    raise FactsRefusal("; ".join(parts), min(failing.values()), before_reading=True)


# -- numeric queries ----------------------------------------------------------------------
def _iso_day(days: float) -> str:
    return pd.Timestamp(int(days) * DAY_NS, unit="ns").isoformat()


def _values(df: pd.DataFrame, spec: ColumnSpec) -> np.ndarray:
    """The encoder's own reading of a column (dates as days), NaN for missing."""
    return numeric_values(df[spec.name], "datetime" if spec.kind == "datetime" else "continuous")


def _histogram(df: pd.DataFrame, specs: list[ColumnSpec], edges: np.ndarray) -> np.ndarray:
    """Exact weighted counts: each record adds 1/k per observed value of the k query columns."""
    counts = np.zeros(edges.size - 1)
    for spec in specs:
        x = _values(df, spec)
        x = x[~np.isnan(x)]
        counts += np.bincount(bucket(edges, x), minlength=counts.size)
    return counts / len(specs)


class FrameReads:
    """Every read of the records this release makes, from a DataFrame in memory. An engine's table
    (``clinsynth.engines.duckdb_engine.DuckDBTable``) answers the same methods with GROUP BY
    queries, so the release — its noise, its charge, its post-processing — is one code path."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.columns = list(df.columns)
        self._after: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.df)

    def value_histogram(self, specs: list[ColumnSpec], edges: np.ndarray) -> np.ndarray:
        return _histogram(self.df, specs, edges)

    def format_histogram(self, specs: list[ColumnSpec], schema: Schema) -> np.ndarray:
        if id(schema) not in self._after:
            self._after[id(schema)] = schema._after_dropout(self.df) if schema.longitudinal else {}
        return format_histogram(self.df, specs, self._after[id(schema)])

    def observed_counts(self, columns: list[str]) -> tuple[dict[Any, float], float]:
        return _observed_counts(self.df, columns)

    def shared_ids(self, schema: Schema) -> list[Any]:
        from clinsynth.privacy.unit import shared_ids

        return shared_ids(self.df, schema)


def reads_of(data: Any) -> Any:
    """``data``'s reads: a DataFrame's (:class:`FrameReads`), or an engine table, which has them."""
    return FrameReads(data) if isinstance(data, pd.DataFrame) else data


def _numeric_query(df: Any, specs: list[ColumnSpec], noise_std: float, rng: np.random.Generator,
                   observed: tuple[float, float] | None = None
                   ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """One noisy value histogram pair (fine and coarse grid, :mod:`clinsynth.privacy.histograms`)
    and what it yields: per-column bounds, the shared encoder state, the report and the record.

    ``specs`` carry the released kind and decimals (bounds are rounded to them); ``observed`` is
    the format histogram's noisy count of observed cells and its sd (:func:`_observed_cells`).
    When no level locates any value, the column gets the public default by kind."""
    kind = "datetime" if specs[0].kind == "datetime" else "number"
    fine_edges, wide_edges = grid_edges(specs[0].kind), coarse_edges(specs[0].kind)
    noise = rng.normal(0.0, noise_std, fine_edges.size - 1 + wide_edges.size - 1)
    cut = fine_edges.size - 1
    w_c = coarse_weight(len(df), noise_std)
    w_f = math.sqrt(1.0 - w_c ** 2)
    fine = (w_f * df.value_histogram(specs, fine_edges) + noise[:cut]) / w_f
    wide = (w_c * df.value_histogram(specs, wide_edges) + noise[cut:]) / w_c
    sds = {"fine": noise_std / w_f, "coarse": noise_std / w_c}
    comp = locate(levels(specs[0].kind, fine, sds["fine"], wide, sds["coarse"]),
                  zero_spike(specs[0].kind, fine, sds["fine"]), observed)
    columns = [s.name for s in specs]
    record = {"columns": columns, "facts": "bounds and scaling",
              "mechanism": f"noisy histogram on public grids: fine ({step_label(specs[0].kind, 'fine', 1)} buckets) "
                           f"and coarse ({step_label(specs[0].kind, 'coarse', 1)})",
              "noise_sd": sds}
    if comp is None:
        (lo, hi), state = public_default(specs[0])
        bounds = {s.name: (lo, hi) for s in specs}
        record |= {"outcome": "public default", "detail": "no bucket of any grid cleared the noise: the wide "
                   "public range by kind, read from no record"}
        report = {"kind": kind, "columns": columns, "edges": [], "counts": [], "level": "public default"}
        return {"bounds": bounds, "state": state}, report, record
    outer = (float(comp.edges[0]), float(comp.edges[-1]))
    bounds = {s.name: widen(*comp.base_range, s, outer) for s in specs}
    state = composite_state(comp, *bounds[specs[0].name], kind=specs[0].kind, fine_counts=fine)
    outcome = "fine grid" if comp.base == step_label(specs[0].kind, "fine", 1) else "coarser grid"
    record |= {"outcome": outcome, "detail": f"buckets of {comp.base}"
               + (f", extended by buckets of {', '.join(comp.extended_by)}" if comp.extended_by else "")}
    report = {"kind": kind, "columns": columns, "edges": comp.edges.tolist(), "counts": comp.counts.tolist(),
              "noise_sd": comp.sd.tolist(), "level": comp.base, "extended_by": list(comp.extended_by)}
    if kind == "datetime":
        report["unit"] = "days since 1970-01-01"
    return {"bounds": bounds, "state": state}, report, record


def _bounds_for_spec(spec: ColumnSpec, bounds: tuple[float, float]) -> tuple[float, float] | tuple[str, str]:
    if spec.kind == "datetime":
        return _iso_day(bounds[0]), _iso_day(bounds[1])
    return bounds


# -- format queries -----------------------------------------------------------------------
def _observed_cells(noisy: np.ndarray, sd: float, n: int, scalar: bool) -> tuple[float, float]:
    """A format histogram's noisy count of observed cells and its sd. A scalar column's cells are
    one per record, so it is ``n`` (public) less the noisy missing count, at one count's sd; a
    group's cells after dropout are not counted, so there it is the sum of the observed classes."""
    if scalar:
        return n - float(noisy[0]), sd
    return float(noisy[1:].sum()), sd * math.sqrt(noisy.size - 1)


def _format_query(df: Any, specs: list[ColumnSpec], noise_std: float, rng: np.random.Generator,
                  schema: Schema, scalar: bool, may_be_flag: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """One format histogram at :data:`FORMAT_WEIGHT` (``noise_std`` is the release's; the counts
    come back in cells, with noise sd ``noise_std / FORMAT_WEIGHT``) and the facts it gives.
    ``scalar``: one column outside any group (one cell per record); ``may_be_flag``: a scalar
    column that may be read as a 0/1 flag."""
    dates = specs[0].kind == "datetime"
    weighted = FORMAT_WEIGHT * df.format_histogram(specs, schema)
    noisy = (weighted + rng.normal(0.0, noise_std, weighted.size)) / FORMAT_WEIGHT
    facts = decide_format(noisy, noise_std / FORMAT_WEIGHT, dates, may_be_flag)
    facts["observed"] = _observed_cells(noisy, noise_std / FORMAT_WEIGHT, len(df), scalar=scalar)
    report = {"kind": "format", "columns": [s.name for s in specs],
              "classes": list(DATE_FORMATS if dates else NUMBER_FORMATS), "counts": noisy.tolist(),
              "noise_sd": noise_std / FORMAT_WEIGHT,
              **{k: v for k, v in facts.items() if k not in ("fallback", "observed")}}
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


def _categorical_query(df: Any, columns: list[str], domain: tuple[Category, ...] | None,
                       noise_std: float, tau: float, rng: np.random.Generator) -> tuple[dict[Any, float], float]:
    """Released categories with their noisy counts (the flag domain whole, other values above τ),
    and the noisy count of missing cells; ``noise_std`` is this query's own sd."""
    counts, missing = df.observed_counts(columns)
    public = list(whole_labels(list(domain)) if domain else ())
    others = sorted((v for v in counts if v not in set(public)), key=lambda v: (type(v).__name__, str(v)))
    candidates = public + others
    noisy = np.array([missing] + [counts.get(v, 0.0) for v in candidates]) + rng.normal(0.0, noise_std, len(candidates) + 1)
    kept = {v: float(n) for i, (v, n) in enumerate(zip(candidates, noisy[1:])) if i < len(public) or n > tau}
    return kept, float(noisy[0])


_CATEGORY_FIX = "declare its categories public in the schema (\"public\": true with \"categories\") or raise ε"


def _rest_noise(n: float, released: dict[Any, float], missing_count: float, classes: int, weight: float,
                threshold_delta: float, n_thresholded: int) -> float | None:
    """The largest noise_std at which the records no released category holds (n less the noisy
    counts released: post-processing) would clear τ, split into ``classes`` categories; None if
    at no noise. What names the smallest ε when a target's classes could not be released."""
    rest = (n - sum(released.values()) - max(missing_count, 0.0)) / classes
    limit = category_limit(rest, 1.0, weight, threshold_delta, n_thresholded)
    return limit if limit > 0 else None


def _category_release(spec: ColumnSpec, schema: Schema, kept: list[Category], released: dict[Any, float],
                      missing_count: float, n: int, weight: float, threshold_delta: float, n_thresholded: int
                      ) -> tuple[list[Category], str, str | None, tuple[str, float | None] | None]:
    """What a categorical query's noisy counts give: (categories, outcome, warning, problem).

    The target needs two released classes, or no model can be trained (a problem: the release is
    refused). Another column keeps what clears τ: with one category, rarer values (if any: the
    release cannot tell) are written as it — or as missing when the column has missing values — and
    the steward is warned; a text column with none gets the one category :data:`RARE_LABEL`."""
    if spec.name == schema.target and len(kept) < 2:
        what = (f"only one category ({kept[0]!r}) of the target '{spec.name}' is" if kept
                else f"no category of the target '{spec.name}' is")
        # how the unreleased records split is unknown: assuming two classes, not one, keeps the ε named
        # from promising too little (sklearn's iris, 3 × 40: one class released at ε = 1.6, "1.3 would work")
        needed = _rest_noise(n, released, missing_count, 2, weight, threshold_delta, n_thresholded)
        return kept, "refused", None, (f"{what} common enough to release at this ε; {_CATEGORY_FIX}", needed)
    if kept and (len(kept) > 1 or flag_domain(kept) is not None):
        return kept, "released", None, None
    if kept:
        return kept, "one category", (
            f"column '{spec.name}': only {kept[0]!r} is common enough to release at this ε; rarer values, if any, "
            f"become {kept[0]!r} (or missing, where the column has missing values) — declare its categories public "
            "to keep them"), None
    if all(isinstance(c, str) for c in spec.categories or []):
        return [RARE_LABEL], "suppressed", (
            f"column '{spec.name}': no value is common enough to release at this ε; every value becomes "
            f"{RARE_LABEL!r} — declare its categories public to keep them"), None
    needed = _rest_noise(n, released, missing_count, 1, weight, threshold_delta, n_thresholded)
    return kept, "refused", None, (f"no category of column '{spec.name}' is common enough to release at this ε; "
                                   f"{_CATEGORY_FIX}", needed)


# -- the release --------------------------------------------------------------------------
def _check_arguments(df: Any, plan: StatisticsPlan, noise_std: float, threshold_delta: float) -> None:
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
                       rng: np.random.Generator, extra: float = 0.0,
                       never_flags: Collection[str] = ()) -> DPRelease:
    """Run the one Gaussian mechanism of :func:`plan_statistics`'s queries and post-process it.

    ``noise_std`` is the sd added to every weighted count (a query of weight w has noise sd
    ``noise_std / w`` in records); choosing it (and charging the ledger, together with
    ``threshold_delta`` and the ``extra`` queries the caller runs in the same mechanism) is the
    caller's job. Raises :class:`FactsRefusal` — before reading any value — when ``len(df)``
    records are too few for a useful release at this noise (:func:`check_useful`), and when the
    target's classes cannot be released. Columns that degrade instead are in :attr:`DPRelease.facts`
    and, where the steward should know, warned about (:class:`~clinsynth.errors.ReleaseWarning`).
    ``never_flags``: columns the caller built and knows are not 0/1 flags (a gap between visits is
    at least one unit even when every observed gap is 1), so their format never reads as one.
    """
    from clinsynth.errors import ReleaseWarning

    df = reads_of(df)
    plan = plan_statistics(schema, extra)
    _check_arguments(df, plan, noise_std, threshold_delta)
    check_useful(plan, schema, len(df), noise_std, threshold_delta)
    rngs = iter(_query_rngs(rng, plan.n_queries))
    grouped = {c for g in schema.longitudinal for c in g.columns}
    blanks = {c for _, groups in schema.timelines() if all(g.dropout for g in groups) for g in groups for c in g.columns}
    updates: dict[str, dict[str, Any]] = {}
    fallback: dict[str, Any] = {}
    observed: dict[tuple[str, ...], tuple[float, float]] = {}
    report: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    for columns in plan.format:  # first: the bounds are rounded to the released precision
        specs = [schema.column(c) for c in columns]
        scalar = len(columns) == 1 and columns[0] not in grouped
        facts, report["format:" + _query_label(schema, columns)] = _format_query(
            df, specs, noise_std, next(rngs), schema, scalar=scalar, may_be_flag=scalar and columns[0] not in never_flags)
        records.append({"columns": columns, "facts": "kind, decimals, missing values",
                        "mechanism": "noisy format histogram", "noise_sd": noise_std / FORMAT_WEIGHT,
                        "outcome": facts["kind"] if facts["kind"] == "binary" or facts["decimals"] is not None
                        else f"{facts['kind']}, no evidence of a precision: values kept unrounded"})
        observed[tuple(columns)] = facts["observed"]
        for spec in specs:
            if "fallback" in facts:
                fallback[spec.name] = facts["fallback"]
            updates[spec.name] = {"kind": facts["kind"], "decimals": facts["decimals"], "missing": facts["missing"],
                                  "categories": facts.get("categories"), "bounds": None, "public": False,
                                  "dtype": released_dtype(spec, facts["kind"], facts["missing"], facts.get("categories"),
                                                          blanks=spec.name in blanks)}
    numeric = {s.name: public_state(*numeric_bounds(s)) for s in schema.model_columns
               if s.kind in NUMERIC_KINDS and not _needs_numeric(s, schema)}
    for columns in plan.numeric:
        specs = [schema.column(c).model_copy(update=updates.get(c, {})) for c in columns]
        query_rng = next(rngs)
        if specs[0].kind in DISCRETE_KINDS:  # released as a 0/1 flag: its value histogram is not needed
            continue
        result, report[_query_label(schema, columns)], record = _numeric_query(df, specs, noise_std, query_rng,
                                                                               observed.get(tuple(columns)))
        records.append(record)
        if record["outcome"] == "public default":
            notes.append(f"column(s) {', '.join(columns)}: no value could be located at this ε; their bounds are the "
                         f"wide public default for their kind — declare bounds public, or raise ε, to keep their scale")
        for spec in specs:
            numeric[spec.name] = dict(result["state"])
            updates.setdefault(spec.name, {}).update(
                bounds=_bounds_for_spec(spec, result["bounds"][spec.name]), public=False)

    n_thresholded = _thresholded(plan)
    tau = category_threshold(noise_std, threshold_delta, n_thresholded) if n_thresholded else 0.0
    problems: list[tuple[str, float | None]] = []
    for columns in plan.categorical:
        spec = schema.column(columns[0])
        domain = flag_domain(spec.categories)
        weight = plan.weight(columns)
        sd = noise_std / weight
        tau_q = category_threshold(sd, threshold_delta, n_thresholded)
        released, missing_count = _categorical_query(df, columns, domain, sd, tau_q, next(rngs))
        kept, outcome, note, problem = _category_release(
            spec, schema, sort_categories(list(released)), released, missing_count, len(df), weight,
            threshold_delta, n_thresholded)
        records.append({"columns": columns, "facts": "categories, missing values",
                        "mechanism": "flag domain (public) with noisy counts" if domain is not None
                        else f"noisy counts, kept above τ = {tau_q:.3g}", "noise_sd": sd, "outcome": outcome})
        if problem:
            problems.append(problem)
            continue
        if note:
            notes.append(note)
        # the target has no blank (Schema.validate refuses one): its missing count is drawn, in the
        # noise order, but never read
        missing = "indicator" if spec.name != schema.target and keeps_missing(missing_count, sd) else "none"
        report[_query_label(schema, columns)] = {
            "kind": "categorical", "columns": columns, "categories": kept,
            "counts": [released.get(c, 0.0) for c in kept], "flag_domain": domain is not None,
            "missing_count": missing_count, "missing": missing, "threshold": tau_q, "noise_sd": sd}
        for name in columns:
            fallback[name] = max(kept, key=lambda c: released.get(c, 0.0))
            kind = "binary" if len(kept) == 2 else "categorical"
            updates[name] = {"categories": kept, "public": False, "kind": kind, "missing": missing,
                             "dtype": released_dtype(schema.column(name), kind, missing, kept)}
    if problems:
        needed = [p[1] for p in problems]
        raise FactsRefusal("; ".join(p[0] for p in problems), None if None in needed else min(needed))
    for note in notes:
        warnings.warn(note, ReleaseWarning, stacklevel=2)
    return DPRelease(schema=_updated_schema(schema, updates), numeric=numeric, fallback=fallback,
                     threshold=tau, threshold_delta=threshold_delta if n_thresholded else 0.0,
                     noisy_counts=report, facts=records)


def charged_release(df: pd.DataFrame, schema: Schema, ledger: Any, share: float, rng: np.random.Generator,
                    extra: float = 0.0, extra_purpose: str = "", never_flags: Collection[str] = ()) -> DPRelease:
    """``release_statistics`` charged to ``ledger`` first (nothing when the schema declares every
    fact public and there is no ``extra`` query). The facts get ``share`` of the budget, raised for
    a table with few records per column (:mod:`clinsynth.privacy.facts_budget`); categorical
    thresholding spends δ/10 outright. A refusal names the smallest ε that would work, computed
    with the same rule; a table whose rows share a person (an identifier column repeats) is refused
    unless the schema declares the row the privacy unit (:mod:`clinsynth.privacy.unit`).
    ``release.budget`` records the share and noise. The caller's extra query (squared weight
    ``extra``, named by ``extra_purpose``) is charged here too and answered through
    ``release.extra`` (:class:`ExtraQuery`), with this release's generator ``rng``. The charge
    protects the ledger's unit: on a patient ledger the caller promises one row per patient."""
    from clinsynth.privacy.ledger import Charge
    from clinsynth.privacy.unit import check_privacy_unit

    df = reads_of(df)
    check_privacy_unit(df, schema)  # a per-row guarantee on rows that share a person is refused first
    plan = plan_statistics(schema, extra)
    n = len(df)
    threshold_delta = ledger.delta / 10 if plan.categorical else 0.0
    comfort = min(facts_limits(plan, schema, n, threshold_delta, COMFORT_FRACTION).values(), default=math.inf)
    budget = facts_noise(plan.sensitivity, comfort, ledger.epsilon, ledger.delta, share)
    purpose = plan.purpose() + extra_purpose + f"; {budget.share:.0%} of the budget" + (
        f" (raised from {share:.0%}: {n:,} records for {plan.n_queries} queries)" if budget.share > share else "")
    try:
        check_useful(plan, schema, n, budget.noise_std, threshold_delta)
        if plan.n_queries or extra:
            ledger.charge(Charge("gaussian", purpose, noise_multiplier=budget.noise_multiplier, sample_rate=1.0,
                                 steps=1, delta=threshold_delta, unit=getattr(ledger, "unit", "record")))
        release = release_statistics(df, schema, budget.noise_std, threshold_delta, rng, extra, never_flags)
    except FactsRefusal as refusal:
        needed = refusal.needed_noise_std or 0.0
        if not refusal.before_reading:  # this noise failed: what would work has clearly less (a fifth)
            needed = min(needed, budget.noise_std / 1.25)
        eps = smallest_epsilon(plan.sensitivity, comfort, needed, ledger.delta, share, ledger.accountant, threshold_delta)
        hint = (f"the smallest ε that would work is {eps:g}" if eps is not None
                else "no ε up to 100 would: declare them public")
        if eps is not None and refusal.before_reading and plan.target is not None:
            hint += " for a target of two even classes (more classes, or a rare one, need more)"
        raise FactsRefusal(f"{refusal} (ε = {ledger.epsilon:g} here; {hint})", refusal.needed_noise_std) from None
    sens2 = plan.sensitivity ** 2 or 1.0
    for record in release.facts:  # each query's part of the facts' μ² share: its cost
        w2 = (FORMAT_WEIGHT ** 2 if record["facts"].startswith("kind") else
              plan.weight(record["columns"]) ** 2 if record["facts"].startswith("categories") else 1.0)
        record["budget_share"] = budget.share * w2 / sens2
    release.budget = {"share": budget.share, "base_share": share, "noise_multiplier": budget.noise_multiplier,
                      "noise_std": budget.noise_std, "target_weight": plan.target_weight, "records": n}
    if extra:
        release.extra = ExtraQuery(budget.noise_std, math.sqrt(extra), rng)
    return release


def _updated_schema(schema: Schema, updates: dict[str, dict[str, Any]]) -> Schema:
    """A validated copy of ``schema`` with the released values written in."""
    data = schema.model_dump()
    data["columns"] = [{**c, **updates.get(c["name"], {})} for c in data["columns"]]
    return Schema.model_validate(data)
