"""Patient-level evaluation of long-format tables: hand-made visit tables whose answers are known.

A copy of the real training table scores perfectly on shape (KS 0, TSTR/TRTR exactly 1) and is
caught by every patient-level attack; a fresh draw from the same generator is not; shuffled
visit orders, one-visit patients and a hand-computed three-patient table pin the numbers."""
from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from clinsynth.errors import SchemaError
from clinsynth.evaluate.patient_features import feature_tables, patient_features
from clinsynth.evaluate.patients import LongLayout, evaluate_patients, read_tables
from clinsynth.report.figures import patient_trajectories_figure
from clinsynth.schema import Schema

LAYOUT = LongLayout("id", "day", patient_columns=("arm", "sex"), visit_columns=("sbp", "egfr"), target="death")
FAST = {"classifiers": ("logistic_regression",), "n_bootstrap": 20}


def long_table(n: int, seed: int, first_id: int = 0, max_visits: int = 8) -> pd.DataFrame:
    """Patients with 1..max_visits visits ~80 days apart; sbp drifts with a per-patient slope that
    decides death, so first/last values carry the class; labs missing at random."""
    rng = np.random.default_rng(seed)
    k = rng.integers(1, max_visits + 1, n)
    pid = np.repeat(np.arange(n), k)
    arm = rng.integers(0, 2, n)
    sex = rng.choice(np.array(["F", "M"], dtype=object), n)
    base, slope = rng.normal(140, 12, n), rng.normal(-5 * arm, 6, n)
    death = (slope + rng.normal(0, 3, n) > 0).astype(int)
    gap = rng.exponential(80, len(pid)).round() + 1
    gap[np.r_[True, pid[1:] != pid[:-1]]] = 0
    day = pd.Series(gap).groupby(pid).cumsum().to_numpy()
    sbp = (base[pid] + slope[pid] * day / 365 + rng.normal(0, 4, len(pid))).round(1)
    egfr = (70 - 0.3 * (base[pid] - 140) + rng.normal(0, 5, len(pid))).round(1)
    sbp[rng.random(len(pid)) < 0.1] = np.nan
    egfr[rng.random(len(pid)) < 0.2] = np.nan
    return pd.DataFrame({"id": [f"p{first_id + i}" for i in pid], "day": day, "arm": arm[pid], "sex": sex[pid],
                         "death": death[pid], "sbp": sbp, "egfr": egfr})


@pytest.fixture(scope="module")
def tables():
    return long_table(300, 1), long_table(300, 2, 10_000), long_table(300, 3, 20_000)


@pytest.fixture(scope="module")
def copied(tables):
    train, test, _ = tables
    return evaluate_patients(train, test, train.copy(), LAYOUT, seed=0, **FAST)


@pytest.fixture(scope="module")
def fresh(tables):
    train, test, fresh = tables
    return evaluate_patients(train, test, fresh, LAYOUT, seed=0, **FAST)


# --- a copy of real vs a fresh draw -------------------------------------------------------------
def test_copy_of_real_has_identical_shape(copied):
    assert copied["visits_per_patient"]["ks"] == 0.0
    assert copied["gaps"]["ks"] == 0.0
    assert copied["visit_index"]["mean_ks"] == 0.0
    assert all(r["ks"] == 0.0 and r["missing_real"] == r["missing_synthetic"] for r in copied["visit_index"]["rows"])
    assert copied["correlations"]["mean_abs_difference_first_last"] == 0.0
    assert copied["correlations"]["mean_abs_difference_lag1"] == 0.0
    assert copied["ordering"]["synthetic"] == copied["ordering"]["real"]
    assert copied["ordering"]["synthetic"]["strictly_increasing"] == 1.0
    assert copied["ordering"]["synthetic"]["after_last_visit"] == 0.0


