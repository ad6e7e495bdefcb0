"""Patient-level features, and the utility and privacy tests run on them.

A patient with 16 visits is one person, so a classifier or an attack that scores visits counts
them 16 times. Here each patient becomes one record (:func:`patient_features`):

* the per-patient columns (arm, sex, baseline age, outcome …);
* ``n_visits``, ``follow_up_days`` (last visit − first visit) and ``missing_share`` (share of lab
  cells missing over the patient's visits);
* for each lab, ``<lab>_first`` and ``<lab>_last``: the first and last *observed* value (missing
  when the patient never had it measured).

Then, reusing the table machinery rather than a copy of it:

* **utility** (:func:`patient_utility`): :func:`clinsynth.evaluate.utility.tstr` on these records,
  train-on-synthetic/test-on-real next to train-on-real, the target being the layout's per-patient
  class;
* **privacy** (:func:`patient_privacy`): :func:`clinsynth.evaluate.privacy.privacy_attacks` on these
  records, so exact copies, distance to closest record and membership inference ask about
  *patients* (membership = a training patient, all of his visits) rather than rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clinsynth.errors import SchemaError
from clinsynth.evaluate.patients import LongLayout, PatientTables, Visits
from clinsynth.evaluate.privacy import MAX_QUERIES, privacy_attacks
from clinsynth.evaluate.utility import REPORT_CLASSIFIERS, tstr
from clinsynth.schema import ColumnSpec, Schema

DERIVED = ("n_visits", "follow_up_days", "missing_share")


def patient_features(v: Visits, layout: LongLayout) -> pd.DataFrame:
    """One row per patient (indexed by the patient id): see the module docstring for the columns."""
    names = [*layout.patient_columns, *DERIVED, *(f"{lab}_{end}" for lab in v.labs for end in ("first", "last"))]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise SchemaError(f"the patient features would hold column(s) {', '.join(clash)} twice (a per-patient column "
                          "has the name of a derived feature); rename the column")
    rows = v.rows
    g = rows.groupby("_pid", sort=True)
    whole = pd.RangeIndex(v.n_patients)
    out: dict[str, Any] = {}
    for c in layout.patient_columns:
        out[c] = g[c].first().reindex(whole)  # constant within a patient: the first value stands for all
    out["n_visits"] = pd.Series(v.counts().astype(float), index=whole)
    t = g["_t"]
    out["follow_up_days"] = (t.max() - t.min()).reindex(whole)
    if v.labs:
        missing = rows[v.labs].isna().sum(axis=1).groupby(rows["_pid"]).sum()
        out["missing_share"] = (missing / (g.size() * len(v.labs))).reindex(whole)
    else:
        out["missing_share"] = pd.Series(0.0, index=whole)
    for lab in v.labs:  # groupby first/last skip missing values: first and last observed
        out[f"{lab}_first"] = g[lab].first().reindex(whole)
        out[f"{lab}_last"] = g[lab].last().reindex(whole)
    frame = pd.DataFrame(out)
    frame.index = pd.Index(v.ids, name=layout.patient)
    return frame


def _categories(values: pd.Series) -> list[Any]:
    """Distinct values as plain Python, numbers in numeric order, text in text order (as Schema.infer)."""
    found = [v.item() if isinstance(v, np.generic) else v for v in pd.unique(values.dropna())]
    if all(isinstance(v, (int, float, bool)) for v in found):
        return sorted(found)
    return sorted(found, key=str)


def _patient_spec(name: str, values: pd.Series, is_target: bool) -> ColumnSpec:
    missing = "indicator" if values.isna().any() else "none"
    if not is_target:
        if pd.api.types.is_bool_dtype(values):
            return ColumnSpec(name=name, kind="binary", categories=[False, True], missing=missing)
        if pd.api.types.is_datetime64_any_dtype(values):
            return ColumnSpec(name=name, kind="datetime", missing=missing)
        if pd.api.types.is_numeric_dtype(values):
            return ColumnSpec(name=name, kind="continuous", missing=missing)
    cats = _categories(values) or ["<none>"]
    return ColumnSpec(name=name, kind="binary" if len(cats) == 2 else "categorical", categories=cats, missing=missing)


def feature_schema(train: pd.DataFrame, test: pd.DataFrame, layout: LongLayout, table_schema: Schema | None = None) -> Schema:
    """The patient features' schema: per-patient columns by their type in the training features
    (the target's classes from training and holdout), everything derived a continuous number.

    With ``table_schema`` (the long table's own schema), a per-patient column it describes keeps
    that description (kind, categories, ``sensitive``, ``quasi_identifier``), and ``<lab>_first``
    / ``<lab>_last`` are ``sensitive`` when the lab is: the patient-level attribute-inference and
    k-anonymity attacks then run on them."""
    known = {c.name: c for c in table_schema.columns} if table_schema is not None else {}
    lab_of = {f"{lab}_{end}": lab for lab in layout.visit_columns for end in ("first", "last")}
    specs = []
    for name in train.columns:
        missing = "indicator" if train[name].isna().any() else "none"
        if name in layout.patient_columns and name in known:
            spec = known[name]
            # one row per patient: a long-format "level" no longer applies (the feature schema names no patient column)
            level = {"level": None} if "level" in type(spec).model_fields else {}
            specs.append(spec.model_copy(update={"missing": missing, **level}))
        elif name in layout.patient_columns:
            values = pd.concat([train[name], test[name]]) if name == layout.target else train[name]
            specs.append(_patient_spec(name, values, name == layout.target))
        else:
            lab = known.get(lab_of.get(name, ""))
            specs.append(ColumnSpec(name=name, kind="continuous", missing=missing, sensitive=bool(lab and lab.sensitive)))
    try:
        return Schema(columns=specs, target=layout.target)
    except ValueError as e:
        raise SchemaError(f"the patient features do not fit the table's schema: {e}") from None


@dataclass
class FeatureTables:
    """The three tables' patient features and their schema."""

    train: pd.DataFrame
    test: pd.DataFrame
    synthetic: pd.DataFrame
    schema: Schema
    notes: list[str] = field(default_factory=list)


def feature_tables(tables: PatientTables, layout: LongLayout, table_schema: Schema | None = None) -> FeatureTables:
    """Patient features of the real training, real holdout and synthetic tables, read alike
    (``table_schema``: see :func:`feature_schema`)."""
    train, test, synthetic = (patient_features(v, layout) for v in (tables.train, tables.test, tables.synthetic))
    if layout.target is not None and train[layout.target].nunique() < 2:
        raise SchemaError(f"the real training patients hold one class of the target '{layout.target}'; "
                          "the patient evaluation needs at least two")
    return FeatureTables(train, test, synthetic, feature_schema(train, test, layout, table_schema))


def patient_utility(features: FeatureTables, seed: int = 0, *, classifiers: tuple[str, ...] | None = None,
                    n_bootstrap: int = 200, importance: bool = False) -> dict[str, Any] | None:
    """TSTR/TRTR on patient features (:func:`clinsynth.evaluate.utility.tstr`, its classifiers and
    ratios); None, with a note, when there is no target or the holdout holds a single class."""
    target = features.schema.target
    if target is None:
        features.notes.append("no patient-level utility: the layout names no target")
        return None
    try:
        result = tstr(features.train, features.test, features.synthetic, features.schema,
                      classifiers=classifiers or REPORT_CLASSIFIERS, seed=seed, n_bootstrap=n_bootstrap,
                      importance=importance)
    except SchemaError as e:
        features.notes.append(f"no patient-level utility: {e}")
        return None
    return {"unit": "patient", **result.to_dict()}


def patient_privacy(features: FeatureTables, seed: int = 0, *, max_queries: int | None = None) -> dict[str, Any]:
    """The attacks of :mod:`clinsynth.evaluate.privacy` with one record per patient (its features):
    exact copies, distance to closest record, membership inference (member = a training patient),
    and, when the schema flags columns, attribute inference and k-anonymity."""
    result = privacy_attacks(features.train, features.test, features.synthetic, features.schema,
                             max_queries=max_queries or MAX_QUERIES, seed=seed)
    return {"unit": "patient", "n_features": len(features.schema.model_columns),
            **{k: v for k, v in result.to_dict().items()
               if k in ("exact_copies", "distance_to_closest", "membership_inference")
               or (k == "attribute_inference" and v["columns"]) or (k == "k_anonymity" and v["quasi_identifiers"])}}
