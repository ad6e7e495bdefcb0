"""Bounded evaluation (issue 25, point 9): the levels full / fast / none, and the caps that keep
``full`` finite on many classes, many columns and many rows.

Each cap is checked by the work it leaves (classes a classifier is fitted on, columns in the
association matrix, rows a model trains on), never by wall time, and metrics.json must say what
was capped. Where no cap applies, ``full`` gives the numbers the parts give on their own.
"""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clinsynth as cs
from clinsynth.data.datasets import simulate_trial
from clinsynth.data.io import write_table
from clinsynth.evaluate import bounds
from clinsynth.pipeline import split_holdout
from clinsynth.report.html import render

SECTION_IDS = ("summary", "guarantee", "fidelity", "longitudinal", "utility", "attacks", "about")


def many_classes(n: int, seed: int, classes: int = 200) -> pd.DataFrame:
    """Two features and a text target of ``classes`` classes, half drawn uniformly, half by age."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    by_age = np.clip(((latent + 3) / 6 * classes).astype(int), 0, classes - 1)
    k = np.where(rng.random(n) < 0.5, rng.integers(0, classes, n), by_age)
    k[:classes] = np.arange(classes)  # every class occurs
    return pd.DataFrame({"age": np.round(50 + 10 * latent + rng.normal(size=n), 1), "sex": rng.choice(["F", "M"], n),
                         "diagnosis": np.array([f"dx_{i:03d}" for i in range(classes)])[k]})


def wide(n: int, seed: int, columns: int) -> pd.DataFrame:
    """``columns`` columns: numbers and 3-level categories alternating, and a binary outcome."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    out: dict[str, np.ndarray] = {}
    for j in range(columns - 1):
        noisy = latent[:, j % 3] + rng.normal(size=n)
        out[f"x{j:04d}"] = np.round(noisy, 3) if j % 2 == 0 else np.array(["a", "b", "c"])[np.digitize(noisy, [-0.5, 0.5])]
    out["outcome"] = (latent[:, 0] + rng.logistic(size=n) > 0).astype(np.int64)
    return pd.DataFrame(out)


def _caps(metrics: dict, what: str, part: str | None = None) -> list[dict]:
    return [c for c in metrics["evaluation"]["capped"] if c["what"] == what and (part is None or c["part"] == part)]


def _verdict(metrics: dict, section: str) -> dict:
    return next(v for v in metrics["verdicts"] if v["section"] == section)


@pytest.fixture(scope="module")
def split():
    train, test = split_holdout(simulate_trial(n=600, seed=3), "arm", seed=0)
    return train, test, cs.Schema.infer(train, target="arm")


@pytest.fixture(scope="module")
def synthetic(split):
    train, _, _ = split
    return train.sample(frac=1.0, random_state=1).reset_index(drop=True)


