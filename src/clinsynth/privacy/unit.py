"""The privacy unit: whose data a DP guarantee protects.

A DP table model's guarantee is about one *record*: neighbouring tables differ by one row. That
protects a person only when each person has one row. A long-format table (one row per visit)
gives a patient with 16 visits 16 records, and a per-row ε then says far less about the patient
than the number printed (group privacy: roughly 16 ε). So before any DP fit of a table, this
module looks for columns that identify a person and repeat across rows, and refuses unless the
user has declared that each row is a different person (``Schema.privacy_unit = "row"``); a long
table named as such (``Schema.patient``) goes to a model of patients, whose unit is the patient.

What counts as a person identifier: a column declared ``kind: id``, or a whole-number or text
column whose name *ends* in an identifier word (``id``, ``patient``, ``subject``, ``mrn``,
``..._id``, ``PatientID``, ``USUBJID``; :data:`PERSON_ID_NAME`) with more than two values — not
``uric_acid`` (a measurement that happens to end in "id"), not ``patient_age``. The rule errs
towards asking, because a false alarm costs the user one declaration and a miss prints a false
guarantee.

EHR code matrices are already one record per patient (all of a patient's codes and per-patient
columns): their unit is the patient, by construction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from clinsynth.errors import ConfigError

#: a name that ends in an identifier word (case-insensitive): ``id``, ``patient_id``, ``PatientID``,
#: ``subject``, ``USUBJID``, ``mrn``, ``site_id`` — but not ``uric_acid`` or ``patient_age``
PERSON_ID_NAME = re.compile(
    r"(^|[_\W])(id|ids|pid|mrn|maskid|patid|subjid|usubjid|subject|patient|person|participant|record|member)"
    r"(_?(id|no|num|number|code|key))?$|^[a-z]*(patient|subject|person|participant|member)_?id$", re.IGNORECASE)

ROW_UNIT = "row (each row is a different person)"
PATIENT_UNIT = "patient (all codes and per-patient columns of one patient)"
#: the unit of a long-format (one row per visit) model's guarantee: a patient and every row they have
LONG_PATIENT_UNIT = "patient (all rows of one patient)"


class PrivacyUnitError(ConfigError):
    """A DP fit whose per-row guarantee would not protect the people in the table."""


@dataclass(frozen=True)
class SharedId:
    """An identifier column whose values repeat: rows that share a person."""

    column: str
    rows: int  # rows that carry a repeated value
    ids: int  # distinct values that repeat
    most: int  # rows of the most frequent value

    def describe(self) -> str:
        return (f"column '{self.column}' looks like a person identifier and {self.ids:,} of its values repeat "
                f"({self.rows:,} rows; up to {self.most:,} rows for one value)")


def person_id_candidates(schema: Any, present: Any) -> list[Any]:
    """The columns (specs) among ``present`` names that may identify a person: declared ``id``, or a
    whole-number or text column whose name ends in an id word (see the module docstring)."""
    return [spec for spec in schema.columns if spec.name in present and (
        spec.kind == "id" or (spec.kind in ("integer", "categorical") and PERSON_ID_NAME.search(spec.name)))]


def shared_ids(df: pd.DataFrame, schema: Any) -> list[SharedId]:
    """Identifier-like columns of ``df`` whose values repeat across rows (see the module docstring)."""
    found = []
    for spec in person_id_candidates(schema, set(df.columns)):
        counts = df[spec.name].value_counts(dropna=True)
        repeated = counts[counts > 1]
        if len(repeated) and len(counts) > 2:
            found.append(SharedId(spec.name, int(repeated.sum()), len(repeated), int(repeated.iloc[0])))
    return found


def check_privacy_unit(df: pd.DataFrame, schema: Any) -> str:
    """The unit a DP fit of ``df`` protects, or ``PrivacyUnitError`` when rows share a person and
    the schema has not declared that each row is a different person."""
    if getattr(schema, "patient", None) is not None:
        raise PrivacyUnitError(f"a per-row DP mechanism was given a long-format table (patient column "
                               f"'{schema.patient}'): its guarantee would not be per patient")
    if getattr(schema, "privacy_unit", None) == "row":
        return ROW_UNIT + ", as declared"
    shared = df.shared_ids(schema) if hasattr(df, "shared_ids") else shared_ids(df, schema)
    if shared:
        raise PrivacyUnitError(
            f"rows share a person: {shared[0].describe()}. A DP guarantee per row would not protect a person "
            "with several rows (their rows together leak up to that many times ε). Name the patient and time "
            f"columns for patient-level DP (CLI: --patient-col {shared[0].column} --time-col <time>; Python: "
            f"Schema.infer(..., patient='{shared[0].column}', time=...)), or, if each row really is a different "
            "person, declare it: privacy unit 'row' (CLI: --privacy-unit row; Python: Schema.infer(..., "
            "privacy_unit='row'))")
    return ROW_UNIT + ": no identifier column repeats"
