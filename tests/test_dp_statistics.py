"""DP statistics: which queries a schema needs, what the noisy histograms release (checked by hand
without noise, against the data with noise), that rare values and outliers stay secret, and that
``conform`` fits raw data into the release."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr, ndtri

from clinsynth.data.datasets import simulate_trial
from clinsynth.data.transforms import TableEncoder
from clinsynth.errors import ConfigError, InputError
from clinsynth.privacy.histograms import coarse_weight
from clinsynth.privacy.conform import conform
from clinsynth.privacy.statistics import (
    FLAG_DOMAINS,
    DPRelease,
    bulk_threshold,
    category_threshold,
    flag_domain,
    grid_edges,
    plan_statistics,
    release_statistics,
)
from clinsynth.schema import ColumnSpec, LongitudinalGroup, Schema

SBP = [f"sbp_{v}" for v in ["rz", "m01", "m02", "m03", "m06", "m09", "m12", "m15", "m18", "m21", "m24", "m27"]]


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return simulate_trial(n=3000, seed=0)


@pytest.fixture(scope="module")
def trial_schema(trial) -> Schema:
    return Schema.infer(trial, target="arm", ids=["participant_id"])


def _with(schema: Schema, name: str, **update) -> Schema:
    """A validated copy of ``schema`` with one column changed."""
    data = schema.model_dump()
    data["columns"] = [{**c, **update} if c["name"] == name else c for c in data["columns"]]
    return Schema.model_validate(data)


def _numbers(obj) -> list[float]:
    """Every number anywhere in a nested JSON-like structure."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in _numbers(v)]
    return [float(obj)] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def _bucket_edges(x: float) -> tuple[float, float]:
    """The asinh grid bucket holding ``x``, computed independently of the module."""
    i = math.floor(math.asinh(x / 1e-3) / 0.1)
    return 1e-3 * math.sinh(0.1 * i), 1e-3 * math.sinh(0.1 * (i + 1))


# --- the plan ------------------------------------------------------------------------------

def test_plan_pools_a_longitudinal_group_and_skips_public_columns(trial_schema):
    plan = plan_statistics(trial_schema)
    assert SBP in plan.numeric  # 12 visits, one query
    assert ["age"] in plan.numeric and ["race"] in plan.categorical and ["arm"] in plan.categorical
    assert all("participant_id" not in q for q in plan.numeric + plan.categorical)
    # 0/1 number columns are numbers whose kind is released (a third value would make them integer)
    assert ["female"] in plan.numeric and ["female"] in plan.format and ["female"] not in plan.categorical
    assert plan.format == plan.numeric  # one format histogram per value histogram
    assert plan.n_queries == 13 + 13 + 3  # 6 scalar numbers + 3 groups + 4 flags, twice; arm, race, smoker

    schema = _with(trial_schema, "age", public=True, bounds=(40.0, 100.0))
    schema = _with(schema, "race", public=True)
    schema = _with(schema, "sbp_m03", public=True, bounds=(60.0, 250.0))
    plan = plan_statistics(schema)
    assert ["age"] not in plan.numeric and ["race"] not in plan.categorical
    assert [c for c in SBP if c != "sbp_m03"] in plan.numeric and [c for c in SBP if c != "sbp_m03"] in plan.format
    assert plan.n_queries == 12 + 12 + 2

    # "public" without bounds declares no values: its bounds still need a query, its format does not
    plan = plan_statistics(_with(trial_schema, "bmi", public=True, bounds=None))
    assert ["bmi"] in plan.numeric and ["bmi"] not in plan.format


# --- without noise: what the histogram gives, by hand --------------------------------------

