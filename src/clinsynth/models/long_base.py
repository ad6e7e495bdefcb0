"""The "patients" model family: a long-format table in (one row per visit), synthetic patients out.

The contract shares with the other families what :class:`~clinsynth.models.base.SynthModel` holds
(``fit(df, schema)`` returns the model, ``sample(n, conditions, seed)``, ``save`` / ``load`` through
a bundle, learned state ending in ``_``) and is its own family (tag ``input="patients"``):

* ``fit`` takes a long-format table and its long schema (``Schema.patient`` and ``Schema.time``
  named, each other column per ``patient`` or per ``visit``; :mod:`clinsynth.long_schema`) and
  refuses anything else in one line;
* ``sample(n)`` draws ``n`` synthetic *patients*: a frame with new patient ids, strictly increasing
  times within each patient and one row per synthetic visit, every column as the schema says.

A DP model of this family protects a *patient* (all rows of one patient): neighbouring tables differ
by one patient, and :attr:`PatientModel.privacy_unit_` says so, with the contribution bound used.
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import numpy as np
import pandas as pd

from clinsynth.errors import ConfigError, SchemaError
from clinsynth.models.base import Conditions, SynthModel
from clinsynth.models.tags import PATIENT_TAGS
from clinsynth.privacy.unit import LONG_PATIENT_UNIT
from clinsynth.schema import Schema, check_trainable

#: how a fitted DP model of patients names its privacy unit (the guarantee page, manifest, ledger reader)
PATIENT_ROWS_UNIT = LONG_PATIENT_UNIT


def order_visits(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Rows sorted by patient then time (the order every visit model reads them in)."""
    return df.sort_values([schema.patient, schema.time], kind="stable").reset_index(drop=True)


class PatientModel(SynthModel):
    """Base class of the registered models of patients and their visits (long format)."""

    tags = PATIENT_TAGS

    def fit(self, df: pd.DataFrame, schema: Schema | None = None, *,
            checkpoint_dir: str | Path | None = None) -> PatientModel:
        """Validate the long-format ``df`` against its long ``schema`` and learn its patients.

        ``checkpoint_dir`` is accepted for the common contract; models of this family fit in
        seconds and write none."""
        self._refuse_other_kind(df, schema)  # a long-format schema, and no code matrix
        if not isinstance(df, pd.DataFrame):
            raise ConfigError(f"{self.name} takes a pandas DataFrame of visits, got {type(df).__name__}")
        schema.validate(df)
        check_trainable(df)
        self._validate_params(schema)
        df = order_visits(df, schema)
        if df[schema.patient].nunique() < 2:
            raise SchemaError(f"the table holds one patient ('{schema.patient}'); clinsynth needs at least 2 patients "
                              "to learn from")
        self.n_train_ = int(df[schema.patient].nunique())
        self.n_rows_ = len(df)
        self._fit_patients(df, schema)
        return self

    def sample(self, n: int, conditions: Conditions | None = None, seed: int | None = None) -> pd.DataFrame:
        """Draw ``n`` synthetic patients with all their visits (one row per visit)."""
        self._check_fitted()
        self._check_n(n, "patients")
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        return self._draw(int(n), conditions, int(seed))

    @abstractmethod
    def _fit_patients(self, df: pd.DataFrame, schema: Schema) -> None:
        """Learn from ``df`` (sorted by patient and time); set ``schema_`` and ``encoder_``."""

    @abstractmethod
    def _draw(self, n: int, conditions: Conditions | None, seed: int) -> pd.DataFrame:
        """``n`` patients with their visits drawn from ``seed``; ``conditions`` as the model
        supports them (a class mix: :class:`~clinsynth.models.base.ClassMix`), else refused."""
