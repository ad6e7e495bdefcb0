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
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score, roc_curve
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from clinsynth.errors import SchemaError
from clinsynth.schema import Schema

CLASSIFIERS = ("logistic_regression", "random_forest")  # the fast pair epoch selection loops over
REPORT_CLASSIFIERS = ("logistic_regression", "random_forest", "gradient_boosting")  # what tstr reports
METRICS = ("auroc", "auprc", "accuracy")

# Above this many training rows each random-forest tree sees a bootstrap sample of this many rows
# and the forest has half the trees: AUROC barely moves, the fit is ~5x cheaper at 100,000 rows.
FOREST_ROW_CAP = 20_000
CURVE_POINTS = 101


def _as_float(X: Any) -> np.ndarray:
    if isinstance(X, pd.DataFrame):
        try:
            return np.array(X.to_numpy(dtype=float, na_value=np.nan))
        except (TypeError, ValueError):
            return np.array(X.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, na_value=np.nan))
    return np.array(X, dtype=float)


class _Numbers(TransformerMixin, BaseEstimator):
    """Numbers as a float matrix, missing (NaN, None, pd.NA) as NaN, which gradient boosting splits
    on natively. A column with no value at all in training becomes 0 (it carries nothing, and
    sklearn's binning cannot take an all-missing feature)."""

    def fit(self, X: Any, y: Any = None) -> _Numbers:
        Z = _as_float(X)
        self.empty_ = np.isnan(Z).all(0) if len(Z) else np.ones(Z.shape[1], dtype=bool)
        self.n_features_in_ = Z.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object) if isinstance(X, pd.DataFrame) else None
        return self

    def transform(self, X: Any) -> np.ndarray:
        Z = _as_float(X)
        Z[:, self.empty_] = 0.0
        return Z

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        if input_features is None:
            input_features = self.feature_names_in_ if self.feature_names_in_ is not None else \
                [f"x{i}" for i in range(self.n_features_in_)]
        return np.asarray(input_features, dtype=object)


