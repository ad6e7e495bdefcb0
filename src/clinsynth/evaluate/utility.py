"""Utility: do models trained on synthetic records work on real ones?

Train-on-synthetic/test-on-real (TSTR) next to train-on-real/test-on-real (TRTR), with the same
features, classifiers and holdout, as in the SPRINT and medGAN work. Pure functions of frames.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from clinsynth.errors import SchemaError
from clinsynth.schema import Schema

CLASSIFIERS = ("logistic_regression", "random_forest")


def feature_pipeline(schema: Schema, classifier: str, seed: int = 0) -> Pipeline:
    """Impute (with missing indicators), scale or one-hot, then classify: one recipe for all."""
    numeric = [c.name for c in schema.model_columns if c.kind in ("continuous", "integer", "datetime") and c.name != schema.target]
    discrete = [c.name for c in schema.model_columns if c.kind in ("binary", "categorical") and c.name != schema.target]
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                              OneHotEncoder(handle_unknown="ignore")), discrete),
    ])
    if classifier == "logistic_regression":
        model = LogisticRegression(max_iter=1000)
    elif classifier == "random_forest":
        model = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, n_jobs=-1, random_state=seed)
    else:
        raise ValueError(f"unknown classifier {classifier!r}; choose from {CLASSIFIERS}")
    return Pipeline([("prep", prep), ("model", model)])


def as_features(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Datetimes as days, categories as text, so every learner sees the same columns."""
    out = {}
    for spec in schema.model_columns:
        if spec.name == schema.target:
            continue
        s = df[spec.name]
        if spec.kind == "datetime":
            s = pd.to_datetime(s, errors="coerce", format="ISO8601") if not pd.api.types.is_datetime64_any_dtype(s) else s
            s = (s - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86_400
        elif spec.kind in ("binary", "categorical"):
            s = s.astype(object).where(s.notna(), np.nan).map(lambda v: v if v is np.nan else str(v))
        out[spec.name] = s
    return pd.DataFrame(out, index=df.index)


@dataclass(frozen=True)
class Score:
    classifier: str
    trained_on: str
    auroc: float
    accuracy: float


@dataclass
class UtilityResult:
    """TSTR and TRTR scores for each classifier, and their ratio (1.0 = as useful as real)."""

    target: str
    scores: list[Score] = field(default_factory=list)

    def get(self, classifier: str, trained_on: str) -> Score:
        return next(s for s in self.scores if s.classifier == classifier and s.trained_on == trained_on)

    def ratio(self, classifier: str, metric: str = "auroc") -> float:
        return getattr(self.get(classifier, "synthetic"), metric) / getattr(self.get(classifier, "real"), metric)

    def to_dict(self) -> dict:
        out: dict = {"target": self.target, "scores": [asdict(s) for s in self.scores]}
        out["tstr_over_trtr_auroc"] = {c: self.ratio(c) for c in {s.classifier for s in self.scores}}
        return out


def auroc_of(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray, all_classes: list[str]) -> float:
    """AUROC of a classifier's probabilities (one-vs-rest beyond two classes); a class the
    classifier never saw in training gets probability 0, so a one-class synthetic table scores fairly."""
    if len(all_classes) == 2:
        positive = all_classes[1]
        col = list(classes).index(positive) if positive in classes else None
        score = proba[:, col] if col is not None else np.zeros(len(y_true))
        return float(roc_auc_score(y_true == positive, score))
    full = np.zeros((len(y_true), len(all_classes)))
    for j, c in enumerate(classes):
        full[:, all_classes.index(c)] = proba[:, j]
    full = full / np.clip(full.sum(1, keepdims=True), 1e-12, None)
    return float(roc_auc_score(y_true, full, multi_class="ovr", labels=all_classes))


def tstr(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema,
         classifiers: tuple[str, ...] = CLASSIFIERS, seed: int = 0) -> UtilityResult:
    """Score classifiers trained on real and on synthetic records, both tested on ``real_test``."""
    target = schema.target
    if target is None:
        raise SchemaError("utility needs a target column: set one in the schema (e.g. --target arm)")
    labels = [str(c) for c in schema.column(target).categories or []]
    y_test = real_test[target].astype(str).to_numpy()
    X_test = as_features(real_test, schema)
    result = UtilityResult(target=target)
    for name, train in (("real", real_train), ("synthetic", synthetic)):
        y = train[target].astype(str).to_numpy()
        X = as_features(train, schema)
        for clf in classifiers:
            if len(np.unique(y)) < 2:
                result.scores.append(Score(clf, name, 0.5, float(np.mean(y_test == y[0]))))
                continue
            pipe = feature_pipeline(schema, clf, seed).fit(X, y)
            proba = pipe.predict_proba(X_test)
            classes = pipe.classes_
            pred = classes[proba.argmax(1)]
            result.scores.append(Score(clf, name, auroc_of(y_test, proba, classes, labels), float(accuracy_score(y_test, pred))))
    return result
