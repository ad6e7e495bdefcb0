"""Tests for clinsynth.data.datasets: the simulated SPRINT-structured trial and bundled tables."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from clinsynth.data.datasets import (
    DATASETS,
    DatasetInfo,
    load_breast_cancer,
    load_dataset,
    simulate_trial,
)

VISITS = ["rz", "m01", "m02", "m03", "m06", "m09", "m12", "m15", "m18", "m21", "m24", "m27"]
BASELINE = [
    "participant_id", "arm", "age", "female", "race", "bmi", "egfr", "ckd", "cvd_history",
    "smoker", "statin", "total_cholesterol", "glucose", "creatinine",
]
LONG = [f"{m}_{v}" for m in ("sbp", "dbp", "meds") for v in VISITS]


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return simulate_trial(6502, seed=0)


def _observed(df: pd.DataFrame, measure: str) -> np.ndarray:
    return df[[f"{measure}_{v}" for v in VISITS]].notna().to_numpy()


def _last_observed(obs: np.ndarray) -> np.ndarray:
    """Index of the last observed visit per row (rz is always observed)."""
    return obs.shape[1] - 1 - np.argmax(obs[:, ::-1], axis=1)


def _medians(df: pd.DataFrame, visit: str) -> tuple[float, float]:
    med = df.groupby("arm")[f"sbp_{visit}"].median()
    return float(med[0]), float(med[1])


# --- structure -----------------------------------------------------------------------

def test_shape_and_column_order(trial):
    assert trial.shape == (6502, len(BASELINE) + 36)
    assert list(trial.columns) == BASELINE + LONG


def test_dtypes(trial):
    for col in ("arm", "age", "female", "ckd", "cvd_history", "statin"):
        assert trial[col].dtype == np.int64, col
    for col in LONG + ["bmi", "egfr", "total_cholesterol", "glucose", "creatinine"]:
        assert trial[col].dtype == np.float64, col
    for col in ("participant_id", "race", "smoker"):
        assert pd.api.types.is_string_dtype(trial[col]) or trial[col].dtype == object, col


def test_participant_ids(trial):
    ids = trial["participant_id"]
    assert ids.is_unique
    assert ids.map(lambda s: re.fullmatch(r"S\d{6}", s) is not None).all()
    assert ids.iloc[0] == "S000001" and ids.iloc[-1] == "S006502"


def test_small_and_odd_n():
    df = simulate_trial(11, seed=5)
    assert df.shape == (11, 50)
    assert df["arm"].sum() == 5  # exact balanced shuffle: floor(n/2) intensive
    assert df["sbp_rz"].notna().all()
    with pytest.raises(ValueError):
        simulate_trial(0)


# --- determinism ------------------------------------------------------------------

def test_same_seed_identical(trial):
    pd.testing.assert_frame_equal(trial, simulate_trial(6502, seed=0))


def test_different_seed_differs(trial):
    other = simulate_trial(6502, seed=1)
    assert not other.equals(trial)
    assert (other["sbp_rz"].to_numpy() != trial["sbp_rz"].to_numpy()).mean() > 0.9
    assert (other["arm"].to_numpy() != trial["arm"].to_numpy()).mean() > 0.4


# --- baseline ---------------------------------------------------------------------

def test_arm_balance(trial):
    assert trial["arm"].isin([0, 1]).all()
    assert abs(trial["arm"].mean() - 0.5) <= 0.01


def test_baseline_covariates_plausible(trial):
    age = trial["age"]
    assert age.between(50, 95).all()
    assert 66 <= age.mean() <= 70 and 8 <= age.std() <= 11
    assert 0.24 <= (age >= 75).mean() <= 0.32
    assert 0.32 <= trial["female"].mean() <= 0.40
    race = trial["race"].value_counts(normalize=True)
    assert set(race.index) == {"White", "Black", "Hispanic", "Other"}
    assert 0.53 <= race["White"] <= 0.63 and 0.26 <= race["Black"] <= 0.34
    assert 0.08 <= race["Hispanic"] <= 0.14 and 0.005 <= race["Other"] <= 0.03
    smoker = trial["smoker"]
    assert set(smoker.dropna().unique()) == {"never", "former", "current"}
    assert 0.001 <= smoker.isna().mean() <= 0.012
    assert 0.10 <= (smoker == "current").mean() <= 0.16
    assert 28.5 <= trial["bmi"].mean() <= 31.5 and 0.004 <= trial["bmi"].isna().mean() <= 0.02
    egfr = trial["egfr"]
    assert egfr.between(15, 150).all() and 68 <= egfr.mean() <= 76 and egfr.skew() > 0.2
    assert egfr.corr(age) < -0.15  # lower with age
    assert (trial["ckd"] == (egfr < 60).astype(int)).all()
    assert 0.17 <= trial["cvd_history"].mean() <= 0.23
    assert 0.39 <= trial["statin"].mean() <= 0.47
    assert 185 <= trial["total_cholesterol"].mean() <= 195
    assert 0.01 <= trial["total_cholesterol"].isna().mean() <= 0.03
    assert 96 <= trial["glucose"].mean() <= 102 and trial["glucose"].skew() > 0.5
    creat = trial["creatinine"]
    assert 0.95 <= creat.mean() <= 1.2 and creat.corr(egfr) < -0.6
    assert 0.004 <= creat.isna().mean() <= 0.02


def test_baseline_sbp_within_eligibility(trial):
    sbp = trial["sbp_rz"]
    assert sbp.between(130, 180).all()
    assert (sbp == np.round(sbp)).all()


def test_baseline_dbp_and_meds(trial):
    dbp = trial["dbp_rz"]
    assert 75 <= dbp.mean() <= 81 and 10 <= dbp.std() <= 14
    assert 0.2 <= dbp.corr(trial["sbp_rz"]) <= 0.5
    assert dbp.corr(trial["age"]) < -0.1
    meds = trial["meds_rz"]
    assert 1.6 <= meds.mean() <= 2.0 and 0.06 <= (meds == 0).mean() <= 0.12


def test_rz_fully_observed(trial):
    assert trial[["sbp_rz", "dbp_rz", "meds_rz"]].notna().all().all()


# --- longitudinal dynamics --------------------------------------------------------

def test_arms_separate_from_month_3(trial):
    for visit in VISITS[VISITS.index("m03"):]:
        standard, intensive = _medians(trial, visit)
        assert standard - intensive >= 10, visit
    standard, intensive = _medians(trial, "rz")
    assert abs(standard - intensive) <= 2  # randomised: no baseline difference


def test_median_sbp_near_targets(trial):
    for visit in VISITS[VISITS.index("m06"):]:
        standard, intensive = _medians(trial, visit)
        assert 118 <= intensive <= 124, (visit, intensive)
        assert 132 <= standard <= 139, (visit, standard)
    standard, intensive = _medians(trial, "m12")
    assert 120 <= intensive <= 123 and 134 <= standard <= 137


def test_most_of_the_fall_by_month_3(trial):
    start = _medians(trial, "rz")[1]
    by_m03 = start - _medians(trial, "m03")[1]
    by_m12 = start - _medians(trial, "m12")[1]
    assert by_m03 >= 0.75 * by_m12 > 0


def test_medication_titration(trial):
    meds = trial.groupby("arm")["meds_m12"].mean()
    assert 2.5 <= meds[1] <= 3.2  # intensive: ~2.8
    assert 1.6 <= meds[0] <= 2.1  # standard: ~1.8-1.9
    assert meds[1] - meds[0] >= 0.6


def test_longitudinal_values_are_whole_and_in_range(trial):
    for measure, lo, hi in (("sbp", 60, 240), ("dbp", 30, 140), ("meds", 0, 6)):
        values = trial[[f"{measure}_{v}" for v in VISITS]].to_numpy()
        observed = values[~np.isnan(values)]
        assert (observed == np.round(observed)).all(), measure
        assert observed.min() >= lo and observed.max() <= hi, measure
    meds = trial[[f"meds_{v}" for v in VISITS]].to_numpy()
    assert set(np.unique(meds[~np.isnan(meds)])) <= set(range(7))


def test_dbp_follows_sbp(trial):
    dbp = trial.groupby("arm")["dbp_m12"].mean()
    assert 3 <= dbp[0] - dbp[1] <= 12  # intensive DBP lower too


# --- missingness --------------------------------------------------------------------

def test_whole_visits_missing_together(trial):
    sbp = _observed(trial, "sbp")
    assert np.array_equal(sbp, _observed(trial, "dbp"))
    assert np.array_equal(sbp, _observed(trial, "meds"))


def test_dropout_is_monotone(trial):
    obs = _observed(trial, "sbp") | _observed(trial, "dbp") | _observed(trial, "meds")
    last = _last_observed(obs)
    after = np.arange(len(VISITS))[None, :] > last[:, None]
    assert not obs[after].any()  # nothing observed after the dropout visit
    # Nobody comes back after a long absence: a run of >= 3 missed visits followed by an
    # observed one would be a returning dropout (3% independent misses make it ~0.01%).
    missed = (~obs[:, :-3] & ~obs[:, 1:-2] & ~obs[:, 2:-1] & obs[:, 3:]).any(axis=1)
    assert missed.mean() < 0.002


def test_dropout_share(trial):
    last = _last_observed(_observed(trial, "sbp"))
    share = (last < len(VISITS) - 1).mean()
    assert 0.05 <= share <= 0.15
    # Missing share rises over follow-up (people leave and stay gone).
    miss = 1 - _observed(trial, "sbp").mean(axis=0)
    assert miss[0] == 0 and miss[-1] > miss[1] + 0.05
    older = trial["age"].to_numpy() >= 75
    assert (last[older] < 11).mean() > (last[~older] < 11).mean()


def test_intermittent_missing_share(trial):
    obs = _observed(trial, "sbp")
    last = _last_observed(obs)
    visit = np.arange(len(VISITS))[None, :]
    before = (visit >= 1) & (visit < last[:, None])
    share = (~obs & before).sum() / before.sum()
    assert 0.01 <= share <= 0.06


# --- breast cancer and registry -----------------------------------------------------

def test_load_breast_cancer():
    df = load_breast_cancer()
    assert df.shape == (569, 31)
    assert df.columns[-1] == "diagnosis" and "mean_radius" in df.columns
    assert all(c.isidentifier() and c == c.lower() for c in df.columns)
    assert set(df["diagnosis"].unique()) == {"malignant", "benign"}
    assert (df["diagnosis"] == "malignant").sum() == 212
    assert df.drop(columns="diagnosis").dtypes.eq(np.float64).all()


def test_registry_entries():
    assert set(DATASETS) == {"trial", "long_trial", "breast_cancer"}
    assert DATASETS["trial"].loader is simulate_trial and DATASETS["trial"].target == "arm"
    assert DATASETS["breast_cancer"].loader is load_breast_cancer
    assert DATASETS["breast_cancer"].target == "diagnosis"
    for key, info in DATASETS.items():
        assert isinstance(info, DatasetInfo) and info.name == key and info.description
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["trial"].target = "x"  # type: ignore[misc]


def test_load_dataset_known_name():
    df = load_dataset("breast_cancer")
    assert DATASETS["breast_cancer"].target in df.columns


def test_load_dataset_unknown_name_lists_known():
    with pytest.raises(ValueError) as excinfo:
        load_dataset("no_such_data")
    message = str(excinfo.value)
    assert "no_such_data" in message
    for name in DATASETS:
        assert name in message
