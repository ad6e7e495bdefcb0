"""Column codecs: one column (or one visit timeline) to spans of the encoded vector, and back.

One description drives both directions (after CTGAN's ``SpanInfo``): each column contributes
*spans* of the encoded vector, each either ``linear`` (a number) or ``softmax`` (a one-hot choice:
a category, "missing or not", a dropout visit). A generator applies activations span by span;
``decode`` walks the same spans back, vectorised per column, and always returns values the schema
allows (categories, bounds, integer rounding, missing codes).

Missingness is data, not noise to drop: a column whose policy is ``indicator`` gets a
two-way span (observed / missing); longitudinal groups sharing visits get one *dropout* span (the
last visit attended), and decoding blanks every later visit so a synthetic participant never comes
back after leaving. :class:`~clinsynth.data.transforms.TableEncoder` puts the codecs together;
the last steps of decoding (text, rounding, the frame) go through :mod:`clinsynth.data.columns`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import ndtri

from clinsynth.data.columns import PLAIN, Rounding, column_paths
from clinsynth.errors import SchemaError
from clinsynth.schema import ColumnSpec, LongitudinalGroup, last_observed_visit, parse_datetimes, wall_clock

Activation = Literal["linear", "softmax"]
NumericTransform = Literal["standard", "quantile"]
NUMERIC_TRANSFORMS: tuple[str, ...] = ("standard", "quantile")
_N_KNOTS = 1000
_P_EPS = 1e-6
_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Span:
    """A slice ``[start, start + dim)`` of the encoded vector and how a network should emit it."""

    name: str
    dim: int
    activation: Activation
    start: int = 0

    @property
    def stop(self) -> int:
        return self.start + self.dim


# ---------------------------------------------------------------------------------------
class NumericCodec:
    """Continuous, integer and datetime columns: a scaled value plus an optional missing span."""

    def __init__(self, spec: ColumnSpec, transform: NumericTransform = "standard"):
        self.spec = spec
        self.transform = transform
        self.state: dict[str, Any] | None = None

    @property
    def has_missing(self) -> bool:
        return self.spec.missing == "indicator"

    def spans(self) -> list[tuple[str, int, Activation]]:
        out: list[tuple[str, int, Activation]] = [(self.spec.name, 1, "linear")]
        if self.has_missing:
            out.append((f"{self.spec.name}:missing", 2, "softmax"))
        return out

    def _raw(self, s: pd.Series) -> np.ndarray:
        return numeric_values(s, self.spec.kind)

    def fit(self, s: pd.Series) -> NumericCodec:
        x = self._raw(s)
        x = x[np.isfinite(x)]
        if x.size == 0:
            raise SchemaError(f"column '{self.spec.name}' has no observed values to learn from")
        if self.transform == "quantile":
            values, counts = np.unique(x, return_counts=True)
            if values.size > _N_KNOTS:
                values = np.unique(np.quantile(x, np.linspace(0, 1, _N_KNOTS)))
                probs = np.linspace(_P_EPS, 1 - _P_EPS, values.size)
            else:
                cum = np.cumsum(counts)
                probs = (cum - counts / 2) / cum[-1]
            if values.size == 1:
                values, probs = np.repeat(values, 2), np.array([0.25, 0.75])
            # piecewise linear between (knot, normal score) pairs: exact inverse, no ndtr at sampling time
            self.state = {"knots": values.tolist(), "scores": ndtri(np.clip(probs, _P_EPS, 1 - _P_EPS)).tolist()}
        else:
            scale = float(x.std())
            self.state = {"loc": float(x.mean()), "scale": scale if scale > 0 else 1.0}
        return self

    def _table(self) -> tuple[np.ndarray, np.ndarray, PiecewiseLinear]:
        """The quantile knots, normal scores and inverse map, converted once from the JSON state."""
        assert self.state is not None
        if getattr(self, "_cached", (None,))[0] is not self.state:
            knots = np.asarray(self.state["knots"], float)
            scores = np.asarray(self.state["scores"], float)
            self._cached = (self.state, knots, scores, PiecewiseLinear(scores, knots))
        return self._cached[1], self._cached[2], self._cached[3]

    def encode_values(self, x: np.ndarray) -> np.ndarray:
        """Observed numbers (column units; days since 1970 for dates) in encoded units."""
        assert self.state is not None
        if self.transform == "quantile":
            knots, scores, _ = self._table()
            return np.interp(x, knots, scores)
        return (x - self.state["loc"]) / self.state["scale"]

    def _column_units(self, value: np.ndarray, scaled: bool, out: np.ndarray | None) -> np.ndarray:
        """``value`` in column units as float64, written to ``out`` (a fresh array when None; ``value``
        itself is written to only when it is ``out``). Values already in column units need no fitted
        state (a caller may use an unfitted codec just to round, bound and type them)."""
        out = np.empty(len(value)) if out is None else out
        if not scaled:
            if out is not value:
                np.copyto(out, value)
            return out
        assert self.state is not None
        if self.transform == "quantile":
            np.copyto(out, value)
            return self._table()[2](out, out=out)
        np.multiply(value, self.state["scale"], out=out, dtype=np.float64)
        out += self.state["loc"]
        return out

    @functools.cached_property
    def _rounding(self) -> Rounding:
        """:func:`decode_bounds` and the rounding, worked out once per codec (decoding runs per draw)."""
        lo, hi = decode_bounds(self.spec) if self.spec.bounds is not None else (-np.inf, np.inf)
        return Rounding(lo, hi, 0 if self.spec.kind == "integer" else self.spec.decimals)

    def encode(self, s: pd.Series) -> np.ndarray:
        x = self._raw(s)
        miss = ~np.isfinite(x)
        z = np.where(miss, 0.0, self.encode_values(np.where(miss, 0.0, x)))
        if not self.has_missing:
            return z[:, None]
        return np.column_stack([z, ~miss, miss]).astype(float)

    def affine(self) -> tuple[float, float] | None:
        """(scale, loc) when the encoding is affine (column = scale · encoded + loc), else None.

        A model that draws values piecewise-linearly can fold this in and hand ``decode`` column
        units (``scaled=False``), sparing two passes and a copy per column."""
        assert self.state is not None
        return None if self.transform == "quantile" else (self.state["scale"], self.state["loc"])

    def decode(self, value: np.ndarray, missing_code: np.ndarray | None = None, blank: np.ndarray | None = None,
               scaled: bool = True, *, out: np.ndarray | None = None) -> pd.Series | np.ndarray:
        """Values back to the column; ``missing_code`` nonzero marks missing, ``blank`` after-dropout.

        ``scaled=False``: ``value`` is in column units already. The numbers go to ``out`` (float64,
        one per row; a fresh array when None): a row of the frame's block. ``value`` is written to
        only when it is ``out`` (a caller decoding its own buffer in place)."""
        if self.spec.kind == "datetime":
            return self._dates(self._column_units(value, scaled, None), missing_code, blank)
        x = self._column_units(value, scaled, out)
        column_paths().finish_numeric(x, self._rounding, missing_code, blank)
        return _restore_numeric_dtype(x, self.spec.dtype)

    def _dates(self, x: np.ndarray, missing_code: np.ndarray | None, blank: np.ndarray | None) -> Any:
        """Days since 1970 (``x``, overwritten) to the column's dates, NaT where missing or blank."""
        spec = self.spec
        PLAIN.finish_numeric(x, self._rounding, None, None)
        missing = missing_code.astype(bool) if missing_code is not None else None
        if blank is not None:
            missing = blank if missing is None else np.logical_or(missing, blank, out=missing)
        unit_ns = _DAY_NS if spec.decimals == 0 else 10**9
        ns = np.round(x * _DAY_NS / unit_ns) * unit_ns
        ts = pd.to_datetime(ns.astype("int64"), unit="ns")
        zone = _datetime_zone(spec.dtype)
        if spec.dtype and spec.dtype.startswith("datetime64[") and "," not in spec.dtype:
            ts = ts.astype(spec.dtype)  # the input's resolution: pandas 3 reads dates as datetime64[us]
        elif zone is not None:  # wall-clock times back into their zone (see schema.wall_clock)
            ts = localize(ts, spec.dtype)
            return pd.Series(ts).mask(missing).array if missing is not None and missing.any() else ts.array
        return pd.Series(ts).mask(missing).to_numpy() if missing is not None and missing.any() else ts.to_numpy()


