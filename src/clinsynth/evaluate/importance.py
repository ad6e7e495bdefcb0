"""Do two models lean on the same columns? Permutation importance and its rank agreement.

Permutation importance per original column (the drop in holdout AUROC when the column is
shuffled), computed by shuffling the already transformed features that column owns; the
agreement of two models is the Spearman correlation of their importance vectors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from clinsynth.evaluate.bootstrap import weighted_auroc
from clinsynth.evaluate.encoders import _Codes, _Numbers
from clinsynth.evaluate.metrics import auroc_of, class_scores, probabilities


@dataclass(frozen=True)
class ImportanceAgreement:
    """Do the models trained on real and on synthetic records rely on the same columns?

    Importances are permutation importances per original column (the mean drop in holdout AUROC
    when the column is shuffled), ``spearman`` their rank correlation (NaN when either model
    ignores every column, e.g. one trained on a one-class table). The top lists hold at most
    ``top`` columns with a positive importance, largest first.
    """

    classifier: str
    spearman: float
    top_real: tuple[str, ...]
    top_synthetic: tuple[str, ...]
    real: dict[str, float]
    synthetic: dict[str, float]
    n_rows: int
    n_repeats: int

    @property
    def top_overlap(self) -> int:
        return len(set(self.top_real) & set(self.top_synthetic))


def _quick_auroc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray, labels: list[str]) -> float:
    """``auroc_of`` without sklearn's input checks (equal up to rounding), for the many scorings of
    permutation importance."""
    full = class_scores(proba, classes, labels)
    ones = np.ones((1, len(y)))
    if len(labels) == 2:
        return float(weighted_auroc(y == labels[1], full[:, 1], ones)[0])
    per_class = [weighted_auroc(y == c, full[:, j], ones)[0] for j, c in enumerate(labels) if (y == c).any()]
    return float(np.mean(per_class)) if len(per_class) >= 2 else math.nan


def _column_owners(prep: ColumnTransformer, n_columns: int, columns: list[str]) -> list[int] | None:
    """For each output feature of a fitted ``ColumnTransformer`` the input column it comes from,
    following the steps ``feature_pipeline`` uses; None if some step is not understood."""
    owners: list[int] = []
    position = {c: i for i, c in enumerate(columns)}
    for _, trans, cols in prep.transformers_:
        if isinstance(trans, str) and trans == "drop" or len(cols) == 0:
            continue
        current = [position[columns[c]] if isinstance(c, (int, np.integer)) else position[c] for c in cols]
        steps = [s for _, s in trans.steps] if isinstance(trans, Pipeline) else [trans]
        for step in steps:
            if isinstance(step, str) and step == "passthrough":
                continue
            if isinstance(step, (StandardScaler, OrdinalEncoder, _Numbers, _Codes)):
                continue  # one output per input (an ordinal code may stand for a group of rare categories)
            if isinstance(step, SimpleImputer):
                if not step.keep_empty_features:
                    return None
                indicator = getattr(step, "indicator_", None)
                current = current + ([current[k] for k in indicator.features_] if indicator is not None else [])
            elif isinstance(step, OneHotEncoder):
                if step.drop_idx_ is not None or getattr(step, "_infrequent_enabled", False):
                    return None
                current = [owner for owner, cats in zip(current, step.categories_) for _ in range(len(cats))]
            else:
                return None
        owners.extend(current)
    return owners if len(owners) == n_columns else None


def _sklearn_permutations(n: int, n_repeats: int, seed: int) -> list[np.ndarray]:
    """The row orders ``sklearn.inspection.permutation_importance(random_state=seed)`` applies to
    every column: one seed for all columns, each repeat shuffling the previous repeat's order."""
    random_seed = np.random.RandomState(seed).randint(np.iinfo(np.int32).max + 1)
    rs = np.random.RandomState(random_seed)
    shuffle, current, out = np.arange(n), np.arange(n), []
    for _ in range(n_repeats):
        rs.shuffle(shuffle)
        current = current[shuffle]
        out.append(current.copy())
    return out


def permutation_importances(pipe: Pipeline, X: pd.DataFrame, y: np.ndarray, labels: list[str], n_repeats: int = 3,
                            seed: int = 0, chunk_rows: int = 40_000) -> np.ndarray:
    """Mean drop in AUROC when each column of the raw frame ``X`` is shuffled (one value per column).

    The same numbers as ``sklearn.inspection.permutation_importance(pipe, X, y, scoring=<auroc_of>,
    n_repeats, random_state=seed).importances_mean``, computed faster: every preprocessing step is
    column-wise, so shuffling a raw column equals shuffling the features made from it. ``X`` is
    transformed once and the permuted copies are scored in a few large predictions.
    """
    prep, model = pipe.named_steps["prep"], pipe.named_steps["model"]

    def scorer(est: Any, X_: Any, y_: np.ndarray) -> float:
        return auroc_of(y_, probabilities(est, X_), est.classes_, labels)

    Z = prep.transform(X)
    owners = _column_owners(prep, Z.shape[1], list(X.columns))
    if owners is None or Z.shape[1] * len(X) > 50_000_000:
        from sklearn.inspection import permutation_importance

        return permutation_importance(pipe, X, y, scoring=scorer, n_repeats=n_repeats,
                                      random_state=seed).importances_mean
    Z = Z.toarray() if hasattr(Z, "toarray") else np.asarray(Z)
    owners_arr = np.asarray(owners)
    baseline = _quick_auroc(y, probabilities(model, Z), model.classes_, labels)
    perms = _sklearn_permutations(len(X), n_repeats, seed)
    importances = np.zeros(X.shape[1])
    todo = [j for j in range(X.shape[1]) if (owners_arr == j).any()]
    per_chunk = max(1, chunk_rows // (len(X) * n_repeats))
    for start in range(0, len(todo), per_chunk):
        block = todo[start:start + per_chunk]
        copies = []
        for j in block:
            feats = np.flatnonzero(owners_arr == j)
            for perm in perms:
                Zp = Z.copy()
                Zp[:, feats] = Z[perm][:, feats]
                copies.append(Zp)
        proba = probabilities(model, np.vstack(copies))
        for k, j in enumerate(block):
            drops = []
            for r in range(n_repeats):
                rows = slice((k * n_repeats + r) * len(X), (k * n_repeats + r + 1) * len(X))
                drops.append(baseline - _quick_auroc(y, proba[rows], model.classes_, labels))
            importances[j] = float(np.mean(drops))
    return importances


def _top(values: dict[str, float], k: int) -> tuple[str, ...]:
    ranked = sorted(((v, -i, c) for i, (c, v) in enumerate(values.items()) if v > 0), reverse=True)
    return tuple(c for _, _, c in ranked[:k])


def importance_agreement(classifier: str, real: np.ndarray, synthetic: np.ndarray | None, columns: list[str],
                         n_rows: int, n_repeats: int, top: int = 5) -> ImportanceAgreement:
    """Spearman correlation of two importance vectors, and each one's top columns."""
    from scipy.stats import spearmanr

    real_d = {c: float(v) for c, v in zip(columns, real)}
    synth_d = {c: float(v) for c, v in zip(columns, synthetic)} if synthetic is not None else {c: 0.0 for c in columns}
    a, b = np.asarray(list(real_d.values())), np.asarray(list(synth_d.values()))
    rho = math.nan
    if len(columns) >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
        rho = float(spearmanr(a, b).statistic)
    return ImportanceAgreement(classifier, rho, _top(real_d, top), _top(synth_d, top), real_d, synth_d, n_rows, n_repeats)