def test_copy_of_real_is_as_useful_as_real(copied):
    # same patients, same classifier, same seed: TSTR is TRTR, the ratio exactly 1
    utility = copied["utility"]
    assert utility["unit"] == "patient" and utility["target"] == "death"
    assert utility["ratios"]["logistic_regression"]["auroc"] == pytest.approx(1.0, abs=1e-12)
    real = next(s for s in utility["scores"] if s["trained_on"] == "real")
    assert real["auroc"] > 0.65  # the features carry the class (one-visit patients show no slope): not vacuous
    assert utility["n_test"] == 300  # one test record per holdout patient, not per visit


def test_fresh_draw_is_close_but_not_identical(fresh):
    assert 0 < fresh["visits_per_patient"]["ks"] < 0.15
    assert 0 < fresh["gaps"]["ks"] < 0.15
    assert fresh["utility"]["ratios"]["logistic_regression"]["auroc"] > 0.9


def test_synthetic_patients_with_shuffled_outcomes_are_useless(tables):
    train, test, _ = tables
    rng = np.random.default_rng(0)
    ids = train["id"].unique()
    outcome = dict(zip(ids, rng.permutation(train.groupby("id", sort=False)["death"].first().to_numpy())))
    m = evaluate_patients(train, test, train.assign(death=train["id"].map(outcome)), LAYOUT, privacy=False, **FAST)
    assert m["utility"]["ratios"]["logistic_regression"]["auroc"] < 0.85


def test_patient_attacks_catch_a_copy_and_not_a_fresh_draw(copied, fresh):
    c, f = copied["privacy_attacks"], fresh["privacy_attacks"]
    assert c["unit"] == f["unit"] == "patient"
    assert c["exact_copies"]["synthetic_rate"] == 1.0 and f["exact_copies"]["synthetic_rate"] == 0.0
    assert c["exact_copies"]["n_synthetic"] == 300  # patients, not the ~1,350 visits
    assert c["distance_to_closest"]["share_closer_to_train"] > 0.99
    assert 0.35 < f["distance_to_closest"]["share_closer_to_train"] < 0.65
    assert c["membership_inference"]["auroc"] > 0.95
    assert 0.35 < f["membership_inference"]["auroc"] < 0.65
    assert c["membership_inference"]["n_members"] == 300


def test_table_schema_flags_reach_the_patient_attacks(tables):
    train, test, _ = tables
    schema = Schema.infer(train, target="death", ids=["id"])
    flags = {"sbp": {"sensitive": True}, "sex": {"quasi_identifier": True}, "arm": {"kind": "categorical"}}
    schema = schema.model_copy(update={"columns": [c.model_copy(update=flags.get(c.name, {})) for c in schema.columns]})
    m = evaluate_patients(train, test, train.copy(), LAYOUT, utility=False, table_schema=schema)
    attacks = m["privacy_attacks"]
    assert [c["column"] for c in attacks["attribute_inference"]["columns"]] == ["sbp_first", "sbp_last"]
    assert all(c["leak"] > 0 for c in attacks["attribute_inference"]["columns"])  # a copy gives members away
    assert attacks["k_anonymity"]["quasi_identifiers"] == ["sex"]
    assert feature_tables(read_tables(train, test, train, LAYOUT), LAYOUT, schema).schema.column("arm").kind == "categorical"
    plain = evaluate_patients(train, test, train.copy(), LAYOUT, utility=False)["privacy_attacks"]
    assert "attribute_inference" not in plain and "k_anonymity" not in plain


def test_metrics_are_plain_json(fresh):
    text = json.dumps(fresh, allow_nan=False)
    assert json.loads(text)["features"] == ["arm", "sex", "death", "n_visits", "follow_up_days", "missing_share",
                                            "sbp_first", "sbp_last", "egfr_first", "egfr_last"]