def test_noise_free_release_matches_hand_computation():
    values = [100.0, 100.0, 101.0, 150.0, 150.0, np.nan]
    df = pd.DataFrame({"lab": values, "neg": [-1.0, -1.0, -2.0, -10.0, -10.0, -10.0]})
    schema = Schema(columns=[ColumnSpec(name="lab", kind="continuous", missing="indicator"),
                             ColumnSpec(name="neg", kind="continuous")])
    release = release_statistics(df, schema, noise_std=0.0, threshold_delta=1e-5, rng=np.random.default_rng(0))

    lo_a, _ = _bucket_edges(100.0)
    _, hi_b = _bucket_edges(150.0)
    width = hi_b - lo_a
    # whole numbers: released as integer, so the widened bounds are rounded outward to whole numbers
    assert (release.schema.column("lab").kind, release.schema.column("lab").decimals) == ("integer", 0)
    assert release.schema.column("lab").bounds == (math.floor(lo_a - width / 2), math.ceil(hi_b + width / 2))
    assert release.schema.column("lab").public is False and release.schema.column("lab").missing == "indicator"
    assert release.schema.column("neg").missing == "none"
    observed = [v for v in values if not np.isnan(v)]
    mids = np.array([sum(_bucket_edges(v)) / 2 for v in observed])
    state = release.numeric["lab"]
    assert state["loc"] == pytest.approx(mids.mean())
    assert state["scale"] == pytest.approx(mids.std())
    # 100 and 101 share a bucket holding 3 of 5 values; the empty buckets up to 150's add knots only once
    assert state["knots"] == pytest.approx([lo_a, _bucket_edges(101.0)[1], hi_b])
    assert state["scores"] == pytest.approx(ndtri([1e-6, 0.6, 1 - 1e-6]).tolist())

    # all-negative data: widening stops at 0 (it would reach +4)
    a, b = _bucket_edges(-10.0)[0], _bucket_edges(-1.0)[1]
    assert b + (b - a) / 2 > 0
    assert release.schema.column("neg").bounds == (math.floor(a - (b - a) / 2), 0.0)


def test_noise_free_integers_round_outward_and_stay_non_negative():
    df = pd.DataFrame({"count": [0, 1, 2, 3, 40, 40]})
    schema = Schema(columns=[ColumnSpec(name="count", kind="integer")])
    release = release_statistics(df, schema, 0.0, 1e-5, np.random.default_rng(0))
    top = _bucket_edges(40.0)[1]
    assert release.schema.column("count").bounds == (0.0, float(math.ceil(top * 1.5)))


def test_a_longitudinal_group_is_one_histogram_with_weight_one_per_record():
    df = pd.DataFrame({"v_1": [10.0, 10.0, 20.0], "v_2": [10.0, np.nan, 30.0], "v_3": [10.0, np.nan, np.nan]})
    schema = Schema(columns=[ColumnSpec(name=c, kind="continuous", missing="indicator") for c in df.columns],
                    longitudinal=[LongitudinalGroup(name="v", columns=list(df.columns), visits=["1", "2", "3"])])
    release = release_statistics(df, schema, 0.0, 1e-5, np.random.default_rng(0))
    report = release.noisy_counts["group:v"]
    counts = np.array(report["counts"])
    assert report["columns"] == ["v_1", "v_2", "v_3"]
    assert counts.sum() == pytest.approx(6 / 3)  # 6 observed values, each weighted 1/3
    assert counts.max() == pytest.approx(4 / 3)  # the four 10s: record 1 adds 1, record 2 adds 1/3
    bounds = {release.schema.column(c).bounds for c in df.columns}
    assert len(bounds) == 1  # one query, shared bounds
    assert release.numeric["v_1"] == release.numeric["v_3"]


def test_noise_free_datetime_bounds_are_iso_days_and_state_in_days():
    dates = pd.to_datetime(["2010-01-05", "2010-03-01", "2011-06-30", "2011-07-01"])
    df = pd.DataFrame({"visit_date": dates})
    schema = Schema.infer(df, longitudinal=None)
    release = release_statistics(df, schema, 0.0, 1e-5, np.random.default_rng(0))
    lo, hi = release.schema.column("visit_date").bounds
    edges = grid_edges("datetime")
    days = (dates - pd.Timestamp("1970-01-01")).days.to_numpy()
    a = edges[np.searchsorted(edges, days.min(), side="right") - 1]
    b = edges[np.searchsorted(edges, days.max(), side="right")]
    assert lo == (pd.Timestamp("1970-01-01") + pd.Timedelta(days=math.floor(a - (b - a) / 2))).isoformat()
    assert hi == (pd.Timestamp("1970-01-01") + pd.Timedelta(days=math.ceil(b + (b - a) / 2))).isoformat()
    assert release.numeric["visit_date"]["knots"][0] == a  # days since 1970, as NumericCodec reads dates


