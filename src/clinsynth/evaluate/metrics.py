"""Point metrics of a classifier's class probabilities on the real holdout: AUROC and AUPRC.

Classes are taken in the schema's order, so a classifier that never saw a class in training (a
one-class synthetic table) is scored fairly rather than failing.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def class_scores(proba: np.ndarray, classes: np.ndarray, all_classes: list[str]) -> np.ndarray:
    """Scores in ``all_classes`` order, what every metric here ranks by; a class the classifier
    never saw gets 0 (and one it saw but the schema lacks is dropped). Two classes: the raw
    probabilities, as ``auroc_of`` uses them; beyond two, rows renormalised to sum to 1."""
    full = np.zeros((proba.shape[0], len(all_classes)))
    for j, c in enumerate(classes):
        if c in all_classes:
            full[:, all_classes.index(c)] = proba[:, j]
    if len(all_classes) == 2:
        return full
    return full / np.clip(full.sum(1, keepdims=True), 1e-12, None)


def probabilities(model: Any, X: Any) -> np.ndarray:
    """``model.predict_proba(X)`` rounded to 12 decimals. A random forest's threads add up its trees'
    probabilities in whatever order they finish, so two identical calls can differ in the last bits,
    and tied records then swap order in an AUROC (seen: a selection score 0.33625 vs 0.336225); the
    rounding makes the scores, and the epochs selection picks from them, reproducible."""
    return np.round(model.predict_proba(X), 12)


def auroc_of(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray, all_classes: list[str]) -> float:
    """AUROC of a classifier's probabilities (one-vs-rest beyond two classes); a class the
    classifier never saw in training gets probability 0, so a one-class synthetic table scores fairly.
    Beyond two classes, classes absent from ``y_true`` are left out of the macro average."""
    if len(all_classes) == 2:
        positive = all_classes[1]
        col = list(classes).index(positive) if positive in classes else None
        score = proba[:, col] if col is not None else np.zeros(len(y_true))
        return float(roc_auc_score(y_true == positive, score))
    full = class_scores(proba, classes, all_classes)
    present = [c for c in all_classes if c in set(y_true)]
    if len(present) == len(all_classes):
        return float(roc_auc_score(y_true, full, multi_class="ovr", labels=all_classes))
    per_class = [roc_auc_score(y_true == c, full[:, all_classes.index(c)]) for c in present]
    return float(np.mean(per_class)) if len(present) >= 2 else math.nan


def auprc_of(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray, all_classes: list[str]) -> float:
    """Average precision: of the positive class (the second label) for two classes, the macro
    one-vs-rest mean over the classes present in ``y_true`` beyond; unseen classes get probability 0."""
    full = class_scores(proba, classes, all_classes)
    if len(all_classes) == 2:
        return float(average_precision_score(y_true == all_classes[1], full[:, 1]))
    present = [c for c in all_classes if c in set(y_true)]
    if len(present) < 2:
        return math.nan
    return float(np.mean([average_precision_score(y_true == c, full[:, all_classes.index(c)]) for c in present]))
