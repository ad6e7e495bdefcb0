"""Utility: do models trained on synthetic records work on real ones?

Train-on-synthetic/test-on-real (TSTR) next to train-on-real/test-on-real (TRTR), with the same
features, classifiers and holdout, as in the SPRINT and medGAN work. Pure functions of frames.

Per classifier and training source, on the real holdout: AUROC, AUPRC (average precision) and
accuracy, each with a percentile bootstrap confidence interval over the holdout rows (the fixed
predictions re-scored on resampled rows; the same resamples for every model, so the TSTR/TRTR
ratio gets a paired interval too). Beyond scores, whether the two models lean on the same
columns: permutation importance per original column, and the Spearman correlation of the two
importance vectors. For a binary target, the ROC curve of each model, thinned for a plot.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_curve
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from clinsynth import threads
from clinsynth.errors import SchemaError
from clinsynth.evaluate.bounds import level_text
from clinsynth.evaluate.bootstrap import Interval, _bootstrap_chunks, _interval, _metric_draws
from clinsynth.evaluate.encoders import _Codes, _Numbers
from clinsynth.evaluate.importance import ImportanceAgreement, importance_agreement, permutation_importances
from clinsynth.evaluate.metrics import auprc_of, auroc_of, class_scores, probabilities
from clinsynth.schema import Schema, parse_datetimes, wall_clock

CLASSIFIERS = ("logistic_regression", "random_forest")  # the fast pair epoch selection loops over
REPORT_CLASSIFIERS = ("logistic_regression", "random_forest", "gradient_boosting")  # what tstr reports
METRICS = ("auroc", "auprc", "accuracy")

# Above this many training rows each random-forest tree sees a bootstrap sample of this many rows
# and the forest has half the trees: AUROC barely moves, the fit is ~5x cheaper at 100,000 rows.
FOREST_ROW_CAP = 20_000
CURVE_POINTS = 101


def feature_pipeline(schema: Schema, classifier: str, seed: int = 0, n_rows: int | None = None) -> Pipeline:
    """Impute (with missing indicators), scale or one-hot, then classify: one recipe for the
    linear model and the forest. Gradient boosting takes the numbers as they are (missing values
    are split on natively) and the categories as codes with native categorical splits.

    ``n_rows`` (the training size, if known) bounds the forest's cost on large tables: above
    ``FOREST_ROW_CAP`` rows each of 100 trees sees a bootstrap sample of ``FOREST_ROW_CAP`` rows;
    at or below it (or when not given) it is 200 trees on full bootstrap samples, as always.
    """
    numeric = [c.name for c in schema.model_columns if c.kind in ("continuous", "integer", "datetime") and c.name != schema.target]
    discrete = [c.name for c in schema.model_columns if c.kind in ("binary", "categorical") and c.name != schema.target]
    if classifier == "gradient_boosting":
        prep = ColumnTransformer([
            ("num", _Numbers(), numeric),
            ("cat", _Codes(), discrete),
        ])
        categorical = list(range(len(numeric), len(numeric) + len(discrete))) or None
        model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, early_stopping=False,
                                               categorical_features=categorical, random_state=seed)
        return Pipeline([("prep", prep), ("model", model)])
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                              OneHotEncoder(handle_unknown="ignore")), discrete),
    ])
    if classifier == "logistic_regression":
        model = LogisticRegression(max_iter=1000)
    elif classifier == "random_forest":
        if n_rows is not None and n_rows > FOREST_ROW_CAP:
            model = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, max_samples=FOREST_ROW_CAP, n_jobs=threads.count(),
                                           random_state=seed)
        else:
            model = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, n_jobs=threads.count(), random_state=seed)
    else:
        raise ValueError(f"unknown classifier {classifier!r}; choose from {REPORT_CLASSIFIERS}")
    return Pipeline([("prep", prep), ("model", model)])


def as_features(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Datetimes as days, categories as text, so every learner sees the same columns."""
    out = {}
    for spec in schema.model_columns:
        if spec.name == schema.target:
            continue
        s = df[spec.name]
        if spec.kind == "datetime":
            s = wall_clock(parse_datetimes(s))  # zone-aware times on their wall clock, as the encoders read them
            s = (s - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86_400
        elif spec.kind in ("binary", "categorical"):
            s = s.astype(object).where(s.notna(), np.nan).map(lambda v: v if v is np.nan else level_text(v))
        out[spec.name] = s
    return pd.DataFrame(out, index=df.index)


# -- result types ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """One model's scores on the real holdout; ``*_ci`` are bootstrap intervals (None when undefined)."""

    classifier: str
    trained_on: str  # "real" (TRTR) or "synthetic" (TSTR)
    auroc: float
    accuracy: float
    auprc: float = math.nan
    auroc_ci: Interval | None = None
    auprc_ci: Interval | None = None
    accuracy_ci: Interval | None = None


@dataclass(frozen=True)
class RocCurve:
    """ROC of one model on the real holdout (binary targets), at most ``CURVE_POINTS`` corners."""

    classifier: str
    trained_on: str
    positive: str
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    auroc: float


@dataclass
class UtilityResult:
    """TSTR and TRTR scores for each classifier, and their ratio (1.0 = as useful as real)."""

    target: str
    scores: list[Score] = field(default_factory=list)
    importance: list[ImportanceAgreement] = field(default_factory=list)
    curves: list[RocCurve] = field(default_factory=list)
    # metric → classifier → paired bootstrap interval of the TSTR/TRTR ratio
    ratio_cis: dict[str, dict[str, Interval | None]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    n_test: int = 0
    n_bootstrap: int = 0
    ci_level: float = 0.95
    notes: list[str] = field(default_factory=list)

    def get(self, classifier: str, trained_on: str) -> Score:
        return next(s for s in self.scores if s.classifier == classifier and s.trained_on == trained_on)

    def ratio(self, classifier: str, metric: str = "auroc") -> float:
        real = getattr(self.get(classifier, "real"), metric)
        return getattr(self.get(classifier, "synthetic"), metric) / real if real else math.nan

    def ratio_ci(self, classifier: str, metric: str = "auroc") -> Interval | None:
        return self.ratio_cis.get(metric, {}).get(classifier)

    @property
    def classifiers(self) -> list[str]:
        return list(dict.fromkeys(s.classifier for s in self.scores))

    def to_dict(self) -> dict:
        """Plain JSON (lists, floats, None for anything undefined). Layout::

            target, classes, positive_class, n_test, bootstrap {resamples, level},
            scores: [{classifier, trained_on, auroc, accuracy, auprc, auroc_ci, auprc_ci, accuracy_ci}],
            tstr_over_trtr_auroc: {classifier: ratio},
            ratios: {classifier: {auroc, auprc, accuracy}},
            ratio_cis: {classifier: {auroc, auprc, accuracy}}  ([lo, hi] or None),
            importance: [{classifier, spearman, top_real, top_synthetic, top_overlap, real, synthetic, n_rows, n_repeats}],
            curves: [{classifier, trained_on, positive, fpr, tpr, auroc}],
            notes: [str]
        """
        names = self.classifiers
        out: dict[str, Any] = {
            "target": self.target, "classes": list(self.classes),
            "positive_class": self.classes[1] if len(self.classes) == 2 else None,
            "n_test": self.n_test, "bootstrap": {"resamples": self.n_bootstrap, "level": self.ci_level},
            "scores": [asdict(s) for s in self.scores],
            "tstr_over_trtr_auroc": {c: self.ratio(c) for c in names},
            "ratios": {c: {m: self.ratio(c, m) for m in METRICS} for c in names},
            "ratio_cis": {c: {m: self.ratio_ci(c, m) for m in METRICS} for c in names},
            "importance": [{**asdict(i), "top_overlap": i.top_overlap} for i in self.importance],
            "curves": [asdict(c) for c in self.curves],
            "notes": list(self.notes),
        }
        return _plain(out)


def _plain(obj: Any) -> Any:
    """Tuples and arrays to lists, numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- curves -------------------------------------------------------------------------------------


def thin_curve(fpr: np.ndarray, tpr: np.ndarray, points: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` of the curve's own corners, spread evenly along its length, ends kept."""
    if len(fpr) <= points:
        return fpr, tpr
    length = np.r_[0.0, np.cumsum(np.abs(np.diff(fpr)) + np.abs(np.diff(tpr)))]
    keep = np.unique(np.r_[0, np.searchsorted(length, np.linspace(0, length[-1], points)[1:-1]), len(fpr) - 1])
    return fpr[keep], tpr[keep]


# -- the evaluation -----------------------------------------------------------------------------


@dataclass
class _Fitted:
    classifier: str
    trained_on: str
    classes: np.ndarray
    proba: np.ndarray  # on the whole real holdout, columns in ``classes`` order
    pipe: Pipeline | None  # None: a one-class training table, predicted as that class


def target_labels(values: pd.Series, labels: list[str]) -> np.ndarray:
    """The target as text, as the schema's categories are written (a float 1.0 read where the
    schema says 1 is "1"); missing stays None."""
    known = set(labels)

    def label(v: Any, present: bool) -> str | None:
        if not present:
            return None
        text = str(v)
        if text not in known and isinstance(v, (float, np.floating)) and float(v).is_integer() and str(int(v)) in known:
            return str(int(v))
        return text

    return np.array([label(v, p) for v, p in zip(values.to_numpy(dtype=object), values.notna().to_numpy())], dtype=object)


def _with_target(df: pd.DataFrame, name: str, target: str, notes: list[str]) -> pd.DataFrame:
    missing = int(df[target].isna().sum())
    if missing:
        notes.append(f"{missing} row(s) of the {name} table have no {target!r}; they are left out of the utility scores")
        return df[df[target].notna()]
    return df


def _fit_and_predict(train: pd.DataFrame, name: str, X_test: pd.DataFrame, schema: Schema,
                     classifiers: tuple[str, ...], seed: int, labels: list[str]) -> list[_Fitted]:
    """Each classifier fitted on ``train``; the preprocessing a recipe shares is fitted once."""
    y = target_labels(train[schema.target], labels).astype(str)
    if len(np.unique(y)) < 2:
        only = np.array([y[0]]) if len(y) else np.array(["<none>"])
        return [_Fitted(clf, name, only, np.ones((len(X_test), 1)), None) for clf in classifiers]
    X = as_features(train, schema)
    fitted_prep: dict[str, tuple[ColumnTransformer, Any, Any]] = {}
    out = []
    for clf in classifiers:
        pipe = feature_pipeline(schema, clf, seed, n_rows=len(train))
        recipe = "native" if clf == "gradient_boosting" else "onehot"
        if recipe not in fitted_prep:
            prep = pipe.named_steps["prep"]
            fitted_prep[recipe] = (prep, prep.fit_transform(X, y), prep.transform(X_test))
        prep, Z, Z_test = fitted_prep[recipe]
        pipe.set_params(prep=prep)
        model = pipe.named_steps["model"].fit(Z, y)
        out.append(_Fitted(clf, name, model.classes_, probabilities(model, Z_test), pipe))
    return out


def tstr(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema,
         classifiers: tuple[str, ...] = REPORT_CLASSIFIERS, seed: int = 0, *, n_bootstrap: int = 200,
         ci_level: float = 0.95, importance: bool = True, importance_rows: int = 2_000, importance_repeats: int = 3,
         top: int = 5) -> UtilityResult:
    """Score classifiers trained on real and on synthetic records, both tested on ``real_test``.

    ``n_bootstrap`` resamples of the holdout (seeded by ``seed``; 0 for no intervals) give the
    ``ci_level`` intervals. With ``importance``, permutation importances per original column are
    computed on a seeded subsample of at most ``importance_rows`` holdout rows, ``importance_repeats``
    shuffles each, for the real- and the synthetic-trained model alike.
    """
    target = schema.target
    if target is None:
        raise SchemaError("utility needs a target column: set one in the schema (Schema.infer(df, target=...), or its \"target\" entry)")
    labels = [str(c) for c in schema.column(target).categories or []]
    notes: list[str] = []
    real_train = _with_target(real_train, "real training", target, notes)
    synthetic = _with_target(synthetic, "synthetic", target, notes)
    real_test = _with_target(real_test, "real holdout", target, notes)
    y_test = target_labels(real_test[target], labels).astype(str)
    if len(np.unique(y_test)) < 2:
        raise SchemaError(f"the real holdout has only one value of the target {target!r}, so AUROC is undefined; "
                          "use a larger or stratified holdout")
    X_test = as_features(real_test, schema)
    result = UtilityResult(target=target, classes=labels, n_test=len(real_test), n_bootstrap=n_bootstrap, ci_level=ci_level,
                           notes=notes)

    fits: list[_Fitted] = []
    for name, train in (("real", real_train), ("synthetic", synthetic)):
        fits += _fit_and_predict(train, name, X_test, schema, classifiers, seed, labels)
        if fits[-1].pipe is None:
            result.notes.append(f"the {name} training table holds one class of {target!r}: its 'models' predict that "
                                "class for every record (AUROC 0.5, AUPRC the prevalence)")

    prepared = []
    for f in fits:
        pred = f.classes[f.proba.argmax(1)]
        prepared.append((class_scores(f.proba, f.classes, labels), pred, y_test == pred))
    blocks: dict[tuple[str, str, str], list[np.ndarray]] = {(f.classifier, f.trained_on, m): [] for f in fits for m in METRICS}
    for counts in _bootstrap_chunks(y_test, n_bootstrap, seed):  # the same resamples for every model: paired
        for f, (full, _, correct) in zip(fits, prepared):
            for metric in METRICS:
                blocks[(f.classifier, f.trained_on, metric)].append(_metric_draws(metric, y_test, full, correct, labels, counts))
    draws = {key: np.concatenate(parts) if parts else np.empty(0) for key, parts in blocks.items()}
    for f, (full, pred, _) in zip(fits, prepared):
        ci = {m: _interval(draws[(f.classifier, f.trained_on, m)], ci_level) for m in METRICS}
        result.scores.append(Score(f.classifier, f.trained_on,
                                   auroc=auroc_of(y_test, f.proba, f.classes, labels),
                                   accuracy=float(accuracy_score(y_test, pred)),
                                   auprc=auprc_of(y_test, f.proba, f.classes, labels),
                                   auroc_ci=ci["auroc"], auprc_ci=ci["auprc"], accuracy_ci=ci["accuracy"]))
        if len(labels) == 2:
            fpr, tpr, _ = roc_curve(y_test == labels[1], full[:, 1])
            fpr, tpr = thin_curve(fpr, tpr)
            result.curves.append(RocCurve(f.classifier, f.trained_on, labels[1], tuple(map(float, fpr)),
                                          tuple(map(float, tpr)), result.scores[-1].auroc))
    if len(labels) != 2:
        result.notes.append(f"no ROC curves: {target!r} has {len(labels)} classes (curves are drawn for binary targets)")

    for metric in METRICS:
        result.ratio_cis[metric] = {}
        for clf in classifiers:
            real, synth = draws[(clf, "real", metric)], draws[(clf, "synthetic", metric)]
            ratio = np.divide(synth, real, out=np.full_like(real, np.nan), where=real > 0)
            result.ratio_cis[metric][clf] = _interval(ratio, ci_level)

    if importance:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(real_test), size=min(importance_rows, len(real_test)), replace=False))
        X_sub, y_sub = X_test.iloc[rows], y_test[rows]
        if len(np.unique(y_sub)) < 2:
            result.notes.append("no importance agreement: the holdout subsample holds one class of the target")
        else:
            columns = list(X_test.columns)
            for clf in classifiers:
                values = {}
                for f in fits:
                    if f.classifier == clf and f.pipe is not None:
                        values[f.trained_on] = permutation_importances(f.pipe, X_sub, y_sub, labels, importance_repeats, seed)
                if "real" not in values:
                    continue
                result.importance.append(importance_agreement(clf, values["real"], values.get("synthetic"), columns,
                                                              len(rows), importance_repeats, top))
    return result