# --- broken synthetic tables -------------------------------------------------------------------
def test_reversed_visit_order_is_caught(tables):
    train, test, _ = tables
    reversed_rows = train.iloc[::-1].reset_index(drop=True)  # every patient's visits backwards
    m = evaluate_patients(train, test, reversed_rows, LAYOUT, utility=False, privacy=False)
    counts = train.groupby("id").size()
    several = float(np.mean(counts > 1))
    assert m["ordering"]["synthetic"]["strictly_increasing"] == pytest.approx(1 - several)
    assert m["ordering"]["synthetic"]["after_last_visit"] == pytest.approx(several)
    # the other metrics read visits in time order: the same patients give the same shape
    assert m["visits_per_patient"]["ks"] == 0.0 and m["gaps"]["ks"] == 0.0 and m["visit_index"]["mean_ks"] == 0.0


def test_order_is_checked_within_each_patient_when_patients_interleave(tables):
    train, test, _ = tables
    several = float(np.mean(train.groupby("id").size() > 1))
    forward = train.sort_values("day", kind="stable")  # patients interleaved, each in time order: fine
    backward = train.sort_values("day", ascending=False, kind="stable")  # interleaved and each reversed
    m_forward = evaluate_patients(train, test, forward, LAYOUT, utility=False, privacy=False)
    m_backward = evaluate_patients(train, test, backward, LAYOUT, utility=False, privacy=False)
    assert m_forward["ordering"]["synthetic"]["strictly_increasing"] == 1.0
    assert m_forward["ordering"]["synthetic"]["after_last_visit"] == 0.0
    assert m_backward["ordering"]["synthetic"]["strictly_increasing"] == pytest.approx(1 - several)
    assert m_backward["ordering"]["synthetic"]["after_last_visit"] == pytest.approx(several)


def test_duplicate_times_are_not_increasing(tables):
    train, test, _ = tables
    syn = train.copy()
    second = syn.groupby("id").cumcount() == 1
    syn.loc[second, "day"] = syn["day"].shift(1)[second]  # every second visit on the day of the first
    m = evaluate_patients(train, test, syn, LAYOUT, utility=False, privacy=False)
    several = float(np.mean(train.groupby("id").size() > 1))
    assert m["ordering"]["synthetic"]["strictly_increasing"] == pytest.approx(1 - several)
    assert m["gaps"]["ties_synthetic"] > 0 and m["gaps"]["ties_real"] == 0.0


def test_one_visit_per_patient_gives_a_large_visits_ks(tables):
    train, test, _ = tables
    syn = train.groupby("id", sort=False).head(1)
    m = evaluate_patients(train, test, syn, LAYOUT, utility=False, privacy=False)
    share_one = float(np.mean(train.groupby("id").size() == 1))
    assert m["visits_per_patient"]["ks"] == pytest.approx(1 - share_one)  # the CDFs differ most at 1 visit
    assert m["visits_per_patient"]["ks"] > 0.8
    assert m["visits_per_patient"]["synthetic"]["median"] == 1.0
    assert m["gaps"]["ks"] is None and m["gaps"]["synthetic"]["n"] == 0  # no second visit, no gap
    assert [b["index"] for b in m["visit_index"]["by_index"]][:2] == [1, 2]
    assert m["visit_index"]["by_index"][1]["patients_synthetic"] == 0
    assert m["correlations"]["labs"][0]["first_last"]["synthetic"] is None


def test_varying_patient_columns_and_empty_visits_are_reported(tables):
    train, test, _ = tables
    syn = train.copy()
    first = syn.groupby("id").cumcount() == 0
    syn.loc[~first, "sex"] = "X"  # patients with more than one visit change sex
    syn.loc[first, ["sbp", "egfr"]] = np.nan  # every first visit empty
    m = evaluate_patients(train, test, syn, LAYOUT, utility=False, privacy=False)
    s = m["ordering"]["synthetic"]
    assert s["patient_columns_vary"] == pytest.approx(float(np.mean(train.groupby("id").size() > 1)))
    assert s["empty_visits"] >= first.mean()
    assert m["ordering"]["real"]["patient_columns_vary"] == 0.0
    assert m["visit_index"]["rows"][0]["missing_synthetic"] == 1.0