# --- many classes ---------------------------------------------------------------------------------
def test_a_200_class_target_is_scored_on_its_top_classes_plus_other(monkeypatch):
    """The issue's case: 1,000 rows × 3 columns with a 200-class text target was still in utility
    after 400 s. Every classifier must now be fitted on at most 20 classes + "other"."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    fitted: list[int] = []
    for cls in (HistGradientBoostingClassifier, RandomForestClassifier, LogisticRegression):
        original = cls.fit

        def spy(self, X, y, *args, _original=original, **kwargs):
            fitted.append(len(np.unique(np.asarray(y))))
            if fitted[-1] > bounds.MAX_CLASSES + 1:
                raise AssertionError(f"{type(self).__name__} fitted on {fitted[-1]} classes")
            return _original(self, X, y, *args, **kwargs)

        monkeypatch.setattr(cls, "fit", spy)
    train, test, synth = many_classes(1000, 0), many_classes(250, 1), many_classes(1000, 2)
    schema = cs.Schema.infer(train, target="diagnosis")
    assert len(schema.column("diagnosis").categories) == 200

    metrics = cs.evaluate(real_train=train, real_test=test, synthetic=synth, schema=schema).to_dict()

    assert fitted and max(fitted) == bounds.MAX_CLASSES + 1
    u = metrics["utility"]
    top = train["diagnosis"].value_counts().sort_index().sort_values(ascending=False, kind="stable")
    assert u["classes"] == sorted(top.index[:bounds.MAX_CLASSES]) + [bounds.OTHER]
    assert all(s["auroc"] is not None and 0.4 < s["auroc"] <= 1 for s in u["scores"])
    [cap] = _caps(metrics, "target classes")
    assert cap["part"] == "utility" and cap["column"] == "diagnosis" and (cap["total"], cap["kept"]) == (200, 21)
    assert 0 < cap["other_share"] < 1  # the share of real training rows pooled as "other"
    levels = {c["part"] for c in _caps(metrics, "category levels") if c["column"] == "diagnosis"}
    assert levels == {"associations", "detection", "privacy attacks"}  # the target is a feature there
    assert metrics["evaluation"]["level"] == "full" and metrics["evaluation"]["limits"]["max_classes"] == 20
    assert any("20 most common" in n for n in u["notes"])
    html = render(json.loads(json.dumps(metrics)))
    assert "target classes" in html and "diagnosis" in html


def test_many_levels_are_pooled_where_a_model_or_a_contingency_table_is_built():
    from clinsynth.evaluate.fidelity import association_matrix

    rng = np.random.default_rng(0)
    n = 1000
    df = pd.DataFrame({"code": rng.choice([f"k{i}" for i in range(100)], n), "grp": rng.choice(["a", "b"], n),
                       "y": rng.choice(["0", "1"], n)})
    schema = cs.Schema.infer(df, target="y")
    pooled, cap = bounds.pool_levels([df], schema, max_levels=20, columns=["code", "grp"])
    assert cap == [{"column": "code", "total": 100, "kept": 21,
                    "other_share": pytest.approx(1 - df["code"].value_counts().iloc[:20].sum() / n)}]
    assert pooled[0]["code"].nunique() == 21 and (pooled[0]["grp"] == df["grp"]).all()
    m = association_matrix(pooled[0], schema)
    assert 0 <= m.loc["code", "grp"] <= 1


# --- many columns ---------------------------------------------------------------------------------
def _check_wide(columns: int, cap_cols: int) -> None:
    train, test, synth = wide(120, 0, columns), wide(60, 1, columns), wide(120, 2, columns)
    schema = cs.Schema.infer(train, target="outcome")
    metrics = cs.evaluate(real_train=train, real_test=test, synthetic=synth, schema=schema).to_dict()

    assert len(metrics["fidelity"]["columns"]) == columns  # per-column scores stay on every column
    matrix_cols = metrics["fidelity"]["associations"]["matrix"]["columns"]
    assert len(matrix_cols) == cap_cols and "outcome" in matrix_cols
    assert len(metrics["utility"]["importance"][0]["real"]) == cap_cols - 1  # the target is not a feature
    for part in ("associations", "detection", "utility", "privacy attacks"):
        [cap] = _caps(metrics, "columns", part)
        assert (cap["total"], cap["kept"]) == (columns, cap_cols)
    # the same seed picks the same columns
    again = cs.evaluate(real_train=train, real_test=test, synthetic=synth, schema=schema).to_dict()
    assert again["fidelity"]["associations"]["matrix"]["columns"] == matrix_cols
    assert again["fidelity"]["detection_auroc"] == metrics["fidelity"]["detection_auroc"]


def test_a_wide_table_subsamples_columns_for_the_expensive_parts(monkeypatch):
    """The cap made small (12 columns of 40) so the default run stays quick."""
    small = dataclasses.replace(bounds.LEVELS["full"], max_columns=12, classifiers=("logistic_regression",))
    monkeypatch.setitem(bounds.LEVELS, "full", small)
    _check_wide(40, 12)


@pytest.mark.slow
def test_a_wide_table_at_the_default_cap():
    _check_wide(150, bounds.MAX_COLUMNS)


def test_column_sampling_keeps_what_the_attacks_need():
    df = wide(50, 0, 40)
    specs = [s.model_copy(update={"sensitive": s.name == "x0031", "quasi_identifier": s.name == "x0038"})
             for s in cs.Schema.infer(df, target="outcome").columns]
    schema = cs.Schema(columns=specs, target="outcome")
    sub, cap = bounds.sample_columns(schema, 10, seed=0, keep=bounds.attack_columns(schema))
    names = [c.name for c in sub.model_columns]
    assert len(names) == 10 and {"outcome", "x0031", "x0038"} <= set(names)
    assert names == [c.name for c in schema.model_columns if c.name in names]  # schema order kept
    assert cap == {"total": 40, "kept": 10}
    same, none = bounds.sample_columns(schema, 40, seed=0)
    assert same is schema and none is None


# --- many rows ------------------------------------------------------------------------------------
def test_rows_above_the_cap_are_subsampled_with_the_seed(split, synthetic, monkeypatch):
    train, test, schema = split
    small = dataclasses.replace(bounds.LEVELS["full"], max_rows=200, max_pairs=150 * len(train), min_queries=50,
                                classifiers=("logistic_regression",), importance=False)
    monkeypatch.setitem(bounds.LEVELS, "full", small)
    metrics = cs.evaluate(real_train=train, real_test=test, synthetic=synthetic, schema=schema).to_dict()
    rows = {(c["part"], c["table"]): (c["total"], c["kept"]) for c in _caps(metrics, "rows")}
    assert rows[("utility", "real training")] == (len(train), 200)
    assert rows[("utility", "synthetic")] == (len(synthetic), 200)
    assert rows[("associations", "real training")] == (len(train), 200)
    assert ("utility", "real holdout") not in rows and len(test) < 200  # below the cap: all rows
    [queries] = _caps(metrics, "nearest-neighbour queries")
    assert queries["kept"] == metrics["privacy_attacks"]["distance_to_closest"]["n_queries"] < queries["total"]
    # the nearest-neighbour work stays in the budget: queries × reference rows ≤ max_pairs
    assert queries["kept"] * (len(train) + len(test)) <= small.max_pairs
    again = cs.evaluate(real_train=train, real_test=test, synthetic=synthetic, schema=schema).to_dict()
    assert again["utility"]["scores"] == metrics["utility"]["scores"]


# --- full without caps: today's numbers -----------------------------------------------------------
def _close(got, want, tol: float) -> None:
    """Equal structure and text, numbers within ``tol``."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (got, want)
        for key in want:
            _close(got[key], want[key], tol)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (got, want)
        for g, w in zip(got, want):
            _close(g, w, tol)
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, abs=tol)
    else:
        assert got == want


