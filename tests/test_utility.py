"""Utility (TSTR vs TRTR): ratios of one for a copy, chance for noise, bootstrap intervals that
behave, AUPRC as sklearn defines it, importance agreement that sees a broken column, and the
degenerate tables (one class, many classes, missing and unseen values) scored without a crash."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.inspection import permutation_importance
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import label_binarize

from clinsynth.data.datasets import simulate_trial
from clinsynth.evaluate.bootstrap import bootstrap_counts, weighted_auroc, weighted_average_precision
from clinsynth.evaluate.importance import permutation_importances
from clinsynth.evaluate.metrics import auprc_of, auroc_of
from clinsynth.evaluate.utility import (CLASSIFIERS, METRICS, REPORT_CLASSIFIERS, as_features, feature_pipeline, thin_curve,
                                        tstr)
from clinsynth.pipeline import split_holdout
from clinsynth.schema import Schema


@pytest.fixture(scope="module")
def trial():
    df = simulate_trial(n=1500, seed=3)
    train, test = split_holdout(df, "arm", test_size=1 / 3, seed=0)
    return train, test, Schema.infer(df, target="arm")


@pytest.fixture(scope="module")
def copy_result(trial):
    train, test, schema = trial
    return tstr(train, test, train.copy(), schema)


def _strict_json(d: dict) -> dict:
    return json.loads(json.dumps(d, allow_nan=False))


def test_real_data_as_synthetic_scores_a_ratio_of_one(copy_result, trial):
    r = copy_result
    assert r.classifiers == list(REPORT_CLASSIFIERS) and set(CLASSIFIERS) < set(REPORT_CLASSIFIERS)
    for clf in REPORT_CLASSIFIERS:
        real, synth = r.get(clf, "real"), r.get(clf, "synthetic")
        assert real.auroc > 0.85 and 0.5 < real.auprc <= 1 and 0.5 < real.accuracy <= 1
        for metric in METRICS:
            assert r.ratio(clf, metric) == pytest.approx(1.0, abs=1e-3)
            lo, hi = r.ratio_ci(clf, metric)
            assert lo == pytest.approx(1.0, abs=1e-3) and hi == pytest.approx(1.0, abs=1e-3)
    d = _strict_json(r.to_dict())
    assert d["tstr_over_trtr_auroc"] == {c: pytest.approx(1.0, abs=1e-3) for c in REPORT_CLASSIFIERS}
    assert set(d["ratios"]["gradient_boosting"]) == set(METRICS) and d["n_test"] == len(trial[1])
    score = d["scores"][0]
    assert {"classifier", "trained_on", "auroc", "accuracy", "auprc", "auroc_ci", "auprc_ci", "accuracy_ci"} <= set(score)
    assert isinstance(score["auroc_ci"], list) and len(score["auroc_ci"]) == 2


def test_a_float_target_matches_the_schemas_integer_classes(trial):
    train, test, schema = trial
    as_float = train.assign(arm=train["arm"].astype(float))  # 1.0 where the schema says 1
    r = tstr(train, test, as_float, schema, classifiers=("logistic_regression",), importance=False, n_bootstrap=0)
    assert r.ratio("logistic_regression") == pytest.approx(1.0)


def test_a_fresh_draw_of_the_same_process_scores_near_one(trial):
    train, test, schema = trial
    r = tstr(train, test, simulate_trial(n=len(train), seed=11), schema, importance=False)
    for clf in REPORT_CLASSIFIERS:
        assert 0.9 < r.ratio(clf, "auroc") < 1.1 and 0.9 < r.ratio(clf, "auprc") < 1.1


def test_shuffled_labels_score_chance_and_a_low_ratio(trial):
    train, test, schema = trial
    shuffled = train.assign(arm=np.random.default_rng(2).permutation(train["arm"].to_numpy()))
    r = tstr(train, test, shuffled, schema, importance=False)
    for clf in REPORT_CLASSIFIERS:
        s = r.get(clf, "synthetic")
        assert abs(s.auroc - 0.5) < 0.1, s
        assert s.auroc_ci[0] < 0.56 and s.auroc_ci[1] > 0.44, s  # the interval reaches chance, or nearly
        assert r.ratio(clf) < 0.7 and r.ratio_ci(clf, "auroc")[1] < 0.8


def test_intervals_bracket_the_estimate_and_narrow_with_more_rows():
    df = simulate_trial(n=4000, seed=5)
    schema = Schema.infer(df, target="arm")
    train, rest = df.iloc[:1500], df.iloc[1500:]
    widths = {}
    for n_test in (300, 2400):
        r = tstr(train, rest.iloc[:n_test], train, schema, classifiers=("logistic_regression",), importance=False)
        s = r.get("logistic_regression", "real")
        for metric in METRICS:
            lo, hi = getattr(s, f"{metric}_ci")
            assert lo <= getattr(s, metric) <= hi, (metric, s)
        widths[n_test] = {m: np.diff(getattr(s, f"{m}_ci"))[0] for m in METRICS}
    for metric in METRICS:  # 8x the rows: about sqrt(8) = 2.8x narrower
        assert widths[2400][metric] < 0.6 * widths[300][metric], widths
    again = tstr(train, rest.iloc[:2400], train, schema, classifiers=("logistic_regression",), importance=False)
    assert again.get("logistic_regression", "real") == s  # seeded: the same resamples, the same intervals
    none = tstr(train, rest.iloc[:300], train, schema, classifiers=("logistic_regression",), importance=False,
                n_bootstrap=0)
    assert none.get("logistic_regression", "real").auroc_ci is None


def test_auprc_is_sklearns_average_precision():
    y = np.array(["0", "0", "1", "1"])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    classes = np.array(["0", "1"])
    # by hand: 0.8 is a hit (P = 1, R = 1/2), 0.4 a miss, 0.35 a hit (P = 2/3, R = 1)
    assert auprc_of(y, proba, classes, ["0", "1"]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert auprc_of(y, proba, classes, ["0", "1"]) == pytest.approx(average_precision_score(y == "1", proba[:, 1]))
    assert weighted_average_precision(y == "1", proba[:, 1], np.ones(4))[0] == pytest.approx(0.5 + 1 / 3)
    # a classifier that never saw the positive class ranks nothing: AUPRC is the prevalence
    assert auprc_of(y, np.ones((4, 1)), np.array(["0"]), ["0", "1"]) == pytest.approx(0.5)

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    y3 = rng.choice(labels, 200)
    p3 = rng.dirichlet(np.ones(3), 200) + 0.5 * (y3[:, None] == np.array(labels))
    p3 /= p3.sum(1, keepdims=True)
    macro = average_precision_score(label_binarize(y3, classes=labels), p3, average="macro")
    assert auprc_of(y3, p3, np.array(labels), labels) == pytest.approx(macro)
    assert auroc_of(y3, p3, np.array(labels), labels) == pytest.approx(roc_auc_score(y3, p3, multi_class="ovr"))


def test_score_auprc_matches_sklearn_on_the_fitted_model(trial, copy_result):
    train, test, schema = trial
    pipe = feature_pipeline(schema, "logistic_regression").fit(as_features(train, schema), train["arm"].astype(str))
    proba = pipe.predict_proba(as_features(test, schema))[:, list(pipe.classes_).index("1")]
    y = test["arm"].astype(str).to_numpy() == "1"
    s = copy_result.get("logistic_regression", "real")
    assert s.auprc == pytest.approx(average_precision_score(y, proba))
    assert s.auroc == pytest.approx(roc_auc_score(y, proba))


def test_bootstrap_weights_equal_resampled_rows():
    rng = np.random.default_rng(1)
    positive = rng.random(400) < 0.3
    score = np.round(rng.random(400) + 0.3 * positive, 2)  # rounded: ties, as tree ensembles give
    counts = bootstrap_counts(400, 6, seed=4)
    assert counts.shape == (6, 400) and (counts.sum(1) == 400).all()
    auroc, ap = weighted_auroc(positive, score, counts), weighted_average_precision(positive, score, counts)
    for b in range(6):
        rows = np.repeat(np.arange(400), counts[b].astype(int))
        assert auroc[b] == pytest.approx(roc_auc_score(positive[rows], score[rows]), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(positive[rows], score[rows]), abs=1e-12)
    assert np.isnan(weighted_auroc(positive, score, (~positive)[None, :].astype(float)))[0]  # one class: undefined


def _key_column_table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"key": rng.normal(size=n), "mid": rng.normal(size=n), "site": rng.choice(list("ABC"), n)})
    for j in range(5):
        df[f"noise{j}"] = rng.normal(size=n)
    logit = 2.5 * df["key"] + 0.8 * df["mid"] + df["site"].map({"A": 0.7, "B": 0.0, "C": -0.7})
    df["outcome"] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    df.loc[rng.random(n) < 0.1, "mid"] = np.nan
    return df


def test_importance_agreement_sees_a_broken_key_column():
    df = _key_column_table(2400, 0)
    schema = Schema.infer(df, target="outcome")
    train, test = df.iloc[:1600], df.iloc[1600:]
    same = tstr(train, test, train.copy(), schema, n_bootstrap=0)
    broken_table = train.assign(key=np.random.default_rng(1).permutation(train["key"].to_numpy()))
    broken = tstr(train, test, broken_table, schema, n_bootstrap=0)
    for clf in REPORT_CLASSIFIERS:
        a = next(i for i in same.importance if i.classifier == clf)
        b = next(i for i in broken.importance if i.classifier == clf)
        assert a.spearman > 0.7 and a.top_real == a.top_synthetic and a.top_overlap == len(a.top_real)
        assert a.top_real[0] == "key" and len(a.top_real) <= 5 and set(a.real) == set(as_features(df, schema).columns)
        assert "key" in b.top_real and "key" not in b.top_synthetic[:1], b
        assert b.synthetic["key"] < 0.2 * b.real["key"]
        assert b.spearman < a.spearman == 1.0, (clf, a.spearman, b.spearman)
    assert _strict_json(broken.to_dict())["importance"][0]["top_real"][0] == "key"
    assert tstr(train, test, train, schema, n_bootstrap=0, importance=False).importance == []


def test_fast_permutation_importance_equals_sklearns(trial):
    train, test, schema = trial
    labels = ["0", "1"]
    X, y = as_features(train, schema), train["arm"].astype(str).to_numpy()
    X_test, y_test = as_features(test, schema).iloc[:300], test["arm"].astype(str).to_numpy()[:300]

    def scorer(est, X_, y_):
        return auroc_of(y_, est.predict_proba(X_), est.classes_, labels)

    for clf in ("logistic_regression", "gradient_boosting"):  # deterministic predictions (the forest sums threads)
        pipe = feature_pipeline(schema, clf, seed=0).fit(X, y)
        ours = permutation_importances(pipe, X_test, y_test, labels, n_repeats=2, seed=7)
        ref = permutation_importance(pipe, X_test, y_test, scoring=scorer, n_repeats=2, random_state=7).importances_mean
        np.testing.assert_allclose(ours, ref, atol=1e-12)
        assert ours.max() > 0.01


def test_roc_curves_for_a_binary_target(copy_result):
    curves = copy_result.curves
    assert {(c.classifier, c.trained_on) for c in curves} == {(c, t) for c in REPORT_CLASSIFIERS for t in ("real", "synthetic")}
    for c in curves:
        fpr, tpr = np.array(c.fpr), np.array(c.tpr)
        assert 2 <= len(fpr) <= 101 and (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
        assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
        assert abs(np.trapezoid(tpr, fpr) - c.auroc) < 0.02  # the thinned curve keeps the area
    d = _strict_json(copy_result.to_dict())["curves"][0]
    assert {"classifier", "trained_on", "fpr", "tpr"} <= set(d)
    fpr = np.r_[0, np.sort(np.random.default_rng(0).random(4000)), 1]
    thin_fpr, thin_tpr = thin_curve(fpr, np.sqrt(fpr))
    assert len(thin_fpr) <= 101 and thin_fpr[0] == 0 and thin_fpr[-1] == 1 and np.allclose(thin_tpr, np.sqrt(thin_fpr))


def test_a_multiclass_target():
    df = simulate_trial(n=1200, seed=6)
    schema = Schema.infer(df, target="race")
    train, test = split_holdout(df, "race", test_size=1 / 3, seed=0)
    r = tstr(train, test, train, schema, importance_rows=200)
    assert r.classes == ["Black", "Hispanic", "Other", "White"] and r.curves == [] and any("ROC" in n for n in r.notes)
    for s in r.scores:
        for metric in METRICS:
            lo, hi = getattr(s, f"{metric}_ci")
            assert 0 <= lo <= getattr(s, metric) <= hi <= 1
    assert all(r.ratio(c, m) == pytest.approx(1.0, abs=1e-3) for c in REPORT_CLASSIFIERS for m in METRICS)
    assert [i.classifier for i in r.importance] == list(REPORT_CLASSIFIERS)
    d = _strict_json(r.to_dict())
    assert d["positive_class"] is None and d["curves"] == []

    two_classes = train[train["race"].isin(["White", "Black"])]  # synthetic never shows two of the four
    r2 = tstr(train, test, two_classes, schema, classifiers=("logistic_regression",), importance=False)
    assert 0.4 < r2.get("logistic_regression", "synthetic").auroc < r2.get("logistic_regression", "real").auroc + 0.05


def test_a_one_class_synthetic_table_scores_chance_without_crashing(trial):
    train, test, schema = trial
    one_class = train[train["arm"] == 1]
    r = tstr(train, test, one_class, schema)
    prevalence = float((test["arm"].astype(str) == "1").mean())
    for clf in REPORT_CLASSIFIERS:
        s = r.get(clf, "synthetic")
        assert s.auroc == 0.5 and s.auroc_ci == (0.5, 0.5)
        assert s.auprc == pytest.approx(prevalence) and s.auprc_ci[0] <= prevalence <= s.auprc_ci[1]
        assert s.accuracy == pytest.approx(prevalence)
        assert r.ratio(clf) < 0.6
    assert any("one class" in n for n in r.notes)
    assert all(np.isnan(i.spearman) and i.top_synthetic == () for i in r.importance) and r.importance
    d = _strict_json(r.to_dict())
    assert all(i["spearman"] is None for i in d["importance"])


def test_missing_unseen_and_empty_values_are_scored():
    rng = np.random.default_rng(0)
    n = 1500
    codes = rng.integers(0, 300, n)
    df = pd.DataFrame({"a": rng.normal(size=n), "many": [f"k{v}" for v in codes], "few": rng.choice(list("uvw"), n),
                       "when": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n), unit="D")})
    df["y"] = np.where(df["a"] + (codes % 3 == 0) + rng.normal(size=n) > 0.5, "pos", "neg")
    df.loc[rng.random(n) < 0.3, "a"] = np.nan
    df.loc[rng.random(n) < 0.2, "many"] = None
    schema = Schema.infer(df, target="y")
    synthetic = df.iloc[:800].copy()
    synthetic.loc[synthetic.index[:40], "many"] = "never_seen"
    synthetic["when"] = pd.NaT  # a column with no value at all
    synthetic["few"] = None
    synthetic.loc[synthetic.index[:30], "y"] = None  # a missing target: left out
    synthetic.loc[synthetic.index[30:40], "y"] = "maybe"  # a class the schema does not know: never predicted
    r = tstr(df.iloc[:1000], df.iloc[1000:], synthetic, schema, importance_rows=300)
    for s in r.scores:
        assert 0.6 < s.auroc <= 1 and np.isfinite(s.auprc)
    assert {i.classifier for i in r.importance} == set(REPORT_CLASSIFIERS)
    assert all(i.top_real[0] == "a" for i in r.importance)
    assert any("30 row(s) of the synthetic table have no 'y'" in n for n in r.notes)
    _strict_json(r.to_dict())


def test_the_forest_is_bounded_only_on_large_tables(trial):
    schema = trial[2]
    small = feature_pipeline(schema, "random_forest").named_steps["model"]
    assert (small.n_estimators, small.max_samples, small.min_samples_leaf) == (200, None, 2)
    assert feature_pipeline(schema, "random_forest", n_rows=20_000).named_steps["model"].max_samples is None
    large = feature_pipeline(schema, "random_forest", n_rows=100_000).named_steps["model"]
    assert large.max_samples == 20_000 and large.n_estimators == 100
    gb = feature_pipeline(schema, "gradient_boosting", seed=3).named_steps["model"]
    assert gb.random_state == 3 and gb.early_stopping is False
    with pytest.raises(ValueError, match="unknown classifier"):
        feature_pipeline(schema, "svm")