def _datetime_zone(dtype: str | None) -> Any:
    """The zone of a zone-aware datetime dtype string (``datetime64[us, Europe/Paris]``), else None."""
    if not dtype or "," not in dtype:
        return None
    try:
        return getattr(pd.api.types.pandas_dtype(dtype), "tz", None)
    except TypeError:
        return None


def localize(ts: pd.DatetimeIndex, dtype: str) -> pd.DatetimeIndex:
    """Naive wall-clock times as the zone-aware ``dtype``: a time a DST change skips moves forward
    past the gap, a time it repeats is read as standard time, so every row gets a valid time."""
    target = pd.api.types.pandas_dtype(dtype)
    ts = ts.as_unit(target.unit)
    return ts.tz_localize(target.tz, ambiguous=np.zeros(len(ts), dtype=bool), nonexistent="shift_forward")


class PiecewiseLinear:
    """``np.interp(x, xp, fp)`` for a fixed increasing ``xp``, several times faster on unsorted x.

    A uniform grid of buckets over ``xp`` gives each point its segment in a few vector steps
    instead of a binary search per point; the value is the same segment formula, so knots map
    exactly onto their values (the encoders' round trip depends on that).
    """

    def __init__(self, xp: np.ndarray, fp: np.ndarray, buckets: int = 4096):
        self.xp, self.fp = np.asarray(xp, float), np.asarray(fp, float)
        m = self.xp.size
        self.lo, self.hi = self.xp[0], self.xp[-1]
        self.buckets = buckets
        self.scale = buckets / (self.hi - self.lo)
        self.slope = np.diff(self.fp) / np.diff(self.xp)
        edges = self.lo + np.arange(buckets) / self.scale
        self.first = np.clip(np.searchsorted(self.xp, edges, side="right") - 1, 0, m - 2)
        last = np.clip(np.searchsorted(self.xp, edges + 1 / self.scale, side="right") - 1, 0, m - 2)
        self.steps = int((last - self.first).max(initial=0))

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Interpolate at ``x`` (left untouched unless it is ``out``, float64, written and returned):
        the same values as ``np.interp(x, xp, fp)``."""
        xc = np.clip(x, self.lo, self.hi, out=out)
        b = ((xc - self.lo) * self.scale).astype(np.intp)
        np.minimum(b, self.buckets - 1, out=b)
        k = self.first[b]
        for _ in range(self.steps):
            k += xc >= self.xp[k + 1]
            np.minimum(k, self.xp.size - 2, out=k)
        top = xc >= self.hi
        xc -= self.xp[k]
        xc *= self.slope[k]
        xc += self.fp[k]
        xc[top] = self.fp[-1]
        return xc


def decode_bounds(spec: ColumnSpec) -> tuple[float, float]:
    """The bounds decoded values are clipped to before rounding: the schema's, moved inward onto
    the rounding grid (whole numbers for integers, multiples of 10^-decimals), so that rounding a
    clipped value cannot take it outside them (bounds 2.42 with decimals 0 gave 2.0)."""
    lo, hi = numeric_bounds(spec)
    digits = 0 if spec.kind == "integer" else spec.decimals
    if digits is None:
        return lo, hi
    factor = 10.0 ** digits

    def onto_grid(bound: float, inward: Any) -> float:
        k = bound * factor
        nearest = round(k)
        # a bound on the grid up to float error (float32 holds 128.12 as 128.11999…) stays where it is
        return (nearest if abs(k - nearest) <= 1e-6 * max(1.0, abs(k)) else inward(k)) / factor

    inner_lo, inner_hi = onto_grid(lo, math.ceil), onto_grid(hi, math.floor)
    return (inner_lo, inner_hi) if inner_lo <= inner_hi else (lo, hi)


def datetime_days(value: Any) -> float:
    """A date or timestamp as days since 1970-01-01, the scale numeric codecs work in (a time with
    a zone or offset on its wall clock, as :func:`numeric_values` reads zone-aware columns)."""
    ts = pd.Timestamp(value)
    return (ts.tz_localize(None) if ts.tz is not None else ts).value / _DAY_NS


def numeric_bounds(spec: ColumnSpec) -> tuple[float, float]:
    """A numeric column's bounds as numbers (days since 1970 for dates), as its values are encoded."""
    lo, hi = spec.bounds
    if spec.kind == "datetime":
        return datetime_days(lo), datetime_days(hi)
    return float(lo), float(hi)