def test_full_without_caps_gives_the_numbers_of_the_parts(split, synthetic):
    from clinsynth.data.io import jsonable
    from clinsynth.evaluate.fidelity import fidelity
    from clinsynth.evaluate.privacy import privacy_attacks
    from clinsynth.evaluate.utility import tstr

    train, test, schema = split
    metrics = cs.evaluate(real_train=train, real_test=test, synthetic=synthetic, schema=schema, level="full").to_dict()
    assert metrics["evaluation"]["capped"] == [] and metrics["evaluation"]["level"] == "full"
    assert metrics["fidelity"] == jsonable(fidelity(train, synthetic, schema).to_dict())
    utility = jsonable(tstr(train, test, synthetic, schema).to_dict())
    # the forest's threads sum tree probabilities in any order, so its scores can move in the last
    # digits, and a permutation importance more where a shuffled holdout ties, between two
    # identical calls (it does on main too): compared loosely, everything else exactly
    for got, want in zip(metrics["utility"].pop("importance"), utility.pop("importance"), strict=True):
        for key in ("real", "synthetic"):
            assert got.pop(key) == pytest.approx(want.pop(key), abs=1e-3)
        assert got.pop("spearman") == pytest.approx(want.pop("spearman"), abs=0.05)
        for key in ("top_real", "top_synthetic", "top_overlap"):
            got.pop(key), want.pop(key)
        assert got == want
    _close(metrics["utility"], utility, tol=1e-3)
    assert metrics["privacy_attacks"] == jsonable(privacy_attacks(train, test, synthetic, schema).to_dict())


