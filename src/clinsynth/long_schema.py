"""Long-format visit tables: one row per visit, several rows per patient.

A trial's lab file or a registry's follow-up table arrives this way. Its schema names the patient
column and the visit-time column (``Schema.patient``, ``Schema.time``) and says of every other
column whether it belongs to the *patient* (constant within every patient: arm, sex, baseline
age, the outcome) or to the *visit* (labs, vital signs); models then draw per-patient columns once
per patient and visits as a sequence, and DP counts the patient, not the row, as the unit.

This module holds what the schema needs to infer and check that layout; the rules:

* the time column is numbers (days since baseline, say) or dates; rows of one patient have
  distinct times (a duplicate (patient, time) pair is refused, with the count);
* a column is per-patient when, within every patient, it takes one value (missing counts as a
  value: a baseline lab missing for a patient is missing on all of their rows);
* the target, if any, is per-patient (a patient's outcome); a column the schema declares
  per-patient that varies within a patient is refused, naming the column and one patient;
* a patient with more than ``max_visits`` rows is refused (how many patients exceed it), or, when
  asked, truncated to their first ``max_visits`` visits.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from clinsynth.errors import SchemaError

#: the default cap on visits per patient: longer histories are refused unless truncation is asked for
MAX_VISITS = 100


def check_layout_columns(df: pd.DataFrame, patient: str, time: str, target: str | None) -> None:
    """Refuse, in one line each, a patient or time column the table lacks or cannot be."""
    from clinsynth.schema import absent_column

    for role, name in (("patient", patient), ("time", time)):
        if name not in df.columns:
            raise SchemaError(absent_column(role, name, df.columns))
    if patient == time:
        raise SchemaError(f"the patient and time columns must differ, both are '{patient}'")
    if target in (patient, time):
        raise SchemaError(f"target '{target}' cannot be the patient or the time column")
    if df[patient].isna().any():
        raise SchemaError(f"patient column '{patient}' has {int(df[patient].isna().sum()):,} empty cells: "
                          "every row needs its patient")
    t = df[time]
    if t.isna().any():
        raise SchemaError(f"time column '{time}' has {int(t.isna().sum()):,} empty cells: every visit needs its time")
    kind = time_kind(t)
    if kind is None:
        raise SchemaError(f"time column '{time}' is neither numbers (e.g. days since baseline) nor dates "
                          f"(e.g. {t.iloc[0]!r}); convert it or name another time column")
    if kind == "number" and not pd.api.types.is_numeric_dtype(t):
        raise SchemaError(f"time column '{time}' holds numbers written as text (e.g. {t.iloc[0]!r}); convert it to "
                          "numbers (pandas.to_numeric) before fitting")
    dupes = int(df.duplicated([patient, time]).sum())
    if dupes:
        raise SchemaError(f"{dupes:,} rows repeat a (patient, time) pair of an earlier row ('{patient}', '{time}'): "
                          "one row per visit; merge or drop the repeats")


def time_kind(s: pd.Series) -> str | None:
    """How a long table's time column reads: ``"number"`` (e.g. days since baseline), ``"date"``, or
    None (true/false, or text that is neither). The one rule the schema check and the patient
    evaluation share; text counts as dates when every value parses, else as numbers when every
    value is one."""
    from clinsynth.schema import parse_datetimes

    if pd.api.types.is_bool_dtype(s):
        return None
    if pd.api.types.is_numeric_dtype(s):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "date"
    values = s.dropna().astype(str)
    if len(values) and parse_datetimes(values).notna().all():
        return "date"
    if len(values) and pd.to_numeric(values, errors="coerce").notna().all():
        return "number"
    return None


def infer_levels(df: pd.DataFrame, patient: str, time: str, target: str | None) -> dict[str, str]:
    """``"patient"`` or ``"visit"`` for every column but the patient and time columns."""
    from clinsynth.data.long_wide import patient_level_columns

    per_patient = set(patient_level_columns(df, patient, exclude=[time]))
    levels = {name: "patient" if name in per_patient else "visit" for name in df.columns if name not in (patient, time)}
    if target is not None and levels.get(target) == "visit":
        example = _varying_patient(df, patient, target)
        raise SchemaError(f"target '{target}' varies within patient {example!r}: a long-format target belongs to "
                          "the patient (e.g. the outcome); give it once per patient")
    return levels


def _varying_patient(df: pd.DataFrame, patient: str, column: str) -> Any:
    counts = df.groupby(patient, sort=False)[column].nunique(dropna=False)
    return _plain(counts[counts > 1].index[0])


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value a user typed (``500``, not ``np.int64(500)``)."""
    return value.item() if hasattr(value, "item") else value


def layout_problems(df: pd.DataFrame, schema: Any) -> list[str]:
    """What in ``df`` breaks a long-format schema: one phrase per problem (empty: nothing)."""
    problems = []
    for spec in schema.columns:
        if spec.level == "patient" and spec.name in df.columns and schema.patient in df.columns:
            counts = df.groupby(schema.patient, sort=False)[spec.name].nunique(dropna=False)
            varying = counts[counts > 1]
            if len(varying):
                problems.append(f"column '{spec.name}' is per patient in the schema but varies within "
                                f"{len(varying):,} patient(s), e.g. {_plain(varying.index[0])!r}")
    if schema.patient in df.columns and schema.time in df.columns:
        dupes = int(df.duplicated([schema.patient, schema.time]).sum())
        if dupes:
            problems.append(f"{dupes:,} rows repeat a (patient, time) pair: one row per visit")
    return problems


def limit_visits(df: pd.DataFrame, patient: str, time: str, max_visits: int = MAX_VISITS,
                 truncate: bool = False) -> pd.DataFrame:
    """``df`` sorted by patient and time, refused if a patient has more than ``max_visits`` rows —
    or, with ``truncate``, cut to each patient's first ``max_visits`` visits."""
    if max_visits < 1:
        raise SchemaError(f"max_visits must be at least 1, got {max_visits}")
    ordered = df.sort_values([patient, time], kind="stable").reset_index(drop=True)
    visit = ordered.groupby(patient, sort=False).cumcount()
    over = int(ordered.loc[visit >= max_visits, patient].nunique())
    if over and not truncate:
        longest = int(visit.max()) + 1
        raise SchemaError(f"{over:,} patient(s) have more than {max_visits} visits (up to {longest:,}): raise "
                          "--max-visits, or add --truncate-visits to keep each patient's first "
                          f"{max_visits}")
    return ordered[visit < max_visits].reset_index(drop=True) if over else ordered
