"""Under DP the schema's facts come from the ledger or from the user (issue 25, point 6).

One planted record (a value with 4 decimals in an integer column, a NaN in a column without
missing values) used to turn the DP bundle's ``schema.json`` into ``continuous``/``decimals 4``/
``indicator``: the neighbouring datasets were told apart with certainty, outside the ledger. Now
kinds, decimals, missing policies and dtypes are released through the charged mechanism (or are
declared ``public``), so the two fits write the same bytes.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import clinsynth
from clinsynth.privacy.formats import NUMBER_FORMATS, decide_format
from clinsynth.privacy.conform import conform
from clinsynth.privacy.schema_facts import schema_facts
from clinsynth.privacy.statistics import plan_statistics, release_statistics
from clinsynth.schema import ColumnSpec, LongitudinalGroup, Schema
from test_dp_acgan import quiet_accountants  # noqa: F401 (autouse)

PLANT = 98765.4321  # extreme, and 4 decimals in an integer column


def neighbours(n: int = 1500, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """D (an integer, a 1-decimal, a categorical column and a 0/1 target) and D plus one planted row."""
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({
        "age": rng.integers(30, 90, n),
        "bmi": np.round(rng.normal(27, 4, n), 1),
        "site": rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2]),
        "arm": rng.integers(0, 2, n),
    })
    planted = pd.DataFrame({"age": [PLANT], "bmi": [np.nan], "site": ["north"], "arm": [1]})
    return d, pd.concat([d, planted], ignore_index=True)


def _fit_and_save(model: str, df: pd.DataFrame, path, **params) -> tuple[str, object]:
    fitted = clinsynth.create(model, epsilon=1.0, progress=False, **params).fit(df, Schema.infer(df, target="arm"))
    fitted.save(path)
    return (path / "schema.json").read_text(), fitted


@pytest.mark.parametrize("model, params", [("dp-bayesnet", {}), ("dp-acgan", {"epochs": 1, "select": "last"})])
def test_a_planted_record_leaves_the_dp_bundles_schema_byte_identical(model, params, tmp_path):
    d, planted = neighbours()
    inferred_d, inferred_p = (Schema.infer(f, target="arm") for f in (d, planted))
    assert inferred_p.column("age").kind == "continuous" and inferred_p.column("age").decimals == 4  # the leak's source
    assert inferred_d.to_json() != inferred_p.to_json()

    text_d, fitted_d = _fit_and_save(model, d, tmp_path / "d", **params)
    text_p, fitted_p = _fit_and_save(model, planted, tmp_path / "p", **params)
    assert text_d == text_p
    released = Schema.from_json(text_d)
    assert released.column("age").kind == "integer" and released.column("age").decimals == 0
    assert released.column("age").dtype == "int64" and released.column("age").bounds[1] < 1000
    assert released.column("bmi").decimals == 1 and released.column("bmi").missing == "none"
    assert released.column("site").categories == ["east", "north", "south"]
    # what went through the ledger: the format queries are named in its charge, and ε holds
    for fitted in (fitted_d, fitted_p):
        purposes = " ".join(c.purpose for c in fitted.ledger_.charges)
        assert "format" in purposes
        assert fitted.ledger_.spent() <= 1.0
    synthetic = fitted_p.sample(500, seed=0)
    released.validate(synthetic)
    assert synthetic["age"].dtype == np.int64 and synthetic["age"].max() < 1000
    assert not synthetic["bmi"].isna().any()
    assert np.allclose(synthetic["bmi"], synthetic["bmi"].round(1))


def test_the_plan_counts_one_format_query_per_numeric_query():
    d, _ = neighbours(200)
    plan = plan_statistics(Schema.infer(d, target="arm"))
    assert plan.numeric == [["age"], ["bmi"]] and plan.format == [["age"], ["bmi"]]
    assert plan.categorical == [["site"], ["arm"]]
    assert plan.n_queries == 6
    public = Schema.infer(d, target="arm").model_dump()
    public["columns"][0]["public"] = True  # age: bounds and everything else declared
    assert plan_statistics(Schema.model_validate(public)).format == [["bmi"]]


# --- the format histogram, without noise -------------------------------------------------------

def test_noise_free_format_sets_kind_decimals_missing_and_dtype():
    n = 1000
    rng = np.random.default_rng(3)
    df = pd.DataFrame({
        "whole_floats": rng.integers(0, 50, n).astype(float),          # float64 input, whole values
        "one_decimal": np.round(rng.normal(10, 2, n), 1),
        "many": rng.normal(0, 1, n),                                     # needs more than 6 decimals
        "mostly_whole": np.r_[rng.integers(0, 9, n - 5), [1.25] * 5],   # 0.5 % with 2 decimals: rounded
        "gappy": np.where(rng.random(n) < 0.2, np.nan, rng.integers(1, 5, n)),
    })
    schema = Schema(columns=[ColumnSpec(name=c, kind="continuous", decimals=4, missing="indicator", dtype="float64")
                             for c in df.columns])
    released = release_statistics(df, schema, 0.0, 1e-5, np.random.default_rng(0)).schema
    got = {c.name: (c.kind, c.decimals, c.missing, c.dtype) for c in released.columns}
    assert got == {
        "whole_floats": ("integer", 0, "none", "int64"),
        "one_decimal": ("continuous", 1, "none", "float64"),
        "many": ("continuous", None, "none", "float64"),
        "mostly_whole": ("integer", 0, "none", "int64"),
        "gappy": ("integer", 0, "indicator", "float64"),  # pandas holds a whole column with gaps as float
    }


def test_a_numeric_flag_is_decided_by_the_format_histogram_not_by_counting_distinct_values():
    n = 3000
    rng = np.random.default_rng(1)
    d = pd.DataFrame({"x": rng.normal(5, 1, n).round(2), "flag": rng.integers(0, 2, n)})
    p = pd.concat([d, pd.DataFrame({"x": [5.0], "flag": [7]})], ignore_index=True)
    inferred_d, inferred_p = Schema.infer(d), Schema.infer(p)
    assert inferred_d.column("flag").kind == "binary" and inferred_p.column("flag").kind == "integer"
    for seed in range(5):
        rd = release_statistics(d, inferred_d, 20.0, 1e-5, np.random.default_rng(seed))
        rp = release_statistics(p, inferred_p, 20.0, 1e-5, np.random.default_rng(seed))
        assert rd.schema.to_json() == rp.schema.to_json()
        flag = rp.schema.column("flag")
        assert (flag.kind, flag.categories, flag.dtype) == ("binary", [0, 1], "int64")
    out = conform(p, rp)
    assert set(out["flag"].unique()) <= {0, 1} and out["flag"].iloc[-1] == rp.fallback["flag"]
    rp.schema.validate(out)


def test_text_columns_are_binary_exactly_when_two_categories_are_released():
    n = 3000
    rng = np.random.default_rng(2)
    d = pd.DataFrame({"x": rng.normal(size=n).round(1), "sex": rng.choice(["f", "m"], n)})
    p = d.copy()
    p.loc[0, "sex"] = "unknown"  # one record: inferred categorical, never released
    assert Schema.infer(d).column("sex").kind == "binary" and Schema.infer(p).column("sex").kind == "categorical"
    rd = release_statistics(d, Schema.infer(d), 20.0, 1e-5, np.random.default_rng(0))
    rp = release_statistics(p, Schema.infer(p), 20.0, 1e-5, np.random.default_rng(0))
    assert rd.schema.to_json() == rp.schema.to_json()
    assert rp.schema.column("sex").kind == "binary"

    # a second value too rare to release leaves a one-category column, not an error that only
    # a 2-valued column (inferred binary) would raise
    rare = d.copy()
    rare.loc[:2, "sex"] = "x"
    rare["sex"] = np.where(rare["sex"] == "x", "x", "f")
    assert Schema.infer(rare).column("sex").kind == "binary"
    released = release_statistics(rare, Schema.infer(rare), 20.0, 1e-5, np.random.default_rng(0)).schema
    assert (released.column("sex").kind, released.column("sex").categories) == ("categorical", ["f"])


def test_a_numeric_target_keeps_whole_number_labels_when_one_record_makes_it_float():
    n = 2000
    rng = np.random.default_rng(4)
    d = pd.DataFrame({"x": rng.normal(size=n).round(1), "y": rng.integers(0, 2, n)})
    # one record stored as a float makes pandas hold the whole column as floats (a blank target,
    # which did the same, is now refused: every row needs a class)
    p = pd.concat([d, pd.DataFrame({"x": [0.0], "y": [1.0]})], ignore_index=True)
    assert p["y"].dtype == np.float64 and Schema.infer(p, target="y").column("y").categories == [0.0, 1.0]
    rd = release_statistics(d, Schema.infer(d, target="y"), 20.0, 1e-5, np.random.default_rng(0))
    rp = release_statistics(p, Schema.infer(p, target="y"), 20.0, 1e-5, np.random.default_rng(0))
    assert rd.schema.to_json() == rp.schema.to_json()
    assert rp.schema.column("y").categories == [0, 1] and rp.schema.column("y").dtype == "int64"
    assert conform(p, rp)["y"].notna().all()


def test_dates_get_day_precision_unless_times_of_day_are_common():
    n = 2000
    days = pd.Timestamp("2015-01-01") + pd.to_timedelta(np.random.default_rng(5).integers(0, 900, n), unit="D")
    d = pd.DataFrame({"when": days})
    p = pd.concat([d, pd.DataFrame({"when": [pd.Timestamp("2016-03-03 13:47:11")]})], ignore_index=True)
    assert Schema.infer(d).column("when").decimals == 0 and Schema.infer(p).column("when").decimals is None
    rd = release_statistics(d, Schema.infer(d), 5.0, 1e-5, np.random.default_rng(0))
    rp = release_statistics(p, Schema.infer(p), 5.0, 1e-5, np.random.default_rng(0))
    assert rd.schema.to_json() == rp.schema.to_json() and rp.schema.column("when").decimals == 0
    timed = d.assign(when=d["when"] + pd.to_timedelta(np.arange(n) % 86_400, unit="s"))
    released = release_statistics(timed, Schema.infer(timed), 5.0, 1e-5, np.random.default_rng(0)).schema
    assert released.column("when").decimals is None


def test_with_noise_the_format_rule_finds_real_precision_and_ignores_one_record():
    n = 3000
    rng = np.random.default_rng(6)
    base = pd.DataFrame({"lab": np.round(rng.lognormal(1, 0.5, n), 2), "count": rng.integers(0, 30, n).astype(float)})
    kept_missing = {"lab": 0, "count": 0}
    for seed in range(30):
        planted = base.copy()
        planted.loc[seed, "count"] = 12.3456
        planted.loc[seed + 1, "lab"] = np.nan
        schema = Schema.infer(planted)
        released = release_statistics(planted, schema, 20.0, 1e-5, np.random.default_rng(seed)).schema
        assert (released.column("lab").kind, released.column("lab").decimals) == ("continuous", 2)
        assert (released.column("count").kind, released.column("count").decimals) == ("integer", 0)
        for name in kept_missing:
            kept_missing[name] += released.column(name).missing == "indicator"
        assert released.column("count").dtype == ("int64" if released.column("count").missing == "none" else "float64")
    # a missing state is kept unless the noisy count is under one sd: one blank (lab) moves that
    # no more than no blank (count) does — each about one draw in six (binomial(30, 0.16): ≤ 10)
    assert all(k <= 10 for k in kept_missing.values()), kept_missing


# --- declared facts and longitudinal groups ---------------------------------------------------

def test_a_public_column_keeps_every_declared_fact():
    df = pd.DataFrame({"lab": np.round(np.random.default_rng(7).normal(10, 2, 500), 1)})
    declared = ColumnSpec(name="lab", kind="continuous", decimals=3, missing="indicator", public=True,
                          dtype="float32")  # no bounds: only the bounds are released
    release = release_statistics(df, Schema(columns=[declared]), 0.0, 1e-5, np.random.default_rng(0))
    got = release.schema.column("lab")
    assert (got.kind, got.decimals, got.missing, got.dtype) == ("continuous", 3, "indicator", "float32")
    assert "lab" not in json.dumps([q for k, q in release.noisy_counts.items() if k.startswith("format")])


def test_a_longitudinal_group_releases_one_format_and_counts_only_gaps_before_dropout():
    # record 1 drops out after visit 1 (the blanks after it are dropout, not missing values)
    df = pd.DataFrame({"v_1": [10.0, 11.0, 12.0, 13.0], "v_2": [20.0, np.nan, 22.0, 23.0],
                       "v_3": [30.0, np.nan, 32.0, 33.0]})
    groups = [LongitudinalGroup(name="v", columns=list(df.columns), visits=["1", "2", "3"])]
    schema = Schema(columns=[ColumnSpec(name=c, kind="continuous", missing="indicator") for c in df.columns],
                    longitudinal=groups)
    release = release_statistics(df, schema, 0.0, 1e-5, np.random.default_rng(0))
    assert {release.schema.column(c).missing for c in df.columns} == {"none"}
    assert {release.schema.column(c).kind for c in df.columns} == {"integer"}
    # blanks after dropout stay possible: whole numbers held as float64, as pandas holds them
    assert {release.schema.column(c).dtype for c in df.columns} == {"float64"}
    assert np.isnan(conform(df, release)["v_3"].iloc[1])  # dropout is not a gap to fill
    gap = df.copy()
    gap.loc[2, "v_2"] = np.nan  # record 3 is seen again at visit 3: an intermittent gap
    release = release_statistics(gap, schema, 0.0, 1e-5, np.random.default_rng(0))
    assert {release.schema.column(c).missing for c in df.columns} == {"indicator"}


# --- conform ----------------------------------------------------------------------------------

def test_conform_rounds_to_the_released_precision_and_fills_gaps_the_schema_has_no_room_for():
    d, planted = neighbours(3000)
    release = release_statistics(planted, Schema.infer(planted, target="arm"), 20.0, 1e-5, np.random.default_rng(0))
    out = conform(planted, release)
    release.schema.validate(out)  # integer age holds no fraction, bmi (missing "none") no gap
    lo, hi = release.schema.column("age").bounds
    assert out["age"].iloc[-1] == hi
    filled = out["bmi"].iloc[-1]
    assert filled == pytest.approx(release.numeric["bmi"]["loc"], abs=0.05) and filled == round(filled, 1)
    # record by record: the planted row changes no other row (only the dtype pandas gave the column)
    pd.testing.assert_frame_equal(out.iloc[:-1], conform(d, release), check_dtype=False)


# --- what the console and the report say -----------------------------------------------------

def test_schema_facts_say_what_came_from_structure_what_was_declared_and_what_was_released():
    d, _ = neighbours(500)
    schema = Schema.infer(d, target="arm")
    data = schema.model_dump()
    data["columns"][2]["public"] = True  # site
    release = release_statistics(d, Schema.model_validate(data), 5.0, 1e-5, np.random.default_rng(0))
    facts = schema_facts(release.schema)
    assert facts["declared_public"] == ["site"]
    assert facts["released"] == ["age", "bmi", "arm"]
    structure = "; ".join(facts["structure"])
    assert "4 column names" in structure and "target 'arm'" in structure and "value type" in structure
    line = facts["summary"]
    assert "\n" not in line and "site" in line and "3 column(s)" in line


def test_cli_fit_with_epsilon_prints_the_schema_facts(tmp_path, capsys):
    from clinsynth.cli import main

    d, _ = neighbours(1500)
    d.to_csv(tmp_path / "d.csv", index=False)
    code = main(["fit", str(tmp_path / "d.csv"), "--target", "arm", "--model", "bayesnet", "--epsilon", "1",
                 "--out", str(tmp_path / "m"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    text = " ".join((out + err).split())  # messages go to stderr
    assert "from structure only" in text and "through the ledger" in text
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"] == "dp-bayesnet"


def test_too_few_records_for_evidence_leave_values_unrounded_rather_than_integers():
    """350 lab values 1.00 … 1.09 (2 decimals; one bucket of the value grid, so their bounds can be
    released) whose format counts drown in noise of sd 60: no precision has evidence, so
    none is imposed. Reading "no evidence of decimals" as "integer" (or as a 0/1 flag, since 35 of
    them are exactly 1) would round every value to 1 and destroy the column."""
    exact = np.zeros(len(NUMBER_FORMATS))
    exact[NUMBER_FORMATS.index("1")], exact[NUMBER_FORMATS.index("2 decimals")] = 35, 315
    facts = decide_format(exact, 60.0, dates=False, may_be_flag=True)
    assert (facts["kind"], facts["decimals"]) == ("continuous", None)
    assert decide_format(exact, 10.0, dates=False, may_be_flag=True)["decimals"] == 2  # less noise: evidence
    assert decide_format(exact, 0.0, dates=False, may_be_flag=True)["decimals"] == 2

    lab = pd.DataFrame({"creatinine": np.random.default_rng(8).integers(100, 110, 350) / 100})
    release = release_statistics(lab, Schema.infer(lab), 10.0, 1e-5, np.random.default_rng(0))
    assert release.schema.column("creatinine").decimals == 2


def test_the_guarantee_page_lists_what_was_released_and_a_loaded_bundle_says_the_same(tmp_path):
    from clinsynth.pipeline import guarantee_of
    from clinsynth.report.html import write_guarantee

    d, _ = neighbours()
    schema = Schema.infer(d, target="arm").model_dump()
    schema["columns"][2]["public"] = True  # site's categories declared
    fitted = clinsynth.create("dp-bayesnet", epsilon=1.0, progress=False).fit(d, Schema.model_validate(schema))
    guarantee = guarantee_of(fitted)
    assert guarantee["schema_facts"]["released"] == ["age", "bmi", "arm"]
    assert guarantee_of(clinsynth.load(fitted.save(tmp_path / "m")))["schema_facts"] == guarantee["schema_facts"]
    page = write_guarantee({"guarantee": guarantee, "model": {"name": fitted.name}}, tmp_path / "g.html").read_text()
    assert "taken from the table&#39;s structure only" in page or "taken from the table's structure only" in page
    assert "Declared public by the data steward (every fact in the schema): site." in page
    assert "age, bmi, arm" in page
