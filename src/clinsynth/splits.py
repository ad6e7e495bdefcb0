"""Train/holdout splits: the holdout never reaches the model, and evaluation reads it.

A table splits by row (stratified by the target), a long-format table by whole patients (all of a
patient's visits on one side), a code matrix by patient.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from clinsynth.errors import ConfigError


def split_holdout(df: pd.DataFrame, target: str | None, test_size: float = 0.2,
                  seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/holdout split; the holdout never reaches the model."""
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must be between 0 and 1, got {test_size}")
    stratify = df[target].astype(str) if target is not None else None
    _check_split(len(df), test_size, stratify, target)
    train, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=stratify)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def split_patients_holdout(df: pd.DataFrame, patient: str, target: str | None, test_size: float = 0.2,
                           seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The holdout of a long-format table: whole patients (all of their rows) on one side, stratified
    by their per-patient target — a patient's visits split across both sides would let the privacy
    attacks and train-on-synthetic/test-on-real see the same person twice."""
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must be between 0 and 1, got {test_size}")
    first = df.groupby(patient, sort=False).head(1)
    ids = first[patient].to_numpy()
    stratify = first[target].astype(str).to_numpy() if target is not None else None
    _check_split(len(ids), test_size, pd.Series(stratify) if stratify is not None else None, target, unit="patients")
    train_ids, _ = train_test_split(ids, test_size=test_size, random_state=seed, stratify=stratify)
    in_train = df[patient].isin(set(train_ids.tolist()))
    return df[in_train].reset_index(drop=True), df[~in_train].reset_index(drop=True)


def _check_split(n: int, test_size: float, stratify: pd.Series | None, target: str | None,
                 unit: str = "rows") -> None:
    """Refuse, in one line, a table too small for the holdout (scikit-learn's split would raise)."""
    n_test = math.ceil(test_size * n)
    if n_test < 2 or n - n_test < 2:
        raise ConfigError(f"{n} {unit} are too few to hold {test_size:.0%} out: training and holdout need "
                          f"at least 2 {unit} each (more {unit}, or another --test-size)")
    if stratify is not None:
        counts = stratify.value_counts()
        if counts.min() < 2:
            raise ConfigError(f"target '{target}' class {counts.idxmin()!r} has only {counts.min()} {unit[:-1]}: a "
                              "stratified holdout needs at least 2 of each class (merge or drop that class)")
        if n_test < len(counts) or n - n_test < len(counts):
            raise ConfigError(f"{n} rows are too few to hold {test_size:.0%} out stratified by '{target}': training "
                              f"and holdout each need a row of all {len(counts)} classes (another --test-size)")


def split_patients(codes: Any, test_size: float = 0.2, seed: int = 0) -> tuple[Any, Any]:
    """Random train/holdout split of a code matrix's patients (with their ordinary columns)."""
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must be between 0 and 1, got {test_size}")
    n = codes.n_patients
    n_test = int(round(test_size * n))
    if n_test < 2 or n - n_test < 2:
        raise ConfigError(f"{n} patients are too few to hold {test_size:.0%} out: "
                          "training and holdout need at least 2 patients each")
    order = np.random.default_rng(seed).permutation(n)
    return codes.subset(np.sort(order[n_test:])), codes.subset(np.sort(order[:n_test]))