def test_public_bounds_give_state_without_a_query():
    df = pd.DataFrame({"age": [60, 70, 80]})
    schema = Schema(columns=[ColumnSpec(name="age", kind="integer", bounds=(40, 100), public=True)])
    release = release_statistics(df, schema, noise_std=20.0, threshold_delta=1e-5, rng=np.random.default_rng(0))
    assert release.numeric["age"]["loc"] == 70.0 and release.numeric["age"]["scale"] == 15.0
    assert release.numeric["age"]["knots"] == [40.0, 100.0]
    assert release.schema.column("age").bounds == (40.0, 100.0) and release.noisy_counts == {}
    assert release.threshold_delta == 0.0  # nothing thresholded, no δ to charge


# --- with realistic noise ------------------------------------------------------------------

def test_realistic_noise_covers_the_data_and_releases_whole_flag_domains(trial, trial_schema):
    release = release_statistics(trial, trial_schema, noise_std=20.0, threshold_delta=1e-5,
                                 rng=np.random.default_rng(1))
    for cols in (["age"], SBP):
        lo, hi = release.schema.column(cols[0]).bounds
        x = trial[cols].to_numpy(dtype=float).ravel()
        x = x[~np.isnan(x)]
        assert np.mean((x >= lo) & (x <= hi)) >= 0.95, cols[0]
        assert hi - lo < 10 * np.std(x)  # not stretched to absurd values
    for flag in ("arm", "female", "ckd", "cvd_history", "statin"):
        assert release.schema.column(flag).categories == [0, 1]
        assert release.schema.column(flag).kind == "binary"
    assert release.threshold == pytest.approx(category_threshold(20.0, 1e-5, 3))  # arm, race, smoker
    assert release.threshold_delta == 1e-5
    assert release.fallback["race"] == trial["race"].mode()[0]
    json.dumps(release.noisy_counts)  # JSON-plain, for the report

    # the released statistics drive the encoder on the conformed data
    data = conform(trial, release)
    release.schema.validate(data)
    for transform in ("standard", "quantile"):
        states = {n: ({"knots": s["knots"], "scores": s["scores"]} if transform == "quantile"
                      else {"loc": s["loc"], "scale": s["scale"]}) for n, s in release.numeric.items()}
        states |= {c.name: {} for c in release.schema.model_columns if c.kind in ("binary", "categorical")}
        enc = TableEncoder.from_state_dict(release.schema, {"numeric_transform": transform, "columns": states})
        X = enc.encode(data)
        assert np.isfinite(X).all() and np.abs(X).max() < 50
        assert len(enc.decode(X)) == len(trial)


def test_flag_domain_rule():
    assert flag_domain([0, 1]) == (0, 1) and flag_domain([1]) == (0, 1)
    assert flag_domain([False, True]) == (False, True)
    assert flag_domain(["0", "1"]) == ("0", "1") and flag_domain([0.0, 1.0]) == (0.0, 1.0)
    assert flag_domain(["no", "yes"]) is None and flag_domain([0, 2]) is None
    assert flag_domain([1, 1.0]) is None  # mixed types are not one flag domain
    assert all(len(d) == 2 for d in FLAG_DOMAINS)


def test_flag_domain_is_released_whole_even_when_one_value_is_unobserved():
    df = pd.DataFrame({"x": np.arange(3000) % 50, "flag": np.ones(3000, dtype=np.int64)})
    schema = Schema(columns=[ColumnSpec(name="x", kind="integer"),
                             ColumnSpec(name="flag", kind="categorical", categories=[1])])
    release = release_statistics(df, schema, 20.0, 1e-5, np.random.default_rng(0))
    assert release.schema.column("flag").categories == [0, 1]
    assert release.fallback["flag"] == 1


