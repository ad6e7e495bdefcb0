"""Scoring one synthetic table: a peer's output read into the scoring schema's types, then
clinsynth's utility (TSTR/TRTR), detection and privacy-attack numbers for it.

A long table of visits (the scoring schema names a patient column) is scored per patient, the way
``cs.evaluate`` scores it (``clinsynth.evaluate.suite.patient_records``): the three tables become
one record per patient (per-patient columns, first and last value of each lab, visits, follow-up,
missing share) and the same numbers are computed on those records, so TSTR/TRTR predicts a
patient's target, detection tells real patients from synthetic ones and membership means a
patient; the patient-level shape adds ``LONG_FIELDS`` (visits-per-patient and gap KS, the share of
synthetic patients with strictly increasing times, …)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from compare_datasets import NUMERIC, label

TSTR_CLASSIFIERS = {"lr": "logistic_regression", "rf": "random_forest", "gb": "gradient_boosting"}

_MISSING_TEXT = {"nan", "NaN", "None", "<NA>", "NA", "null"}


def coerce_synthetic(synth: pd.DataFrame, meta: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """A peer's table in the scoring schema's types: numbers to float, categories to their text.

    Raises ``ValueError`` for a table that cannot be scored (no rows, columns missing); values
    that do not fit (text in a number column, an unknown category) are counted in the notes.
    """
    if len(synth) < 2:
        raise ValueError(f"the synthetic table has {len(synth)} row(s)")
    names = [c["name"] for c in meta["columns"]]
    absent = [n for n in names if n not in synth.columns]
    if absent:
        raise ValueError(f"the synthetic table lacks {len(absent)} column(s): {', '.join(absent[:5])}")
    notes, out = [], {}
    for c in meta["columns"]:
        s = synth[c["name"]]
        if c["kind"] == "id":  # a long table's patient id: text, missing stays missing
            out[c["name"]] = s.astype(object).map(lambda v: label(v) if pd.notna(v) else np.nan)
        elif c["kind"] in NUMERIC:
            text = s.astype(object).where(s.notna(), None)
            blank = text.map(lambda v: v is None or (isinstance(v, str) and v.strip() in {"", *_MISSING_TEXT}))
            x = pd.to_numeric(s.where(~blank), errors="coerce").astype(float)
            x = x.where(np.isfinite(x))
            lost = int((x.isna() & ~blank).sum())
            if lost > 0:
                notes.append(f"{c['name']}: {lost} non-numeric value(s) read as missing")
            out[c["name"]] = x
        else:
            out[c["name"]], unknown = _as_categories(s, c["categories"])
            if unknown:
                notes.append(f"{c['name']}: {unknown} value(s) outside the declared categories")
    extra = [n for n in synth.columns if n not in set(names)]
    if extra:
        notes.append(f"dropped {len(extra)} extra column(s)")
    return pd.DataFrame(out), notes


def _as_categories(s: pd.Series, categories: list[str]) -> tuple[pd.Series, int]:
    known = set(categories)

    def one(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return np.nan
        text = label(v)
        if text in known:
            return text
        if text in _MISSING_TEXT:
            return np.nan
        try:  # "1.0" read as text where the category is "1"
            number = float(text)
        except ValueError:
            return text
        return label(number) if label(number) in known else text

    values = s.astype(object).map(one).astype(object)
    unknown = int((values.notna() & ~values.isin(known)).sum())
    return values, unknown


def score(train: pd.DataFrame, test: pd.DataFrame, synth: pd.DataFrame, schema: Any, seed: int) -> dict[str, float]:
    """clinsynth's utility, detection and privacy-attack numbers of one synthetic table.

    Native thread pools are held at one thread: on a busy 2-core machine gradient boosting's
    OpenMP threads spin against each other (measured: 17 s with two threads, 0.5 s with one, on
    breast cancer)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        if getattr(schema, "is_long", False):
            return _score_long(train, test, synth, schema, seed)
        return _score(train, test, synth, schema, seed)


#: a long table's patient-level shape in a cell's row (from ``cs.evaluate``'s patients section)
LONG_FIELDS = ("visits_ks", "gaps_ks", "strictly_increasing", "after_last_visit", "patient_columns_vary",
               "n_synthetic_patients")


def _score_long(train: pd.DataFrame, test: pd.DataFrame, synth: pd.DataFrame, schema: Any, seed: int) -> dict[str, float]:
    """The scores of a long table of visits, per patient (see the module docstring)."""
    from clinsynth.evaluate.suite import patient_records

    features_train, features_test, features_synth, features_schema, shape = patient_records(
        train, test, synth, schema, seed, None)
    row = _score(features_train, features_test, features_synth, features_schema, seed)
    order = shape["ordering"]["synthetic"]
    row.update(visits_ks=shape["visits_per_patient"]["ks"], gaps_ks=shape["gaps"]["ks"],
               strictly_increasing=order["strictly_increasing"], after_last_visit=order["after_last_visit"],
               patient_columns_vary=order["patient_columns_vary"], n_synthetic_patients=order["n_patients"])
    return {k: (float(v) if v is not None else math.nan) for k, v in row.items()}


def _score(train: pd.DataFrame, test: pd.DataFrame, synth: pd.DataFrame, schema: Any, seed: int) -> dict[str, float]:
    from clinsynth.evaluate.fidelity import detection_auroc
    from clinsynth.evaluate.privacy import privacy_attacks
    from clinsynth.evaluate.utility import tstr

    utility = tstr(train, test, synth, schema, seed=seed, n_bootstrap=0, importance=False)
    row: dict[str, float] = {}
    for short, clf in TSTR_CLASSIFIERS.items():
        row[f"tstr_trtr_{short}"] = utility.ratio(clf)
        row[f"trtr_auroc_{short}"] = utility.get(clf, "real").auroc
        row[f"tstr_auroc_{short}"] = utility.get(clf, "synthetic").auroc
    row["detection_auroc"] = detection_auroc(train, synth, schema, seed=seed)
    attacks = privacy_attacks(train, test, synth, schema, seed=seed)
    row["dcr_share"] = attacks.dcr.share_closer_to_train
    row["mia_auroc"] = attacks.membership.auroc
    row["exact_copy_rate"] = attacks.exact_copies.synthetic_rate
    row["holdout_copy_rate"] = attacks.exact_copies.holdout_rate
    return {k: float(v) for k, v in row.items()}
