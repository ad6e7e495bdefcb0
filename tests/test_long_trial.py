"""The long-format simulated trial (one row per visit) and long ↔ wide conversion on a visit grid."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinsynth.data.datasets import DATASETS, load_dataset
from clinsynth.data.long_trial import MAX_VISITS, SCHEDULE_DAYS, simulate_long_trial
from clinsynth.data.long_wide import grid_labels, patient_level_columns, to_long, to_wide
from clinsynth.errors import InputError
from clinsynth.schema import Schema

PATIENT = ["arm", "sex", "age", "race", "diabetes", "event"]
LABS = ["sbp", "dbp", "egfr", "glucose", "meds"]
GRID = list(range(0, MAX_VISITS * SCHEDULE_DAYS, SCHEDULE_DAYS))  # 0, 90, …, 1710: 20 slots


@pytest.fixture(scope="module")
def long() -> pd.DataFrame:
    return simulate_long_trial(5000, seed=0)


@pytest.fixture(scope="module")
def patients(long) -> pd.DataFrame:
    g = long.groupby("patient_id", sort=False)
    out = g[PATIENT].first()
    out["visits"] = g.size()
    out["last_day"] = g["day"].max()
    return out


# --- structure ------------------------------------------------------------------------------

def test_columns_and_dtypes(long):
    assert list(long.columns) == ["patient_id", "day", *PATIENT, *LABS]
    for col in ("day", "arm", "age", "diabetes", "event"):
        assert long[col].dtype == np.int64, col
    for col in LABS:
        assert long[col].dtype == np.float64, col
    assert set(long["sex"].unique()) == {"F", "M"} and set(long["arm"].unique()) == {0, 1}


def test_same_seed_same_frame_other_seed_other_frame(long):
    pd.testing.assert_frame_equal(simulate_long_trial(5000, seed=0), long)
    other = simulate_long_trial(5000, seed=1)
    assert len(other) != len(long) or not other["sbp"].equals(long["sbp"])


def test_small_n_and_bad_n():
    one = simulate_long_trial(1, seed=3)
    assert one["patient_id"].nunique() == 1 and one["day"].iloc[0] == 0
    with pytest.raises(ValueError, match="n_patients"):
        simulate_long_trial(0)


def test_visit_counts_between_1_and_20_and_varied(patients):
    v = patients["visits"]
    assert MAX_VISITS == 20 and v.min() == 1 and v.max() == 20
    assert v.nunique() == 20  # every count from 1 to 20 occurs
    assert 9.0 < v.mean() < 14.0  # measured 11.5


def test_rows_grouped_and_days_strictly_increasing_from_zero(long):
    ids = long["patient_id"].to_numpy()
    starts = np.r_[True, ids[1:] != ids[:-1]]
    assert starts.sum() == long["patient_id"].nunique()  # each patient's rows are contiguous
    day = long["day"].to_numpy()
    assert (day[starts] == 0).all()
    assert (np.diff(day)[~starts[1:]] > 0).all()
    gaps = np.diff(day)[~starts[1:]]
    assert 80 <= np.median(gaps) <= 100 and gaps.min() < 45 and gaps.max() > 150  # irregular


def test_per_patient_columns_are_constant_and_labs_are_not(long):
    assert patient_level_columns(long, "patient_id", exclude=["day"]) == PATIENT


def test_dropout_rises_with_age(patients):
    """Administrative end is >= 540 days, so a patient without an event whose last visit is before
    day 400 dropped out; dropout is more common among the old."""
    no_event = patients[patients["event"] == 0]
    early = no_event["last_day"] < 400
    assert 0.03 < early.mean() < 0.25
    old = no_event["age"] >= no_event["age"].median()
    assert early[old].mean() > 1.3 * early[~old].mean()


def test_labs_missing_more_often_just_before_an_event(long):
    last = ~long.duplicated("patient_id", keep="last")
    before_event = last & (long["event"] == 1)  # an event patient's last row is the last visit before it
    for lab in LABS:
        near = long.loc[before_event, lab].isna().mean()
        elsewhere = long.loc[~before_event, lab].isna().mean()
        assert 0.005 < elsewhere < 0.12, lab
        assert near > 3.0 * elsewhere, (lab, near, elsewhere)  # measured 4.7x (glucose) to 15x (sbp)


def test_labs_correlated_within_patient(long):
    g = long.groupby("patient_id", sort=False)
    for lab, floor in (("sbp", 0.4), ("egfr", 0.6)):
        first, last, n = g[lab].first(), g[lab].last(), g.size()  # first/last observed value
        ok = (n >= 5) & first.notna() & last.notna()
        r = np.corrcoef(first[ok], last[ok])[0, 1]
        assert r > floor, (lab, r)  # measured sbp 0.64, egfr 0.86


def test_event_rate_and_its_causes(patients):
    rate = patients["event"].mean()
    assert 0.10 < rate < 0.22  # measured 0.158
    by_arm = patients.groupby("arm")["event"].mean()
    assert by_arm[1] < 0.9 * by_arm[0]  # treatment lowers risk
    old = patients["age"] >= 75
    assert patients.loc[old, "event"].mean() > 2 * patients.loc[patients["age"] < 60, "event"].mean()
    assert patients.loc[patients["event"] == 1, "visits"].mean() < patients.loc[patients["event"] == 0, "visits"].mean()


def test_event_follows_the_lab_trajectory(long):
    g = long.groupby("patient_id", sort=False)
    pat = g[["event", "age"]].first().assign(egfr=g["egfr"].median())
    low = pat["egfr"] < pat["egfr"].quantile(0.25)
    high = pat["egfr"] > pat["egfr"].quantile(0.75)
    assert pat.loc[low, "event"].mean() > 1.5 * pat.loc[high, "event"].mean()


def test_treatment_lowers_sbp_over_time(long):
    late = long[long["day"] >= 180].groupby("arm")["sbp"].mean()
    base = long[long["day"] == 0].groupby("arm")["sbp"].mean()
    assert abs(base[0] - base[1]) < 1.5
    assert 3.0 < late[0] - late[1] < 9.0


def test_skewed_labs_and_rare_categories(long, patients):
    assert long["glucose"].skew() > 1.0 and long["egfr"].skew() > 0.3
    share = patients["race"].value_counts(normalize=True)
    assert (share < 0.015).sum() >= 3 and len(share) == 7


def test_registered_as_a_bundled_dataset():
    info = DATASETS["long_trial"]
    assert (info.target, info.patient, info.time) == ("event", "patient_id", "day")
    assert DATASETS["trial"].patient is None
    df = load_dataset("long_trial")
    assert df["patient_id"].nunique() == 5000
    from clinsynth.data import datasets

    assert datasets.simulate_long_trial is simulate_long_trial


# --- long ↔ wide ------------------------------------------------------------------------------

def _aligned(long: pd.DataFrame, n: int = 600) -> pd.DataFrame:
    """The first ``n`` patients with visit k moved to day 90·k: every time on the grid."""
    ids = long["patient_id"].unique()[:n]
    df = long[long["patient_id"].isin(ids)].reset_index(drop=True)
    df["day"] = (df.groupby("patient_id", sort=False).cumcount() * SCHEDULE_DAYS).astype(np.int64)
    return df


def test_round_trip_exact_on_grid_aligned_data(long):
    df = _aligned(long)
    wide = to_wide(df, "patient_id", "day", GRID, keep_time=True)
    assert wide.attrs["dropped_visits"] == 0 and len(wide) == 600
    pd.testing.assert_frame_equal(to_long(wide, "patient_id", "day", GRID), df)
    # without the time columns a visit with every lab missing cannot be told from no visit
    some = df[df[LABS].notna().any(axis=1)].reset_index(drop=True)
    wide = to_wide(some, "patient_id", "day", GRID)
    pd.testing.assert_frame_equal(to_long(wide, "patient_id", "day", GRID), some)


def test_wide_columns_follow_the_trial_convention_and_are_detected(long):
    aligned = _aligned(long, 300)
    wide = to_wide(aligned, "patient_id", "day", GRID)
    labels = grid_labels(GRID)
    assert labels[:4] == ["m00", "m03", "m06", "m09"] and labels[-1] == "m56"
    assert list(wide.columns) == ["patient_id", *PATIENT] + [f"{lab}_{v}" for lab in LABS for v in labels]
    schema = Schema.infer(wide, target="event")
    groups = {g.name: g for g in schema.longitudinal}
    assert set(groups) == set(LABS)
    assert groups["sbp"].columns == [f"sbp_{v}" for v in labels]
    # slots after a patient's last visit are NaN in every lab; the others hold that visit's labs
    present = np.zeros((len(wide), len(labels)), dtype=bool)
    for lab in LABS:
        present |= wide[[f"{lab}_{v}" for v in labels]].notna().to_numpy()
    observed = aligned[LABS].notna().any(axis=1).groupby(aligned["patient_id"], sort=False).sum()
    assert (present.sum(axis=1) == observed.to_numpy()).all()
    assert wide["sbp_m00"].equals(aligned.groupby("patient_id", sort=False)["sbp"].nth(0).reset_index(drop=True))


def test_nearest_grid_time_ties_collisions_and_off_grid():
    df = pd.DataFrame({
        "id": ["a"] * 6 + ["b"] * 2 + ["c"],
        "day": [0, 45, 100, 170, 190, 400, 0, 88, 45],
        "sex": ["F"] * 6 + ["M"] * 3,
        "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    })
    wide = to_wide(df, "id", "day", [0, 90, 180], keep_time=True)
    a = wide.set_index("id").loc["a"]
    # 45 is halfway between 0 and 90: the earlier grid time, where day 0 (nearer) wins -> dropped;
    # 100 -> 90; 170 and 190 both 10 days from 180: the earlier visit wins; 400 is off grid.
    assert (a["x_m00"], a["x_m03"], a["x_m06"]) == (1.0, 3.0, 4.0)
    assert (a["day_m00"], a["day_m03"], a["day_m06"]) == (0.0, 100.0, 170.0)
    assert wide.attrs["dropped_visits"] == 3
    b = wide.set_index("id").loc["b"]
    assert b["x_m03"] == 8.0 and np.isnan(b["x_m06"]) and np.isnan(b["day_m06"])
    c = wide.set_index("id").loc["c"]
    assert c["x_m00"] == 9.0 and np.isnan(c["x_m03"])  # halfway, alone: the earlier grid time
    back = to_long(wide, "id", "day", [0, 90, 180])
    assert back["day"].tolist() == [0, 100, 170, 0, 88, 45]  # actual times come back
    with pytest.raises(InputError, match="3 visit.*1 farther than 45 days.*2 on a grid time already taken"):
        to_wide(df, "id", "day", [0, 90, 180], strict=True)
    narrow = to_wide(df, "id", "day", [0, 90, 180], tolerance=5)
    assert narrow.attrs["dropped_visits"] == 6  # kept: a's day 0, b's days 0 and 88


def test_to_wide_errors_name_the_column():
    df = pd.DataFrame({"id": [1, 1, 2], "day": [0, 90, 0], "arm": [0, 1, 1], "x": [1.0, 2.0, 3.0]})
    with pytest.raises(InputError, match="'arm' is declared per-patient but varies within patient 1"):
        to_wide(df, "id", "day", [0, 90], per_patient=["arm"])
    with pytest.raises(InputError, match="column 'visit' is not in the table"):
        to_wide(df, "id", "visit", [0, 90])
    with pytest.raises(InputError, match="time column 'x2' is"):
        to_wide(df.assign(x2=["a", "b", "c"]), "id", "x2", [0, 90])
    with pytest.raises(InputError, match="strictly increasing"):
        to_wide(df, "id", "day", [0, 90, 90])
    with pytest.raises(InputError, match="2 distinct names"):
        to_wide(df, "id", "day", [0, 90], labels=["v1", "v1"])


def test_dates_become_days_since_the_first_visit():
    df = pd.DataFrame({
        "id": ["a", "a", "b"],
        "when": pd.to_datetime(["2021-03-01", "2021-05-31", "2022-01-10"]),
        "x": [1.0, 2.0, 3.0],
    })
    wide = to_wide(df, "id", "when", [0, 90], keep_time=True)
    assert wide["when_m03"].tolist()[0] == 91.0 and wide["x_m03"].tolist()[0] == 2.0
    assert wide["x_m00"].tolist() == [1.0, 3.0]


def test_grid_labels_fall_back_to_days_when_months_collide():
    assert grid_labels([0, 7, 14]) == ["d000", "d007", "d014"]
    assert grid_labels([0, 1826, 3653]) == ["m000", "m060", "m120"]  # widened past 99 months


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sets(st.integers(0, 5), min_size=1), st.sampled_from(["F", "M"]),
                          st.lists(st.none() | st.floats(-1e6, 1e6), min_size=12, max_size=12)),
                min_size=1, max_size=8),
       st.booleans())
def test_round_trip_property(patients, text_ids):
    """Any grid-aligned long table (gaps, missing values, visits with every value missing) survives
    long -> wide -> long with the time columns kept."""
    grid = [0, 30, 60, 91, 120, 150]
    rows = []
    for i, (slots, sex, values) in enumerate(patients):
        for k, slot in enumerate(sorted(slots)):
            pid = f"p{i}" if text_ids else i * 7
            rows.append((pid, grid[slot], sex, np.nan if values[2 * k] is None else values[2 * k],
                         np.nan if values[2 * k + 1] is None else values[2 * k + 1]))
    df = pd.DataFrame(rows, columns=["id", "t", "sex", "x", "y"])
    wide = to_wide(df, "id", "t", grid, keep_time=True, per_patient=["sex"])
    assert wide.attrs["dropped_visits"] == 0
    pd.testing.assert_frame_equal(to_long(wide, "id", "t", grid), df)