def test_a_rare_category_is_never_released(trial):
    df = trial[["age", "race", "arm"]].copy()
    df.loc[17, "race"] = "Martian"
    schema = Schema.infer(df, target="arm")
    assert "Martian" in schema.column("race").categories  # the inferred schema would leak it
    for seed in range(200):
        release = release_statistics(df, schema, 20.0, 1e-5, np.random.default_rng(seed))
        assert "Martian" not in release.schema.column("race").categories
        assert "Martian" not in json.dumps(release.noisy_counts)
        assert "White" in release.schema.column("race").categories


def test_a_planted_outlier_does_not_show_in_the_release(trial, trial_schema):
    df = trial.copy()
    df.loc[3, "creatinine"] = 987654.321
    df.loc[4, SBP[5]] = 987654.321
    for seed in range(10):
        release = release_statistics(df, trial_schema, 20.0, 1e-5, np.random.default_rng(seed))
        for col in ("creatinine", SBP[5]):
            assert release.schema.column(col).bounds[1] < 1000
        released = _numbers(release.numeric) + _numbers(release.noisy_counts) + _numbers(
            [c.bounds for c in release.schema.columns if c.bounds is not None and c.kind != "datetime"])
        assert 987654.321 not in released
        assert np.max(released) < 1e5
        assert conform(df, release)["creatinine"].max() <= release.schema.column("creatinine").bounds[1]


# --- conform -------------------------------------------------------------------------------

