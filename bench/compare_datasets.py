"""The benchmark's datasets: their loaders, each one's meta.json (column kinds, the public bounds and
categories every tool is given, δ) and its prepared stratified 80/20 split on disk. A long-format
dataset (one row per visit; ``long_trial``) is split by patient, all rows of a patient on one side.

δ is the ledger's default for the training size (``clinsynth.privacy.ledger.default_delta``), the
δ a clinsynth model picks for itself, offered to every DP tool alike: one definition, not a
benchmark's own.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinsynth.data.io import write_text_atomic
from clinsynth.privacy.ledger import default_delta

DISCRETE = ("binary", "categorical")
NUMERIC = ("continuous", "integer")


@dataclass(frozen=True)
class Dataset:
    name: str
    target: str
    load: Callable[[], pd.DataFrame]  # the whole table, dropped columns already gone
    codes: bool = False  # a wide EHR table: every column but age and sex is a 0/1 code
    needs: str | None = None  # an import the loader needs (the bench extra)
    patient: str | None = None  # long format (one row per visit): the patient id column ...
    time: str | None = None  # ... and the visit time column

    @property
    def kind(self) -> str:
        """What the synthesizers meet: "table", "codes" (the wide EHR table) or "long" (visits)."""
        return "codes" if self.codes else "long" if self.patient else "table"


def _breast_cancer() -> pd.DataFrame:
    from clinsynth.data.datasets import load_breast_cancer

    return load_breast_cancer()


def _survival(loader: str, event: str, drop: Sequence[str]) -> pd.DataFrame:
    """A scikit-survival table with its event indicator as the target; the time and ``drop`` go."""
    import sksurv.datasets

    X, y = getattr(sksurv.datasets, loader)()
    df = X.drop(columns=list(drop)).reset_index(drop=True)
    df[event] = y[event]
    return df


def _trial() -> pd.DataFrame:
    from clinsynth.data.datasets import simulate_trial

    return simulate_trial().drop(columns=["participant_id"])


LONG_PATIENTS = 5_000


def _long_trial() -> pd.DataFrame:
    """``simulate_long_trial``: 5,000 patients, about 57,500 visits (1-20 each, irregular days)."""
    from clinsynth.data.long_trial import simulate_long_trial

    return simulate_long_trial(LONG_PATIENTS, seed=0)


EHR_PATIENTS, EHR_CODES = 5_000, 1_000


def _ehr() -> pd.DataFrame:
    """``simulate_ehr`` as one wide table: age, sex, then each code as a "0"/"1" column."""
    from clinsynth.data.datasets import simulate_ehr

    codes, people = simulate_ehr(EHR_PATIENTS, EHR_CODES, seed=0)
    dense = codes.matrix.toarray() > 0
    wide = pd.DataFrame(np.where(dense, "1", "0"), columns=list(codes.vocabulary))
    return pd.concat([people[["age", "sex"]].reset_index(drop=True), wide], axis=1)


DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("breast_cancer", "diagnosis", _breast_cancer),
    Dataset("whas500", "fstat", lambda: _survival("load_whas500", "fstat", []), needs="sksurv"),
    Dataset("flchain", "death", lambda: _survival("load_flchain", "death", ["chapter"]), needs="sksurv"),
    Dataset("trial", "arm", _trial),
    Dataset("ehr", "sex", _ehr, codes=True),
    Dataset("long_trial", "event", _long_trial, patient="patient_id", time="day"),
]}


def label(value: Any) -> str:
    """A category as text: booleans as "0"/"1", whole floats without ".0"."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def column_meta(s: pd.Series, is_target: bool = False, code: bool = False) -> tuple[pd.Series, dict[str, Any]]:
    """The column as the benchmark stores it, and its meta entry (kind, public domain, nullable).

    Text, categorical and boolean columns, numbers with at most two values (run_cell needs
    lower < upper), the target and EHR codes are categories (text; a pandas categorical keeps its
    own order, the rest are sorted); other numbers are integer when whole, else continuous, with
    the whole dataset's range as bounds.
    """
    name, nullable = str(s.name), bool(s.isna().any())
    entry: dict[str, Any] = {"name": name}
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    values = s.dropna()
    if code:  # already "0"/"1" text: skip the per-value relabelling of a thousand columns
        return s.astype(object), {**entry, "kind": "binary", "categories": ["0", "1"], "nullable": nullable}
    if isinstance(s.dtype, pd.CategoricalDtype):
        present = set(values.map(label))
        cats = [c for c in map(label, s.dtype.categories) if c in present]
    elif numeric and not is_target and values.nunique() > 2:
        whole = bool(np.all(np.mod(values.to_numpy(float), 1) == 0))
        lo, hi = float(values.min()), float(values.max())
        entry.update(kind="integer" if whole else "continuous", lower=int(lo) if whole else lo,
                     upper=int(hi) if whole else hi, nullable=nullable)
        return s.astype(float), entry
    else:
        cats = sorted(set(values.map(label)), key=_category_order)
    text = s.astype(object).map(lambda v: label(v) if pd.notna(v) else None)
    entry.update(kind="binary" if len(cats) == 2 else "categorical", categories=cats, nullable=nullable)
    return text, entry


def _category_order(text: str) -> tuple[int, float, str]:
    """Numbers by value ("2" before "10"), then text."""
    try:
        return 0, float(text), text
    except ValueError:
        return 1, 0.0, text