def numeric_values(s: pd.Series, kind: str) -> np.ndarray:
    """A numeric column as float64 with NaN for missing; dates (kind ``datetime``) as days since
    1970. The one reading of numbers that encoders, DP statistics and fidelity metrics share."""
    if kind == "datetime":
        ts = wall_clock(parse_datetimes(s)).astype("datetime64[ns]")  # a zone's local time (see wall_clock)
        out = ts.to_numpy().astype("int64").astype(float) / _DAY_NS
        out[ts.isna().to_numpy()] = np.nan
        return out
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _restore_numeric_dtype(x: np.ndarray, dtype: str | None) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """``x`` (float64, NaN for missing) in the input's dtype: nullable types get <NA>; numpy ints
    cannot hold NaN, so a column with missing values stays float64."""
    if not dtype or dtype == "float64":
        return x
    try:
        if dtype.startswith(("Int", "UInt", "Float")):
            return pd.array(x, dtype=dtype)
        if not dtype.startswith("float") and np.isnan(x).any():
            return x
        return x.astype(dtype)
    except (TypeError, ValueError):
        return x


class CategoricalCodec:
    """Binary and categorical columns: a softmax over the categories (+ a slot for missing)."""

    def __init__(self, spec: ColumnSpec):
        self.spec = spec
        self.categories = list(spec.categories or [])
        self.state: dict[str, Any] | None = {}

    @property
    def has_missing(self) -> bool:
        return self.spec.missing == "indicator"

    @property
    def n_levels(self) -> int:
        return len(self.categories) + int(self.has_missing)

    def spans(self) -> list[tuple[str, int, Activation]]:
        return [(self.spec.name, self.n_levels, "softmax")]

    def fit(self, s: pd.Series) -> CategoricalCodec:
        return self

    def codes(self, s: pd.Series) -> np.ndarray:
        """Category index per row; the missing slot is the last index."""
        codes = pd.Index(self.categories).get_indexer(s)
        isna = s.isna().to_numpy()
        unknown = (codes < 0) & ~isna
        if unknown.any():
            bad = s[unknown].iloc[0]
            raise SchemaError(f"column '{self.spec.name}' has value {bad!r} not in its categories {self.categories}")
        if isna.any():
            if not self.has_missing:
                raise SchemaError(f"column '{self.spec.name}' has missing values but its missing policy is 'none'")
            codes = np.where(isna, len(self.categories), codes)
        return codes

    def encode(self, s: pd.Series) -> np.ndarray:
        out = np.zeros((len(s), self.n_levels))
        out[np.arange(len(s)), self.codes(s)] = 1.0
        return out

    def labels(self, codes: np.ndarray) -> Any:
        """Codes back to the column's values, in the input's dtype where it can hold them."""
        n_cats = len(self.categories)
        missing = codes == n_cats if self.has_missing else None
        if missing is not None and not missing.any():
            missing = None
        dtype = self.spec.dtype or "object"
        if dtype == "object" and self._text_only and pd.get_option("future.infer_string"):
            dtype = "str"  # what a DataFrame makes of Python strings anyway, built in Arrow without them
        if dtype in ("str", "string"):
            return column_paths().text(codes, self._text_labels, missing,
                                       pd.StringDtype("pyarrow", na_value=np.nan) if dtype == "str" else dtype)
        if dtype == "category":  # a pandas categorical stays one: codes as they are, no labels built
            index = np.minimum(codes, n_cats - 1) if missing is None else np.where(missing, -1, codes)
            return pd.Categorical.from_codes(index, categories=self.categories)
        lookup = np.array(self.categories + [None], dtype=object)
        if dtype == "boolean" or dtype.startswith(("Int", "UInt", "Float")):
            return pd.array(lookup[codes], dtype=dtype)  # nullable: missing as <NA>
        if dtype.startswith(("int", "uint", "float", "bool")):
            typed = np.asarray(self.categories)[np.minimum(codes, n_cats - 1)]
            if missing is None:
                return typed.astype(dtype)
            return np.where(missing, np.nan, typed.astype(dtype if dtype.startswith("float") else float))
        return lookup[codes]

    @property
    def _text_only(self) -> bool:
        return bool(self.categories) and all(isinstance(c, str) for c in self.categories)

    @functools.cached_property
    def _text_labels(self) -> tuple[str, ...]:
        """The categories as text, made once (the fast path keeps byte tables per label tuple)."""
        return tuple(str(c) for c in self.categories)

    def decode(self, code: np.ndarray) -> Any:
        return self.labels(code)


