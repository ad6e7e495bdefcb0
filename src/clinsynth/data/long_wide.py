"""Long ↔ wide for visits on a regular grid: one row per visit ↔ one row per patient.

clinsynth reads a longitudinal table in two shapes: long (one row per visit, the patients
family) and wide (one row per patient with ``<measure>_<visit>`` columns such as ``sbp_m00 …
sbp_m27``, which :func:`clinsynth.schema.detect_longitudinal` groups for the tables family).
When visits follow a regular schedule both shapes hold the same information, and this module
converts between them.

:func:`to_wide` assigns every visit to the nearest grid time:

* a visit farther than ``tolerance`` from every grid time (before the grid, after it, or
  between two grid times when the tolerance is small) is **off grid** and dropped;
* a visit exactly halfway between two grid times goes to the **earlier** grid time;
* two visits of one patient that land on the same grid time: the one **nearer** to it is kept,
  and between equally near ones the **earlier** visit; the other is dropped.

The number of dropped visits is in ``wide.attrs["dropped_visits"]``; ``strict=True`` refuses
to drop any. On :func:`~clinsynth.data.long_trial.simulate_long_trial` (5,000 patients) with the
grid 0, 90, …, 1710 and the default tolerance (45 days), 2,997 of 57,546 visits (5.2 %) are
dropped: 2,993 (mostly the unscheduled ones) share a grid time with a nearer visit, 4 lie past the grid.
A grid time without a visit gives NaN in every visit column of that patient.
Per-patient columns (constant within every patient, e.g. arm, sex, baseline age, outcome)
appear once; the other columns become one column per grid time, named
``<column>_<label>``. Labels default to months, ``m00, m03, m06, …`` (grid days / 30.4375,
rounded; the trial's convention), or days, ``d000, d090, …`` when month labels would collide.

:func:`to_long` is the inverse: one row per (patient, grid time) with any observed visit
value, times taken from the grid. With ``keep_time=True``, :func:`to_wide` also writes the
actual visit time of each slot as ``<time>_<label>``; :func:`to_long` then restores the
actual times and keeps visits whose every value is missing.

Round trip: ``to_long(to_wide(df, ...), ...)`` equals ``df`` exactly when every visit time is
on the grid, rows are ordered by patient (first appearance) then time, the columns are the
patient, the time, the per-patient columns and the visit columns in that order, and visit
columns are float64 (a wide table holds NaN, so integer visit columns come back float64).
A visit whose every visit column is missing needs ``keep_time=True`` to survive. A datetime
time column comes back as days since the patient's first visit (the wide table holds no dates).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from clinsynth.errors import InputError

__all__ = ["grid_labels", "patient_level_columns", "to_wide", "to_long"]

DAYS_PER_MONTH = 30.4375


def grid_labels(grid: Sequence[float]) -> list[str]:
    """Visit labels for a grid of days: ``m00, m03, …`` when the rounded months are distinct
    (and the trial convention applies), else ``d000, d090, …``."""
    days = np.asarray(grid, dtype=float)
    months = np.rint(days / DAYS_PER_MONTH).astype(np.int64)
    if len(set(months.tolist())) == len(months) and (months >= 0).all():
        width = max(2, len(str(int(months.max()))))
        return [f"m{m:0{width}d}" for m in months]
    whole = np.rint(days).astype(np.int64)
    if len(set(whole.tolist())) != len(whole) or (whole < 0).any():
        raise InputError(f"grid {list(grid)!r} has times that do not give distinct whole-day labels; pass labels=")
    width = max(3, len(str(int(whole.max()))))
    return [f"d{d:0{width}d}" for d in whole]


def patient_level_columns(df: pd.DataFrame, patient: str, exclude: Sequence[str] = ()) -> list[str]:
    """Columns constant within every patient (a missing value counts as a value), in frame order."""
    cols = [c for c in df.columns if c != patient and c not in exclude]
    if not cols:
        return []
    varying = df.groupby(patient, sort=False, dropna=False)[cols].nunique(dropna=False).max()
    return [c for c in cols if varying[c] <= 1]


def _check_grid(grid: Sequence[float], labels: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    g = np.asarray(grid, dtype=float)
    if g.ndim != 1 or g.size == 0 or not np.isfinite(g).all():
        raise InputError(f"grid must be a non-empty list of finite times, got {list(np.atleast_1d(grid))!r}")
    if g.size > 1 and not (np.diff(g) > 0).all():
        raise InputError(f"grid must be strictly increasing, got {g.tolist()!r}")
    labels = grid_labels(g) if labels is None else [str(x) for x in labels]
    if len(labels) != g.size or len(set(labels)) != len(labels):
        raise InputError(f"labels must be {g.size} distinct names, one per grid time; got {labels!r}")
    return g, labels


def _times(df: pd.DataFrame, patient: str, time: str) -> np.ndarray:
    """The time column as float days: numbers as they are, dates as days since the patient's first visit."""
    t = df[time]
    if pd.api.types.is_datetime64_any_dtype(t):
        first = t.groupby(df[patient], sort=False).transform("min")
        return ((t - first) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    if not pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t):
        raise InputError(f"time column '{time}' is {t.dtype}, not a number or a date; "
                         "give days since baseline or a datetime column")
    x = t.to_numpy(dtype=float)
    if np.isnan(x).any():
        raise InputError(f"time column '{time}' has {int(np.isnan(x).sum())} missing value(s); every visit needs a time")
    return x