# --- the levels -----------------------------------------------------------------------------------
@pytest.mark.parametrize("level", ["full", "fast", "none"])
def test_each_level_renders_a_report(split, synthetic, level, tmp_path):
    train, test, schema = split
    result = cs.evaluate(real_train=train, real_test=test, synthetic=synthetic, schema=schema, level=level)
    metrics = json.loads(json.dumps(result.to_dict()))
    html = render(metrics)
    assert html == result.to_html(tmp_path / "r.html").read_text()
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in html
    assert metrics["evaluation"]["level"] == level
    assert f"evaluation level <strong>{level}</strong>" in html
    assert _verdict(metrics, "privacy guarantee")["level"] == "warning"
    if level == "none":
        assert metrics["fidelity"] is None and metrics["utility"] is None and metrics["privacy_attacks"] is None
        for section in ("fidelity", "utility", "privacy attacks"):
            v = _verdict(metrics, section)
            assert v["level"] == "skipped" and "evaluation level none" in v["headline"]
        assert html.count("not run at level none") >= 4  # fidelity, trajectories, utility, attacks
        assert "<img" not in html and metrics["seconds"] == {}
    else:
        assert {v["level"] for v in metrics["verdicts"]} <= {"pass", "caution", "fail", "warning"}
        assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', html)) >= 4
    if level == "fast":
        u = metrics["utility"]
        assert [s["classifier"] for s in u["scores"]] == list(bounds.LEVELS["fast"].classifiers) * 2
        assert u["bootstrap"]["resamples"] == bounds.LEVELS["fast"].n_bootstrap and u["importance"] == []
        assert "not run at level fast" in html


def test_level_none_reads_no_real_record(split, monkeypatch):
    import clinsynth.evaluate.fidelity as F
    import clinsynth.evaluate.privacy as P
    import clinsynth.evaluate.utility as U

    def refuse(*args, **kwargs):
        raise AssertionError("level none must not evaluate")

    for module, name in ((F, "fidelity"), (U, "tstr"), (P, "privacy_attacks")):
        monkeypatch.setattr(module, name, refuse)
    _, _, schema = split
    guarantee = {"differentially_private": True, "spent": 0.98, "delta": 1e-5, "epsilon": 1.0, "accountant": "rdp",
                 "charges": []}
    metrics = cs.evaluate(None, None, None, schema, guarantee=guarantee, model={"name": "dp-acgan"},
                          level="none").to_dict()
    assert _verdict(metrics, "privacy guarantee")["level"] == "pass"
    assert metrics["dataset"]["n_train"] is None
    html = render(metrics)
    assert "differentially private" in html and "dp-acgan" in html


def test_an_unknown_level_is_one_clear_error(split):
    train, test, schema = split
    with pytest.raises(cs.ConfigError, match=r"evaluation level 'quick'.*full, fast or none"):
        cs.evaluate(real_train=train, real_test=test, synthetic=train, schema=schema, level="quick")