def _small_release() -> tuple[pd.DataFrame, DPRelease]:
    n = 40
    df = pd.DataFrame({
        "lab": np.linspace(10, 20, n),
        "n_visits": np.arange(n, dtype=np.int64) % 5 + 1,
        "when": pd.date_range("2015-01-01", periods=n, freq="D"),
        "site": pd.Series(["a", "b"] * (n // 2), dtype="str"),
        "smoker": pd.Series(["yes", "no", None, "no"] * (n // 4), dtype="str"),
    })
    df.loc[0, "site"] = "c"  # one record: not above τ = 1 even without noise
    df.loc[0, "smoker"] = "sometimes"
    schema = Schema.infer(df, longitudinal=None)
    assert schema.column("site").missing == "none" and schema.column("smoker").missing == "indicator"
    return df, release_statistics(df, schema, 0.0, 1e-5, np.random.default_rng(0))


def test_conform_clips_numbers_and_dates_and_maps_unknown_categories():
    _, release = _small_release()
    assert release.schema.column("site").categories == ["a", "b"]
    assert release.schema.column("smoker").categories == ["no", "yes"]
    assert release.fallback["site"] == "b"
    lo, hi = release.schema.column("lab").bounds
    d_lo, d_hi = (pd.Timestamp(b) for b in release.schema.column("when").bounds)
    raw = pd.DataFrame({
        "lab": [lo - 100, hi + 100, np.nan, (lo + hi) / 2],
        "n_visits": np.array([0, 1000, 3, 2], dtype=np.int64),
        "when": pd.to_datetime(["1900-01-01", "2099-01-01", None, "2015-01-10"]),
        "site": pd.Series(["a", "zzz", "b", None], dtype="str"),
        "smoker": pd.Series(["zzz", "no", None, "yes"], dtype="str"),
    })
    out = conform(raw, release)
    assert len(out) == len(raw) and list(out.columns) == list(raw.columns)
    # lab, when and site were released with missing policy "none" (they had no gaps): a gap gets
    # the released centre or the most common released category
    assert release.schema.column("lab").missing == "none" and release.schema.column("lab").decimals is None
    assert out["lab"].iloc[:2].tolist() == [lo, hi] and out["lab"].iloc[2] == release.numeric["lab"]["loc"]
    assert out["lab"].iloc[3] == raw["lab"].iloc[3]
    assert out["n_visits"].dtype == np.int64 and out["n_visits"].max() <= release.schema.column("n_visits").bounds[1]
    assert out["when"].dtype == raw["when"].dtype
    centre = (pd.Timestamp("1970-01-01") + pd.Timedelta(days=release.numeric["when"]["loc"])).normalize()
    assert out["when"].iloc[0] == d_lo and out["when"].iloc[1] == d_hi and out["when"].iloc[2] == centre
    assert out["site"].tolist() == ["a", "b", "b", "b"]  # fallback for the unknown value and the gap
    assert pd.isna(out["smoker"].iloc[0]) and out["smoker"].iloc[1] == "no"  # indicator: unknown -> missing
    assert pd.isna(out["smoker"].iloc[2])
    release.schema.validate(out)
    assert out["site"].dtype == raw["site"].dtype
    assert raw["site"].iloc[1] == "zzz" and raw["lab"].iloc[0] == lo - 100  # input untouched


def test_conform_keeps_dates_held_as_text_as_text():
    df, release = _small_release()
    text = pd.DataFrame({"when": pd.Series(["1900-01-01", "2015-01-10", None], dtype="str")})
    out = conform(text, release)
    assert out["when"].dtype == text["when"].dtype
    assert out["when"].iloc[0] == pd.Timestamp(release.schema.column("when").bounds[0]).strftime("%Y-%m-%d")
    centre = (pd.Timestamp("1970-01-01") + pd.Timedelta(days=release.numeric["when"]["loc"])).normalize()
    assert out["when"].iloc[1] == "2015-01-10" and out["when"].iloc[2] == centre.strftime("%Y-%m-%d")  # "none": filled


# --- errors --------------------------------------------------------------------------------

def test_too_few_records_is_an_input_error_naming_the_fix(trial, trial_schema):
    with pytest.raises(InputError, match=r"age.*public.*bounds.*raise ε"):
        release_statistics(trial.head(5), trial_schema, 20.0, 1e-5, np.random.default_rng(0))
    with pytest.raises(InputError, match=r"race.*public.*categories"):
        release_statistics(trial.head(5)[["race"]], Schema.infer(trial[["race"]]), 20.0, 1e-5,
                           np.random.default_rng(0))


def test_the_target_needs_two_released_categories_other_columns_may_keep_one():
    df = pd.DataFrame({"x": np.arange(200) % 20, "y": ["yes"] * 199 + ["no"]})
    schema = Schema.infer(df, target="y", longitudinal=None)
    with pytest.raises(InputError, match=r"target 'y'"):
        release_statistics(df, schema, 0.0, 1e-5, np.random.default_rng(0))
    # binary or not was read from the values (2 distinct): the release decides it, no error
    schema = Schema.infer(df, longitudinal=None)
    assert schema.column("y").kind == "binary"
    released = release_statistics(df, schema, 0.0, 1e-5, np.random.default_rng(0)).schema
    assert (released.column("y").kind, released.column("y").categories) == ("categorical", ["yes"])


def test_binary_column_with_more_released_values_becomes_categorical():
    df = pd.DataFrame({"x": np.arange(30) % 5, "flag": ["a", "b", "c"] * 10})
    schema = Schema(columns=[ColumnSpec(name="x", kind="integer"),
                             ColumnSpec(name="flag", kind="binary", categories=["a", "b"])])
    release = release_statistics(df, schema, 0.0, 1e-5, np.random.default_rng(0))
    assert release.schema.column("flag").kind == "categorical"
    assert release.schema.column("flag").categories == ["a", "b", "c"]
    # a number column said binary is a number: a released third value makes it integer
    numbers = df.assign(flag=[0, 1, 2] * 10)
    schema = Schema(columns=[ColumnSpec(name="x", kind="integer"),
                             ColumnSpec(name="flag", kind="binary", categories=[0, 1])])
    flag = release_statistics(numbers, schema, 0.0, 1e-5, np.random.default_rng(0)).schema.column("flag")
    assert (flag.kind, flag.categories, flag.bounds[0]) == ("integer", None, 0.0) and flag.bounds[1] >= 2


def test_bad_arguments_are_config_errors(trial, trial_schema):
    with pytest.raises(ConfigError, match="noise_std"):
        release_statistics(trial, trial_schema, -1.0, 1e-5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="threshold_delta"):
        release_statistics(trial, trial_schema, 20.0, 0.0, np.random.default_rng(0))


def test_threshold_keeps_a_single_record_below_delta_over_c():
    tau = category_threshold(20.0, 1e-5, 7)
    # P(1 + N(0, 20²) > τ) = δ / c
    assert float(ndtri(1 - 1e-5 / 7)) == pytest.approx((tau - 1) / 20)


def test_every_released_count_carries_gaussian_noise(trial):
    """Each count carries the noise its report states: the value histogram's fine grid gets
    weight w_f of each record (the coarse grid the rest: √(1 − w_f²)), so its counts have sd
    20 / w_f; the target's flag counts sd 20 (a table this narrow does not weight the target up)."""
    df = trial[["age", "arm"]]
    schema = Schema.infer(df, target="arm")
    residuals, flag_residuals = [], []
    for seed in range(60):
        release = release_statistics(df, schema, 20.0, 1e-5, np.random.default_rng(seed))
        report = release.noisy_counts["age"]
        assert report["level"] == "11%"  # the fine grid located the ages: its own counts are reported
        exact, _ = np.histogram(df["age"], bins=report["edges"])
        residuals.extend((np.array(report["counts"]) - exact) / np.array(report["noise_sd"]))
        arm = release.noisy_counts["arm"]
        flag_residuals.extend((np.array(arm["counts"]) - df["arm"].value_counts().loc[arm["categories"]].to_numpy())
                              / arm["noise_sd"])
    w_f = np.sqrt(1 - coarse_weight(len(df), 20.0) ** 2)
    assert 0.8 <= w_f < 1 and np.allclose(report["noise_sd"], 20 / w_f) and arm["noise_sd"] == 20.0
    for r in (np.array(residuals), np.array(flag_residuals)):
        assert abs(r.mean()) < 4 / np.sqrt(r.size)
        assert 0.85 < r.std() < 1.15


def test_bulk_threshold_makes_stray_noise_buckets_rare():
    for kind in ("continuous", "datetime"):
        n = grid_edges(kind).size - 1
        cut = bulk_threshold(1.0, n)
        assert cut >= 4.0
        assert 1 - ndtr(cut) ** n <= 1.01e-4  # P(any pure-noise bucket of the grid is kept)
    assert bulk_threshold(0.0, 600) == 0.0  # no noise: every non-empty bucket is bulk


# -- missing policy under noise ----------------------------------------------------------------
def _gappy_table(seed: int = 0, n: int = 353) -> tuple[pd.DataFrame, Schema]:
    """sklearn's diabetes table at the size of its training split: a lab 24 % blank, one complete."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"lab": rng.lognormal(1.4, 0.3, n), "full": rng.lognormal(4.0, 0.4, n),
                       "y": rng.choice(["no", "yes"], n)})
    df.loc[rng.random(n) < 0.24, "lab"] = np.nan
    return df, Schema.infer(df, target="y")


def test_a_column_a_quarter_blank_keeps_its_missing_state_at_small_table_noise():
    # the noise of ε = 1 on 353 records (the format counts' sd 39): 3 sds (117) hid 85 blanks in
    # most draws, and every blank became the lab's centre; the rule keeps the state unless the
    # noisy count is under one sd
    df, schema = _gappy_table()
    assert 75 <= df["lab"].isna().sum() <= 95
    draws = [release_statistics(df, schema, 19.4, 1e-5, np.random.default_rng(s)).schema for s in range(20)]
    lab = sum(d.column("lab").missing == "indicator" for d in draws)
    full = sum(d.column("full").missing == "indicator" for d in draws)
    assert lab >= 16, lab  # P(85 + N(0, 39) > 39) = 0.88; at 3 sds 0.21
    assert full <= 8, full  # a complete column: P(N(0, 39) > 39) = 0.16
    assert all(d.column("y").missing == "none" for d in draws)  # the target never (it has no blank)