class _Codes(TransformerMixin, BaseEstimator):
    """Categories as codes for native categorical splits, missing and unseen as NaN. A column of
    more than 255 levels keeps its 254 most frequent and pools the rest (the splitter's limit);
    the pooling is only switched on when some column needs it, as finding rare levels is slow."""

    def fit(self, X: Any, y: Any = None) -> _Codes:
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        wide = bool(len(frame.columns)) and int(frame.nunique().max()) > 255
        self.encoder_ = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan,
                                       max_categories=255 if wide else None).fit(X)
        self.n_features_in_ = self.encoder_.n_features_in_
        return self

    def transform(self, X: Any) -> np.ndarray:
        return self.encoder_.transform(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return self.encoder_.get_feature_names_out(input_features)


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
            model = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, max_samples=FOREST_ROW_CAP, n_jobs=-1,
                                           random_state=seed)
        else:
            model = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, n_jobs=-1, random_state=seed)
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
            s = pd.to_datetime(s, errors="coerce", format="ISO8601") if not pd.api.types.is_datetime64_any_dtype(s) else s
            s = (s - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86_400
        elif spec.kind in ("binary", "categorical"):
            s = s.astype(object).where(s.notna(), np.nan).map(lambda v: v if v is np.nan else str(v))
        out[spec.name] = s
    return pd.DataFrame(out, index=df.index)


# -- result types ---------------------------------------------------------------------------------

Interval = tuple[float, float]


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


# -- point metrics ------------------------------------------------------------------------------


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


# -- bootstrap: the same metrics on many resamples at once, as weights ----------------------------
# A resample with replacement is the holdout with integer weights (how often each row was drawn);
# AUROC, average precision and accuracy of a weighted sample equal those of the repeated rows.


def bootstrap_counts(n: int, n_resamples: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """``(n_resamples, n)`` draw counts: row i of resample b was drawn ``counts[b, i]`` times."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    flat = (idx + (np.arange(n_resamples) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)


def _bootstrap_chunks(y: np.ndarray, n_resamples: int, seed: int, cells: int = 2_500_000):
    """``bootstrap_counts`` in blocks of resamples (memory stays near ``cells`` numbers whatever the
    holdout size), without the resamples that hold a single class of ``y``."""
    rng = np.random.default_rng(seed)
    per_block = max(1, min(n_resamples, cells // max(len(y), 1)))
    classes = np.unique(y)
    for start in range(0, n_resamples, per_block):
        counts = bootstrap_counts(len(y), min(per_block, n_resamples - start), rng)
        present = np.vstack([counts[:, y == c].sum(1) > 0 for c in classes])
        yield counts[present.sum(0) >= 2]


def _grouped(score: np.ndarray, positive: np.ndarray, weights: np.ndarray, descending: bool):
    """Positive and negative weight per distinct score value, in score order: (B, groups) each."""
    order = np.argsort(-score if descending else score, kind="mergesort")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    pos = positive[order]
    return np.add.reduceat(w * pos, starts, axis=1), np.add.reduceat(w * ~pos, starts, axis=1)


def weighted_auroc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Binary AUROC (ties count half) for each row of ``weights``; NaN where a class has no weight."""
    weights = np.atleast_2d(weights)
    pos_w, neg_w = _grouped(score, positive.astype(bool), weights, descending=False)
    below = np.cumsum(neg_w, axis=1) - neg_w
    w1, w0 = pos_w.sum(1), neg_w.sum(1)
    ok = (w1 > 0) & (w0 > 0)
    num = (pos_w * (below + 0.5 * neg_w)).sum(1)
    return np.where(ok, num / np.where(ok, w1 * w0, 1.0), np.nan)


def weighted_average_precision(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (sklearn's step-wise sum, no interpolation) for each row of ``weights``."""
    weights = np.atleast_2d(weights)
    pos_w, neg_w = _grouped(score, positive.astype(bool), weights, descending=True)
    tp, fp = np.cumsum(pos_w, axis=1), np.cumsum(neg_w, axis=1)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    w1, w0 = pos_w.sum(1), neg_w.sum(1)
    ok = (w1 > 0) & (w0 > 0)
    return np.where(ok, (pos_w * precision).sum(1) / np.where(ok, w1, 1.0), np.nan)


def _metric_draws(metric: str, y: np.ndarray, full: np.ndarray, correct: np.ndarray, labels: list[str],
                  weights: np.ndarray) -> np.ndarray:
    """One metric on each weighted resample: binary on the positive class, else the macro mean over
    the classes present (with both members and non-members) in that resample."""
    if metric == "accuracy":
        return weights @ correct.astype(float) / weights.sum(1)
    fn = weighted_auroc if metric == "auroc" else weighted_average_precision
    if len(labels) == 2:
        return fn(y == labels[1], full[:, 1], weights)
    per_class = np.vstack([fn(y == c, full[:, j], weights) for j, c in enumerate(labels)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no class is scorable
        return np.nanmean(per_class, axis=0)


def _interval(draws: np.ndarray, level: float) -> Interval | None:
    draws = draws[np.isfinite(draws)]
    if draws.size < 10:
        return None
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))


# -- importance ---------------------------------------------------------------------------------


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
        return auroc_of(y_, est.predict_proba(X_), est.classes_, labels)

    Z = prep.transform(X)
    owners = _column_owners(prep, Z.shape[1], list(X.columns))
    if owners is None or Z.shape[1] * len(X) > 50_000_000:
        from sklearn.inspection import permutation_importance

        return permutation_importance(pipe, X, y, scoring=scorer, n_repeats=n_repeats,
                                      random_state=seed).importances_mean
    Z = Z.toarray() if hasattr(Z, "toarray") else np.asarray(Z)
    owners_arr = np.asarray(owners)
    baseline = _quick_auroc(y, model.predict_proba(Z), model.classes_, labels)
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
        proba = model.predict_proba(np.vstack(copies))
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
        out.append(_Fitted(clf, name, model.classes_, model.predict_proba(Z_test), pipe))
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
        raise SchemaError("utility needs a target column: set one in the schema (e.g. --target arm)")
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