# --- hand-computed numbers ----------------------------------------------------------------------
def _tiny() -> pd.DataFrame:
    return pd.DataFrame({
        "id":    ["a", "a", "a", "b", "b", "c"],
        "day":   [0, 100, 250, 0, 50, 10],
        "arm":   [1, 1, 1, 0, 0, 1],
        "sex":   ["F", "F", "F", "M", "M", "F"],
        "death": [1, 1, 1, 0, 0, 0],
        "sbp":   [120.0, np.nan, 140.0, 150.0, 130.0, np.nan],
        "egfr":  [60.0, 62.0, np.nan, 80.0, np.nan, np.nan],
    })


def test_patient_features_by_hand():
    tiny = _tiny()
    tables = read_tables(tiny, tiny, tiny, LAYOUT)
    f = patient_features(tables.train, LAYOUT)
    assert list(f.index) == ["a", "b", "c"]
    assert f["n_visits"].tolist() == [3, 2, 1]
    assert f["follow_up_days"].tolist() == [250, 50, 0]
    assert f["missing_share"].tolist() == pytest.approx([2 / 6, 1 / 4, 1.0])
    assert f["sbp_first"].iloc[:2].tolist() == [120, 150] and np.isnan(f["sbp_first"].iloc[2])  # c: never measured
    assert f["sbp_last"].iloc[:2].tolist() == [140, 130]  # last *observed*: a's last visit has sbp
    assert f["egfr_last"].iloc[:2].tolist() == [62, 80]  # a's last visit lacks egfr: its last observed is 62
    assert f["sex"].tolist() == ["F", "M", "F"] and f["death"].tolist() == [1, 0, 0]
    schema = feature_tables(tables, LAYOUT).schema
    assert schema.target == "death" and schema.column("death").categories == [0, 1]
    assert schema.column("sex").kind == "binary" and schema.column("sbp_first").kind == "continuous"


def test_shape_metrics_by_hand():
    tiny = _tiny()
    m = evaluate_patients(tiny, tiny, tiny, LAYOUT, utility=False, privacy=False, bin_days=100)
    assert m["visits_per_patient"]["real"]["mean"] == 2.0
    assert [r["real"] for r in m["visits_per_patient"]["shares"]] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert m["gaps"]["real"]["n"] == 3 and m["gaps"]["real"]["median"] == 100  # gaps 100, 150, 50
    assert m["ordering"]["real"]["empty_visits"] == pytest.approx(1 / 6)  # c's only visit
    assert m["ordering"]["real"]["empty_last_visit"] == pytest.approx(1 / 3)
    first = next(r for r in m["visit_index"]["rows"] if r["index"] == 1 and r["lab"] == "sbp")
    assert first["n_real"] == 3 and first["missing_real"] == pytest.approx(1 / 3) and first["real"]["median"] == 135
    assert m["visit_index"]["max_index"] == 3
    # lag-1 pairs of sbp: only b's (150 → 130); too few for a correlation
    assert m["correlations"]["labs"][0]["lag1"]["n_real"] == 1 and m["correlations"]["labs"][0]["lag1"]["real"] is None
    # follow-up by class in 100-day bins: death=1 is a (to day 250); death=0 are b (50) and c (10)
    follow = {(r["class"], r["bin"]): r["in_follow_up"] for r in m["trajectories"]["follow_up"] if r["source"] == "real"}
    assert m["trajectories"]["n_bins"] == 3 and m["trajectories"]["classes"] == ["0", "1"]
    assert follow == {("0", 0): 1.0, ("0", 1): 0.0, ("0", 2): 0.0, ("1", 0): 1.0, ("1", 1): 1.0, ("1", 2): 1.0}
    sbp0 = next(r for r in m["trajectories"]["rows"] if r["class"] == "0" and r["lab"] == "sbp" and r["bin"] == 0
                and r["source"] == "real")
    assert sbp0["n"] == 2 and sbp0["median"] == 140  # b's 150 and 130 (c's sbp is missing)