def test_the_cli_takes_the_level(split, tmp_path, capsys):
    from clinsynth.cli import main

    train, test, _ = split
    write_table(train, tmp_path / "train.csv")
    write_table(test, tmp_path / "test.csv")
    args = ["evaluate", "--real-train", str(tmp_path / "train.csv"), "--real-test", str(tmp_path / "test.csv"),
            "--synthetic", str(tmp_path / "train.csv"), "--target", "arm", "--quiet"]
    assert main([*args, "--evaluate", "none", "--out", str(tmp_path / "m.json"), "--report", str(tmp_path / "r.html")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["evaluation"]["level"] == "none" and metrics["fidelity"] is None
    assert "not run at level none" in (tmp_path / "r.html").read_text()
    capsys.readouterr()
    missing = ["evaluate", "--real-train", str(tmp_path / "absent.csv"), "--real-test", "x", "--synthetic", "y"]
    assert main([*missing, "--evaluate", "quick"]) == 1  # refused before any file is read
    err = capsys.readouterr().err
    assert "evaluation level 'quick'" in err and len(err.strip().splitlines()) == 1


# --- code matrices ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def codes_world():
    from clinsynth.data.ehr_simulator import simulate_ehr

    m, _ = simulate_ehr(1800, 120, seed=0)
    return m.subset(slice(0, 600)), m.subset(slice(600, 1200)), m.subset(slice(1200, 1800))


@pytest.mark.parametrize("level", ["fast", "none"])
def test_code_matrices_take_the_level(codes_world, level, tmp_path):
    from clinsynth.evaluate import codes as C

    train, test, other = codes_world
    result = cs.evaluate(real_train=train, real_test=test, synthetic=other, level=level)
    metrics = json.loads(json.dumps(result.to_dict()))
    assert metrics["evaluation"]["level"] == level and metrics["codes"]["level"] == level
    html = render(metrics)
    for section in ("summary", "guarantee", "about"):
        assert f'<section id="{section}">' in html
    if level == "none":
        assert [v["level"] for v in metrics["verdicts"][1:]] == ["skipped"] * 4
        assert "not run at level none" in html and "<img" not in html
    else:
        full = C.evaluate_codes(train, test, other)
        fast = metrics["codes"]
        assert fast["dimension_wise_prediction"]["top_k"] < full["dimension_wise_prediction"]["top_k"]
        assert fast["co_occurrence"]["n_codes"] < full["co_occurrence"]["n_codes"]
        assert fast["privacy_attacks"]["distance_to_closest"]["n_queries"] <= bounds.LEVELS["fast"].max_queries
        assert 'id="code-probability"' in html


def test_code_matrix_full_is_todays_evaluation(codes_world):
    from clinsynth.evaluate import codes as C

    train, test, other = codes_world
    full = cs.evaluate(real_train=train, real_test=test, synthetic=other, level="full").to_dict()["codes"]
    plain = C.evaluate_codes(train, test, other)
    for part in ("dimension_wise_probability", "dimension_wise_prediction", "co_occurrence", "privacy_attacks"):
        assert full[part] == plain[part]


# --- the linear parts made cheaper on wide tables: the same numbers -----------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3) | st.floats(-1e3, 1e3), min_size=1, max_size=40),
       st.lists(st.integers(-3, 3) | st.floats(-1e3, 1e3), min_size=1, max_size=40))
def test_the_ks_statistic_is_scipys(x, y):
    from scipy.stats import ks_2samp

    from clinsynth.evaluate.fidelity import ks_statistic

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    assert ks_statistic(x, y) == float(ks_2samp(x, y).statistic)


def test_level_shares_are_the_text_shares_in_the_same_order():
    from clinsynth.evaluate.bounds import level_text
    from clinsynth.evaluate.fidelity import _levels

    columns = [pd.Series(["b", "a", None, "b", "c", "a", "a"]), pd.Series([1, 2, 2, 3, 1, 1], dtype="Int64"),
               pd.Series([1.0, np.nan, 2.5, 1.0]), pd.Series([True, False, True]),
               pd.Series(["x", 1, "1", None], dtype=object), pd.Series(pd.Categorical(["u", "v", "u", None]))]
    for s in columns:
        old = s.astype(object).where(s.notna(), "<missing>").map(level_text).value_counts(normalize=True)
        pd.testing.assert_series_equal(_levels(s), old)


def test_a_metrics_file_from_before_the_levels_still_renders(split, synthetic):
    train, test, schema = split
    metrics = cs.evaluate(real_train=train, real_test=test, synthetic=synthetic, schema=schema, level="fast").to_dict()
    del metrics["evaluation"]  # as `clinsynth report` meets a metrics.json written before this change
    html = render(metrics)
    assert "evaluation level <strong>full</strong>" in html and '<section id="attacks">' in html
