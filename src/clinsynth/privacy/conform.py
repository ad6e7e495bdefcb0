"""Raw training records fitted into a released schema, record by record, before encoding.

Post-processing of a DP release (:mod:`clinsynth.privacy.statistics`): a fixed function of each
record given the release, so the DP training that follows covers it.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clinsynth.data.transforms import numeric_bounds
from clinsynth.privacy.statistics import DAY_NS, RARE_LABEL
from clinsynth.schema import DISCRETE_KINDS, ColumnSpec, parse_datetimes, wall_clock

if TYPE_CHECKING:
    from clinsynth.privacy.statistics import DPRelease


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
    if spec.missing == "indicator" and spec.categories != [RARE_LABEL]:
        return s.mask(unknown)
    return s.mask(unknown, fallback)


def gap_value(spec: ColumnSpec, release: DPRelease, s: pd.Series) -> Any:
    """What fills a gap where the released schema has no room for one: the released centre of a
    number (at its precision) or date, the most common released category."""
    if spec.kind in DISCRETE_KINDS:
        return release.fallback[spec.name]
    loc = release.numeric[spec.name]["loc"]
    if spec.kind == "datetime":
        ts = pd.Timestamp(round(loc * DAY_NS), unit="ns")
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
    return s.mask(gaps, gap_value(spec, release, s))


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