def test_dates_read_as_days_since_first_visit():
    tiny = _tiny()
    dated = tiny.assign(day=pd.Timestamp("2020-03-01") + pd.to_timedelta(tiny["day"], unit="D"))
    a = evaluate_patients(tiny, tiny, tiny, LAYOUT, utility=False, privacy=False, bin_days=10)
    b = evaluate_patients(dated, dated, dated.assign(day=dated["day"].dt.strftime("%Y-%m-%d")), LAYOUT,
                          utility=False, privacy=False, bin_days=10)
    assert b["gaps"]["real"] == a["gaps"]["real"] and b["gaps"]["synthetic"] == a["gaps"]["real"]
    # class 0 is b (last visit day 50) and c (one visit, day 10). A number is days since baseline, so c is
    # still followed at day 10; a date's baseline is the first visit, so c's follow-up ends at day 0
    def followed(m, bin_):
        return next(r["in_follow_up"] for r in m["trajectories"]["follow_up"]
                    if r["class"] == "0" and r["source"] == "real" and r["bin"] == bin_)
    assert followed(a, 1) == 1.0 and followed(b, 1) == 0.5


def test_correlations_by_hand():
    # lab y = first value + noise-free drift: first-last and lag-1 correlations are exactly 1 in real
    rows = [{"id": i, "day": d, "arm": 0, "sex": "F", "death": i % 2, "sbp": 100 + 10 * i + d / 10, "egfr": 50.0}
            for i in range(6) for d in (0, 30, 60)]
    real = pd.DataFrame(rows)
    anti = real.assign(sbp=np.where(real["day"] == 60, 200 - real["sbp"], real["sbp"]))  # last visit reversed
    m = evaluate_patients(real, real, anti, LAYOUT, utility=False, privacy=False)
    sbp = m["correlations"]["labs"][0]
    assert sbp["first_last"]["real"] == pytest.approx(1.0) and sbp["first_last"]["synthetic"] == pytest.approx(-1.0)
    assert sbp["first_last"]["abs_difference"] == pytest.approx(2.0)
    assert m["correlations"]["labs"][1]["first_last"]["real"] is None  # constant egfr: undefined, not NaN


# --- what the user sees -------------------------------------------------------------------------
def test_bad_layouts_and_tables_get_one_clear_error(tables):
    train, test, fresh = tables
    with pytest.raises(SchemaError, match="target 'sbp' is a visit column"):
        LongLayout("id", "day", ("arm",), ("sbp",), target="sbp")
    with pytest.raises(SchemaError, match="'arm' are listed as both"):
        LongLayout("id", "day", ("arm",), ("arm",))
    with pytest.raises(SchemaError, match=r"synthetic table lacks column\(s\) egfr"):
        evaluate_patients(train, test, fresh.drop(columns="egfr"), LAYOUT)
    with pytest.raises(SchemaError, match="time column 'day' of the real training table holds 'soon'"):
        evaluate_patients(train.assign(day="soon"), test, fresh, LAYOUT)
    with pytest.raises(SchemaError, match="2 row\\(s\\) of the synthetic table have no patient id in 'id'"):
        evaluate_patients(train, test, fresh.assign(id=fresh["id"].where(fresh.index >= 2)), LAYOUT)


def test_no_target_no_utility_with_a_note(tables):
    train, test, fresh = tables
    layout = LongLayout("id", "day", ("arm", "sex", "death"), ("sbp", "egfr"))
    m = evaluate_patients(train, test, fresh, layout, privacy=False)
    assert m["utility"] is None and any("names no target" in n for n in m["notes"])
    assert m["trajectories"]["classes"] == [None]


def test_trajectory_figure_is_a_png(fresh):
    uri = patient_trajectories_figure(fresh["trajectories"])
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert patient_trajectories_figure({"labs": [], "follow_up": []}) is None