def build_meta(df: pd.DataFrame, name: str, target: str, code_columns: Iterable[str] = (),
               patient: str | None = None, time: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The table in the benchmark's form and its meta.json (δ is set once the split is known).

    A long table (``patient`` and ``time`` given: one row per visit) keeps its patient ids as text
    (kind ``id``), and every other column but the time says whether it is constant within a patient
    (``level``: ``patient``) or not (``visit``), as clinsynth's schema inference finds it; meta.json
    names the two columns under ``patient`` and ``time``."""
    codes = set(code_columns)
    levels: dict[str, str] = {}
    if patient is not None:
        from clinsynth.long_schema import infer_levels

        levels = infer_levels(df, patient, time, target)
    columns, entries = {}, []
    for col in df.columns:
        if col == patient:
            columns[col], entry = df[col].astype(str).astype(object), {"name": col, "kind": "id", "nullable": False}
        else:
            columns[col], entry = column_meta(df[col], is_target=col == target, code=col in codes)
        if col in levels:
            entry["level"] = levels[col]
        entries.append(entry)
    meta: dict[str, Any] = {"dataset": name, "target": target, "delta": None, "columns": entries}
    if codes:
        meta["codes"] = [c for c in df.columns if c in codes]
    if patient is not None:
        meta.update(patient=patient, time=time)
    return pd.DataFrame(columns), meta


@dataclass
class DatasetFiles:
    """One prepared dataset: its split and meta.json on disk, and the frames scoring reads."""

    name: str
    directory: Path

    @property
    def train_csv(self) -> Path:
        return self.directory / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.directory / "test.csv"

    @property
    def meta_json(self) -> Path:
        return self.directory / "meta.json"

    @cached_property
    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_json.read_text())

    @cached_property
    def train(self) -> pd.DataFrame:
        return read_table(self.train_csv, self.meta)

    @cached_property
    def test(self) -> pd.DataFrame:
        return read_table(self.test_csv, self.meta)

    @cached_property
    def schema(self) -> Any:
        return scoring_schema(self.meta)

    @property
    def n_train(self) -> int:
        return int(self.meta["n_train"])


def prepare_dataset(dataset: Dataset, work: Path) -> DatasetFiles:
    """Write train.csv, test.csv and meta.json once (they are deterministic); reuse them after."""
    from clinsynth.pipeline import split_holdout, split_patients_holdout

    files = DatasetFiles(dataset.name, work / dataset.name)
    if files.meta_json.is_file():
        return files
    raw = dataset.load()
    code_columns = [c for c in raw.columns if c not in ("age", "sex")] if dataset.codes else []
    table, meta = build_meta(raw, dataset.name, dataset.target, code_columns, dataset.patient, dataset.time)
    if dataset.patient is None:
        train, test = split_holdout(table, dataset.target, seed=0)
        n_train, n_test, split = len(train), len(test), "stratified 80/20 on the target, seed 0"
    else:  # whole patients on each side; n_train counts patients (a DP unit, and what a tool is asked for)
        train, test = split_patients_holdout(table, dataset.patient, dataset.target, seed=0)
        n_train, n_test = int(train[dataset.patient].nunique()), int(test[dataset.patient].nunique())
        split = "patients (all rows of each) stratified 80/20 on the per-patient target, seed 0"
        meta.update(n_train_rows=len(train), n_test_rows=len(test))
    # the ledger's δ for this many records (patients): what a clinsynth model picks for itself, given to every DP tool
    meta.update(delta=default_delta(n_train), n_train=n_train, n_test=n_test, split=split)
    files.directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(files.train_csv, train.to_csv(index=False, na_rep=""))
    write_text_atomic(files.test_csv, test.to_csv(index=False, na_rep=""))
    write_text_atomic(files.meta_json, json.dumps(meta, indent=1) + "\n")  # last: it marks the set complete
    return files


def read_table(path: Path, meta: dict[str, Any]) -> pd.DataFrame:
    """A benchmark CSV: categories as text, numbers as floats, empty = missing."""
    kinds = {c["name"]: c["kind"] for c in meta["columns"]}
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    return pd.DataFrame({name: pd.to_numeric(df[name]) if kinds[name] in NUMERIC else df[name].astype(object)
                         for name in kinds if name in df.columns})


def scoring_schema(meta: dict[str, Any]) -> Any:
    """One clinsynth schema for scoring every tool's table, straight from meta.json."""
    from clinsynth.schema import ColumnSpec, Schema

    specs = []
    for c in meta["columns"]:
        common = dict(name=c["name"], kind=c["kind"], missing="indicator" if c.get("nullable") else "none", public=True,
                      level=c.get("level"))
        if c["kind"] == "id":
            specs.append(ColumnSpec(name=c["name"], kind="id", missing="none"))
        elif c["kind"] in DISCRETE:
            specs.append(ColumnSpec(categories=list(c["categories"]), **common))
        else:
            specs.append(ColumnSpec(bounds=(float(c["lower"]), float(c["upper"])), **common))
    return Schema(columns=specs, target=meta["target"], longitudinal=[], patient=meta.get("patient"),
                  time=meta.get("time"))


def prepare_all(names: Sequence[str], work: Path) -> tuple[dict[str, DatasetFiles], dict[str, str]]:
    """Prepared datasets, and the reason for each one that cannot be (its extra is missing)."""
    import importlib.util

    files, missing = {}, {}
    for name in names:
        d = DATASETS[name]
        if d.needs and importlib.util.find_spec(d.needs) is None and not (work / name / "meta.json").is_file():
            missing[name] = f"{d.needs} is not installed (pip install -e '.[bench]')"
            continue
        files[name] = prepare_dataset(d, work)
    return files, missing