def to_wide(df: pd.DataFrame, patient: str, time: str, grid: Sequence[float], *,
            tolerance: float | None = None, labels: Sequence[str] | None = None,
            per_patient: Sequence[str] | None = None, keep_time: bool = False,
            strict: bool = False) -> pd.DataFrame:
    """One row per patient from one row per visit, visits snapped to a regular grid.

    Args:
        df: Long table, one row per visit.
        patient: Patient id column.
        time: Visit time column: days since baseline, or a datetime (then days since the
            patient's first visit).
        grid: Grid times in days, strictly increasing (e.g. ``range(0, 1800, 90)``).
        tolerance: Largest distance in days between a visit and its grid time; default half
            the smallest grid spacing (every visit between the first and last grid time lands
            somewhere). See the module docstring for ties and off-grid visits.
        labels: Visit label per grid time; default :func:`grid_labels`.
        per_patient: Columns written once per patient; default every column constant within
            every patient. A listed column that varies within a patient is an error.
        keep_time: Also write ``<time>_<label>`` with each slot's actual visit time.
        strict: Refuse (InputError) instead of dropping off-grid or colliding visits.

    Returns:
        DataFrame: ``patient``, the per-patient columns, then ``<column>_<label>`` for every
        visit column (column-major: all labels of one column together). Patients in order of
        first appearance. ``attrs["dropped_visits"]`` counts dropped visits.

    Example:
        >>> long = pd.DataFrame({"id": [1, 1, 2], "day": [0, 92, 0], "sex": ["F", "F", "M"],
        ...                      "sbp": [140.0, 131.0, 150.0]})
        >>> to_wide(long, "id", "day", [0, 90, 180]).columns.tolist()
        ['id', 'sex', 'sbp_m00', 'sbp_m03', 'sbp_m06']
    """
    for col in (patient, time):
        if col not in df.columns:
            raise InputError(f"column '{col}' is not in the table (columns: {', '.join(map(str, df.columns[:10]))}…)")
    if df[patient].isna().any():
        raise InputError(f"patient column '{patient}' has {int(df[patient].isna().sum())} missing id(s); every visit needs one")
    g, labels = _check_grid(grid, labels)
    spacing = float(np.diff(g).min()) if g.size > 1 else np.inf
    tol = spacing / 2 if tolerance is None else float(tolerance)
    if not np.isfinite(tol) or tol < 0:
        raise InputError(f"tolerance must be a finite number of days >= 0 (got {tolerance!r}); "
                         "with a one-time grid give it explicitly")
    t = _times(df, patient, time)

    if per_patient is None:
        per_patient = patient_level_columns(df, patient, exclude=[time])
    else:
        per_patient = list(per_patient)
        missing = [c for c in per_patient if c not in df.columns]
        if missing:
            raise InputError(f"per-patient column(s) {missing} are not in the table")
        varies = [c for c in per_patient if c not in patient_level_columns(df[[patient, c]], patient)]
        if varies:
            c = varies[0]
            counts = df.groupby(patient, sort=False, dropna=False)[c].nunique(dropna=False)
            example = counts.idxmax()
            example = example.item() if isinstance(example, np.generic) else example
            raise InputError(f"column '{c}' is declared per-patient but varies within patient {example!r}; "
                             "drop it from per_patient or fix the data")
    visit_cols = [c for c in df.columns if c not in (patient, time) and c not in per_patient]

    # nearest grid time; a tie goes to the earlier one (right neighbour only when strictly nearer)
    right = np.clip(np.searchsorted(g, t, side="left"), 0, g.size - 1)
    left = np.clip(right - 1, 0, g.size - 1)
    slot = np.where(np.abs(g[right] - t) < np.abs(t - g[left]), right, left)
    dist = np.abs(t - g[slot])
    codes, uniques = pd.factorize(df[patient], sort=False)
    on_grid = dist <= tol
    # per (patient, slot): nearest first, then earliest; keep the first of each pair
    order = np.lexsort((t, dist, slot, codes))
    order = order[on_grid[order]]
    pair = codes[order].astype(np.int64) * g.size + slot[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = pair[1:] != pair[:-1]
    keep = order[first]
    dropped = len(df) - keep.size
    if strict and dropped:
        n_off = int((~on_grid).sum())
        raise InputError(f"{dropped} visit(s) of '{time}' do not fit the grid ({n_off} farther than {tol:g} days from "
                         f"every grid time, {dropped - n_off} on a grid time already taken); widen the tolerance, use a "
                         "finer grid, or leave strict off to keep the nearest visit per grid time")

    n_pat = len(uniques)
    firsts = np.unique(codes, return_index=True)[1]
    wide = df[[patient, *per_patient]].iloc[firsts].reset_index(drop=True)
    blocks = {}
    rows, slots = codes[keep], slot[keep]
    if keep_time:
        cols_time = np.full((n_pat, g.size), np.nan)
        cols_time[rows, slots] = t[keep]
        blocks.update({f"{time}_{lab}": cols_time[:, j] for j, lab in enumerate(labels)})
    for c in visit_cols:
        values = df[c].to_numpy()
        numeric = pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        block = np.full((n_pat, g.size), np.nan, dtype=float if numeric else object)
        block[rows, slots] = values[keep]
        for j, lab in enumerate(labels):
            blocks[f"{c}_{lab}"] = block[:, j]
    clash = [name for name in blocks if name in wide.columns]
    if clash:
        raise InputError(f"wide column name(s) {clash[:3]} are already per-patient columns; rename them or pass labels=")
    wide = pd.concat([wide, pd.DataFrame(blocks)], axis=1)
    wide.attrs["dropped_visits"] = int(dropped)
    return wide


def to_long(wide: pd.DataFrame, patient: str, time: str, grid: Sequence[float], *,
            labels: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per visit from one row per patient: the inverse of :func:`to_wide`.

    Visit columns are the names ``<column>_<label>`` present for every grid label; the rest
    (apart from ``patient``) are per-patient columns, repeated on every visit. A (patient, grid
    time) pair becomes a row when any of its visit values is observed, or, when the wide table
    has ``<time>_<label>`` columns (``to_wide(..., keep_time=True)``), when that time is present;
    the row's time is then the actual time, else the grid time (int64 when the grid is whole
    days).

    Returns:
        DataFrame: ``patient``, ``time``, the per-patient columns, the visit columns; rows by
        patient (wide row order) then time.
    """
    if patient not in wide.columns:
        raise InputError(f"column '{patient}' is not in the wide table")
    g, labels = _check_grid(grid, labels)
    suffixes = [f"_{lab}" for lab in labels]
    measures: list[str] = []
    for col in map(str, wide.columns):
        if col.endswith(suffixes[0]):
            stem = col[: -len(suffixes[0])]
            if stem and all(f"{stem}{s}" in wide.columns for s in suffixes) and stem not in measures:
                measures.append(stem)
    if not measures:
        raise InputError(f"the wide table has no columns named <column>_<label> for every label {labels[:3]}…; "
                         "pass the grid and labels used by to_wide")
    has_time = time in measures
    visit_cols = [m for m in measures if m != time]
    taken = {f"{m}{s}" for m in measures for s in suffixes}
    per_patient = [c for c in wide.columns if c != patient and c not in taken]

    n_pat, k = len(wide), g.size
    blocks = {m: wide[[f"{m}{s}" for s in suffixes]].to_numpy() for m in measures}
    if has_time:
        times = blocks[time].astype(float)
        present = ~np.isnan(times)
    else:
        times = np.broadcast_to(g, (n_pat, k))
        present = np.zeros((n_pat, k), dtype=bool)
        for m in visit_cols:
            present |= pd.notna(blocks[m])
    flat = present.ravel()
    rows = np.repeat(np.arange(n_pat), present.sum(axis=1))
    out = wide[[patient, *per_patient]].take(rows).reset_index(drop=True)
    t = times.ravel()[flat]
    whole = bool(np.all(np.mod(t, 1) == 0)) and (has_time or np.all(np.mod(g, 1) == 0))
    out.insert(1, time, t.astype(np.int64) if whole else t)
    for m in visit_cols:
        values = blocks[m].ravel()[flat]
        out[m] = values.astype(float) if values.dtype != object or _all_numbers(values) else values
    return out


def _all_numbers(values: np.ndarray) -> bool:
    """True when an object array holds only numbers/NaN (to_wide wrote a numeric column as object)."""
    return bool(pd.api.types.is_numeric_dtype(pd.Series(values).infer_objects()))