class TimelineCodec:
    """One dropout variable for the longitudinal groups that share a visit list.

    The encoded value is the last visit with any observed measure (0 = none observed), as a
    softmax over ``n_visits + 1`` states; decoding turns it into a mask of visits to blank.
    """

    def __init__(self, groups: list[LongitudinalGroup]):
        self.groups = groups
        self.visits = list(groups[0].visits)
        self.name = "dropout:" + "+".join(g.name for g in groups)

    def spans(self) -> list[tuple[str, int, Activation]]:
        return [(self.name, len(self.visits) + 1, "softmax")]

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        last = last_observed_visit(df, self.groups)
        out = np.zeros((len(df), len(self.visits) + 1))
        out[np.arange(len(df)), last] = 1.0
        return out

    def blank_mask(self, last: np.ndarray) -> np.ndarray:
        """(n_visits, n) boolean: True where the visit falls after the participant left (visit-major:
        each visit's row is contiguous, as the columns decoded from it are)."""
        return np.arange(1, len(self.visits) + 1)[:, None] > last[None, :]


def synthetic_ids(n: int, prefix: str = "syn-", start: int = 0) -> pd.api.extensions.ExtensionArray:
    """Fresh identifiers ``syn-000001``…, built in Arrow (fast); never a real participant's id."""
    pool = column_paths().memory_pool
    numbers = pc.cast(pa.array(np.arange(start + 1, start + n + 1, dtype=np.int64), memory_pool=pool),
                      pa.string(), memory_pool=pool)
    padded = pc.utf8_lpad(numbers, width=6, padding="0", memory_pool=pool)
    ids = pc.binary_join_element_wise(prefix, padded, "", memory_pool=pool)
    return pd.array(ids, dtype=pd.StringDtype("pyarrow", na_value=np.nan))


