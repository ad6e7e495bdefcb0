"""Tests for clinsynth.schema: inference, validation, longitudinal detection and JSON persistence."""
from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from clinsynth.data.datasets import simulate_trial
from clinsynth.errors import SchemaError
from clinsynth.schema import FORMAT_VERSION, ColumnSpec, LongitudinalGroup, Schema, detect_longitudinal, visit_order

VISITS = ["rz", "m01", "m02", "m03", "m06", "m09", "m12", "m15", "m18", "m21", "m24", "m27"]
MEASURES = ("sbp", "dbp", "meds")


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return simulate_trial(500, seed=0)


@pytest.fixture(scope="module")
def schema(trial: pd.DataFrame) -> Schema:
    return Schema.infer(trial, target="arm")


def _problems(excinfo: pytest.ExceptionInfo[SchemaError]) -> list[str]:
    return excinfo.value.problems


# --- inference on the simulated trial ------------------------------------------------------

def test_infer_kinds(trial, schema):
    assert schema.names == list(trial.columns)
    assert schema.target == "arm"

    pid = schema.column("participant_id")
    assert pid.kind == "id"
    assert "participant_id" not in [c.name for c in schema.model_columns]

    arm = schema.column("arm")
    assert arm.kind == "binary"
    assert arm.categories == [0, 1]
    assert arm.missing == "none"

    race = schema.column("race")
    assert race.kind == "categorical"
    assert race.categories == sorted(trial["race"].unique())
    assert race.missing == "none"

    bmi = schema.column("bmi")
    assert trial["bmi"].isna().any()
    assert bmi.kind == "continuous"
    assert bmi.missing == "indicator"
    assert bmi.decimals == 1
    assert bmi.bounds == (trial["bmi"].min(), trial["bmi"].max())
    assert bmi.public is False

    age = schema.column("age")
    assert age.kind == "integer"
    assert age.missing == "none"
    assert age.decimals == 0
    assert age.bounds == (float(trial["age"].min()), float(trial["age"].max()))
    assert age.dtype == "int64"

    smoker = schema.column("smoker")
    assert smoker.kind == "categorical"
    assert smoker.missing == "indicator"
    assert smoker.categories == ["current", "former", "never"]

    for name in ("female", "ckd", "cvd_history", "statin"):
        assert schema.column(name).kind == "binary", name
    # whole-number float labs with NaN are integers, creatinine keeps 2 decimals
    assert schema.column("glucose").kind == "integer"
    assert schema.column("creatinine").kind == "continuous"
    assert schema.column("creatinine").decimals == 2


def test_infer_longitudinal_groups(schema):
    assert [g.name for g in schema.longitudinal] == list(MEASURES)
    for g in schema.longitudinal:
        assert g.visits == VISITS
        assert g.columns == [f"{g.name}_{v}" for v in VISITS]
        assert g.dropout is True
        for c in g.columns:
            assert schema.column(c).kind == "integer"
    timelines = schema.timelines()
    assert len(timelines) == 1
    visits, groups = timelines[0]
    assert list(visits) == VISITS
    assert [g.name for g in groups] == list(MEASURES)


def test_longitudinal_missing_policy_separates_dropout_from_missed_visits(trial, schema):
    cols = {m: [f"{m}_{v}" for v in VISITS] for m in MEASURES}
    observed = np.zeros((len(trial), len(VISITS)), dtype=bool)
    for m in MEASURES:
        observed |= trial[cols[m]].notna().to_numpy()
    last = len(VISITS) - 1 - np.argmax(observed[:, ::-1], axis=1)  # 0-based last attended visit
    before_last = np.arange(len(VISITS))[None, :] <= last[:, None]
    n_indicator = n_none_with_nan = 0
    for m in MEASURES:
        isna = trial[cols[m]].isna().to_numpy()
        intermittent = isna & before_last
        for j, c in enumerate(cols[m]):
            expected = "indicator" if intermittent[:, j].any() else "none"
            assert schema.column(c).missing == expected, c
            n_indicator += expected == "indicator"
            n_none_with_nan += expected == "none" and bool(isna[:, j].any())
    # both cases really occur in this table: missed visits, and columns missing only by dropout
    assert n_indicator >= 20
    assert n_none_with_nan >= 3
    for m in MEASURES:
        assert trial[f"{m}_m27"].isna().sum() > 10
        assert schema.column(f"{m}_m27").missing == "none"
        assert schema.column(f"{m}_rz").missing == "none"
        assert schema.column(f"{m}_m06").missing == "indicator"


def test_validate_passes_on_the_data(trial, schema):
    schema.validate(trial)
    schema.validate(trial.iloc[:50])


def test_validate_reports_every_problem_at_once(trial, schema):
    bad = trial.drop(columns=["egfr"])
    bad["race"] = bad["race"].where(bad.index != 3, "Martian")
    bad["age"] = bad["age"].astype(object)
    bad.loc[5, "age"] = "abc"
    bad["bmi"] = bad["bmi"].fillna(25.0)  # fewer missing values than allowed is fine
    with pytest.raises(SchemaError) as excinfo:
        schema.validate(bad)
    msg = str(excinfo.value)
    for name in ("egfr", "race", "age"):
        assert f"{name}" in msg
    assert "Martian" in msg
    assert "'abc'" in msg
    assert "not in the table" in msg
    # exactly these three problems: the absent column must not make dropout gaps look like errors
    problems = _problems(excinfo)
    assert len(problems) == 3, problems
    assert any("egfr" in p for p in problems)
    assert any("'race'" in p and "Martian" in p for p in problems)
    assert any("'age'" in p for p in problems)


def test_validate_absent_longitudinal_column_does_not_flag_dropout_gaps(trial, schema):
    with pytest.raises(SchemaError) as excinfo:
        schema.validate(trial.drop(columns=["sbp_m03"]))
    assert _problems(excinfo) == ["columns in the schema but not in the table: sbp_m03"]


def test_validate_extra_column_and_missing_policy(trial, schema):
    bad = trial.copy()
    bad["extra_col"] = 1.0
    bad.loc[[1, 2], "egfr"] = np.nan  # egfr was never missing: policy 'none'
    bad.loc[0, "sbp_m01"] = np.nan  # allowed: sbp_m01 has an indicator
    with pytest.raises(SchemaError) as excinfo:
        schema.validate(bad)
    problems = _problems(excinfo)
    assert len(problems) == 2, problems
    assert any("extra_col" in p and "not in the schema" in p for p in problems)
    assert any("'egfr'" in p and "2 missing" in p for p in problems)


def test_validate_missing_before_dropout_in_a_none_column(trial, schema):
    # sbp_rz is 'none': blanking it for a participant who attended later visits is a problem
    row = int(np.flatnonzero(trial["sbp_m01"].notna().to_numpy())[0])
    bad = trial.copy()
    bad.loc[row, "sbp_rz"] = np.nan
    with pytest.raises(SchemaError) as excinfo:
        schema.validate(bad)
    assert len(_problems(excinfo)) == 1
    assert "'sbp_rz' has 1 missing value(s) before the participant's last visit" in str(excinfo.value)


def test_validate_integer_fractions_and_one_class_target(trial, schema):
    bad = trial.copy()
    bad["age"] = bad["age"].astype(float)
    bad.loc[0, "age"] = 70.5
    bad["arm"] = 1
    with pytest.raises(SchemaError) as excinfo:
        schema.validate(bad)
    msg = str(excinfo.value)
    assert "'age' is integer but holds fractions such as 70.5" in msg
    assert "target 'arm' has 1 class(es)" in msg


def test_infer_reports_every_unreadable_column():
    rng = np.random.default_rng(0)
    mixed = [f"{v:.1f}" for v in rng.normal(100, 10, 95)] + ["abc"] * 5
    df = pd.DataFrame({"x": rng.normal(size=100), "empty": np.nan, "lab": mixed})
    with pytest.raises(SchemaError) as excinfo:
        Schema.infer(df)
    problems = _problems(excinfo)
    assert len(problems) == 2
    assert any("'empty'" in p and "entirely missing" in p for p in problems)
    assert any("'lab'" in p and "'abc'" in p and "5 text value(s)" in p for p in problems)


def test_infer_target_errors(trial):
    with pytest.raises(SchemaError, match="target column 'nope' is not in the table"):
        Schema.infer(trial, target="nope")
    with pytest.raises(SchemaError, match="target column 'Arm ' is not in the table; did you mean 'arm'\\?"):
        Schema.infer(trial, target="Arm ")
    with pytest.raises(SchemaError, match="target column 'deaht' .* did you mean 'death'"):
        Schema.infer(trial.rename(columns={"arm": "death"}), target="deaht")
    with pytest.raises(SchemaError, match="has only one class"):
        Schema.infer(trial.assign(arm=1), target="arm")
    with pytest.raises(SchemaError, match="target column 'egfr' has .* distinct numeric values"):
        Schema.infer(trial, target="egfr")


def test_infer_duplicate_columns_and_empty_frames():
    df = pd.DataFrame([[1, 2, 3]], columns=["a", "b", "a"])
    with pytest.raises(SchemaError, match="duplicate column names: a"):
        Schema.infer(df)
    with pytest.raises(SchemaError, match="no rows"):
        Schema.infer(pd.DataFrame({"a": pd.Series([], dtype=float)}))
    with pytest.raises(SchemaError, match="no columns"):
        Schema.infer(pd.DataFrame(index=range(3)))


# --- JSON ----------------------------------------------------------------------------------

def test_json_round_trip(schema, tmp_path):
    again = Schema.from_json(schema.to_json())
    assert again == schema
    assert again.column("bmi").bounds == schema.column("bmi").bounds
    assert again.column("arm").categories == [0, 1]
    assert isinstance(again.column("arm").categories[0], int)

    path = tmp_path / "sub" / "schema.json"
    schema.save(path)
    assert path.read_text().endswith("\n")
    assert json.loads(path.read_text())["format_version"] == FORMAT_VERSION
    assert Schema.load(path) == schema
    assert [p.name for p in path.parent.iterdir()] == ["schema.json"]  # no temp file left


def test_json_round_trip_of_edited_schema(schema):
    edited = schema.model_copy(deep=True)
    edited.columns[edited.names.index("sbp_rz")] = edited.column("sbp_rz").model_copy(
        update={"bounds": (60.0, 260.0), "public": True, "sensitive": True})
    again = Schema.from_json(edited.to_json())
    assert again == edited
    assert again != schema
    assert again.column("sbp_rz").public is True


def test_from_json_malformed(schema):
    with pytest.raises(SchemaError, match="is not valid JSON"):
        Schema.from_json("{not json")
    with pytest.raises(SchemaError, match="my.json is not valid JSON"):
        Schema.from_json(schema.to_json()[:-10], source="my.json")


def test_from_json_wrong_format_version(schema):
    data = json.loads(schema.to_json())
    data["format_version"] = FORMAT_VERSION + 98
    with pytest.raises(SchemaError) as excinfo:
        Schema.from_json(json.dumps(data))
    msg = str(excinfo.value)
    assert "not a valid clinsynth schema" in msg
    assert f"format_version {FORMAT_VERSION + 98} is not supported" in msg


def test_from_json_invalid_fields_are_named(schema):
    data = json.loads(schema.to_json())
    data["columns"][1]["colour"] = "red"
    data["columns"][2]["kind"] = "quantity"
    with pytest.raises(SchemaError) as excinfo:
        Schema.from_json(json.dumps(data))
    problems = _problems(excinfo)
    assert any("columns.1.colour" in p for p in problems), problems
    assert any("columns.2.kind" in p for p in problems), problems

    data = json.loads(schema.to_json())
    data["target"] = "nope"
    with pytest.raises(SchemaError, match="target 'nope' is not a column"):
        Schema.from_json(json.dumps(data))

    data = json.loads(schema.to_json())
    data["longitudinal"][0]["columns"][0] = "sbp_m99"
    with pytest.raises(SchemaError, match="unknown column 'sbp_m99'"):
        Schema.from_json(json.dumps(data))


def test_load_missing_file(tmp_path):
    with pytest.raises(SchemaError, match="does not exist"):
        Schema.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(SchemaError, match="bad.json.* is not valid JSON"):
        Schema.load(bad)


def test_column_spec_checks():
    with pytest.raises(ValueError, match="needs exactly 2 categories"):
        ColumnSpec(name="b", kind="binary", categories=[0, 1, 2])
    with pytest.raises(ValueError, match="bounds low 5.0 is above high 1.0"):
        ColumnSpec(name="x", kind="continuous", bounds=(5.0, 1.0))
    with pytest.raises(ValueError, match="needs a non-empty 'categories'"):
        ColumnSpec(name="c", kind="categorical")


# --- other kinds ---------------------------------------------------------------------------

def test_infer_datetime_columns():
    dates = pd.date_range("2020-01-01", periods=30, freq="7D")
    stamps = pd.date_range("2021-03-01 08:30", periods=30, freq="95min")
    df = pd.DataFrame({
        "iso": [d.strftime("%Y-%m-%d") for d in dates],
        "dt64": dates,
        "stamp": stamps,
        "iso_with_gap": [None if i == 4 else d.strftime("%Y-%m-%d") for i, d in enumerate(dates)],
    })
    schema = Schema.infer(df)
    for name in df.columns:
        assert schema.column(name).kind == "datetime", name
    iso = schema.column("iso")
    assert pd.Timestamp(iso.bounds[0]) == dates[0]
    assert pd.Timestamp(iso.bounds[1]) == dates[-1]
    assert iso.decimals == 0  # whole days
    assert iso.missing == "none"
    assert schema.column("stamp").decimals is None
    assert pd.Timestamp(schema.column("stamp").bounds[1]) == stamps[-1]
    assert schema.column("iso_with_gap").missing == "indicator"
    assert "datetime" in schema.column("dt64").dtype
    schema.validate(df)
    assert Schema.from_json(schema.to_json()) == schema

    bad = df.copy()
    bad.loc[2, "iso"] = "not a date"
    with pytest.raises(SchemaError, match="'iso' is datetime but 1 value"):
        schema.validate(bad)


def test_infer_bool_columns():
    df = pd.DataFrame({
        "flag": [True, False, True, True] * 5,
        "flag_na": pd.Series([True, False, None, True] * 5, dtype=object),
    })
    schema = Schema.infer(df)
    for name in df.columns:
        spec = schema.column(name)
        assert spec.kind == "binary", name
        assert spec.categories == [False, True]
    assert schema.column("flag").missing == "none"
    assert schema.column("flag_na").missing == "indicator"
    schema.validate(df)


def test_numeric_two_values_is_binary_and_ids_by_name():
    df = pd.DataFrame({
        "subject_id": np.arange(100, 200),
        "grade": [1.5, 2.5] * 50,
        "count": np.arange(100) % 7,
    })
    schema = Schema.infer(df)
    assert schema.column("subject_id").kind == "id"
    assert schema.column("grade").kind == "binary"
    assert schema.column("grade").categories == [1.5, 2.5]
    assert schema.column("count").kind == "integer"
    assert Schema.infer(df, ids=["count"]).column("count").kind == "id"


# --- visit ordering ------------------------------------------------------------------------

def test_visit_order():
    assert visit_order("rz") == visit_order("bl") == visit_order("baseline") == -1.0
    assert visit_order("m01") == 1.0
    assert visit_order("m27") == 27.0
    assert visit_order("visit3") == 3.0
    assert visit_order("whatever") == float("inf")
    shuffled = VISITS[:]
    random.Random(3).shuffle(shuffled)
    assert sorted(shuffled, key=visit_order) == VISITS
    # numeric, not lexical: m6 < m12 although "m12" < "m6" as text
    assert sorted(["m12", "m6", "m9", "bl"], key=visit_order) == ["bl", "m6", "m9", "m12"]


def test_longitudinal_detection_ignores_column_order(trial):
    cols = list(trial.columns)
    shuffled = cols[:14] + random.Random(1).sample(cols[14:], len(cols) - 14)
    schema = Schema.infer(trial[shuffled], target="arm")
    assert sorted(g.name for g in schema.longitudinal) == sorted(MEASURES)
    for g in schema.longitudinal:
        assert g.visits == VISITS
        assert g.columns == [f"{g.name}_{v}" for v in VISITS]


def test_detect_longitudinal_needs_three_numeric_visits():
    specs = [ColumnSpec(name=n, kind="continuous") for n in ("hb_v1", "hb_v2", "crp_m1", "crp_m2", "crp_m3")]
    specs.append(ColumnSpec(name="grp_v1", kind="categorical", categories=["a"]))
    groups = detect_longitudinal([s.name for s in specs], specs)
    assert [(g.name, g.visits) for g in groups] == [("crp", ["m1", "m2", "m3"])]
    with pytest.raises(ValueError, match="2 columns but 3 visits"):
        LongitudinalGroup(name="x", columns=["a", "b"], visits=["1", "2", "3"])


# --- public bounds -------------------------------------------------------------------------

def _with_spec(schema: Schema, name: str, **update) -> Schema:
    edited = schema.model_copy(deep=True)
    edited.columns[edited.names.index(name)] = edited.column(name).model_copy(update=update)
    return Schema.model_validate(edited.model_dump())


def test_public_bounds_violation_is_reported(trial, schema):
    lo, hi = 130.0, 170.0
    n_out = int(((trial["sbp_rz"] < lo) | (trial["sbp_rz"] > hi)).sum())
    assert n_out > 0
    declared = _with_spec(schema, "sbp_rz", bounds=(lo, hi), public=True)
    with pytest.raises(SchemaError) as excinfo:
        declared.validate(trial)
    assert _problems(excinfo) == [f"column 'sbp_rz' has {n_out} value(s) outside its declared bounds [{lo}, {hi}]"]

    # the same bounds, not declared public, are only a record of the data: no check
    _with_spec(schema, "sbp_rz", bounds=(lo, hi), public=False).validate(trial)
    # and inferred bounds never reject new data outside them
    wider = trial.copy()
    wider.loc[0, "age"] = int(trial["age"].max()) + 5
    schema.validate(wider)


def test_a_blank_target_is_refused_in_one_line_naming_the_count():
    # it reached scikit-learn as "Input contains NaN" (a traceback) with and without ε
    df = pd.DataFrame({"x": np.arange(50.0), "y": ["a", "b"] * 25})
    df.loc[[3, 7, 9], "y"] = None
    with pytest.raises(SchemaError, match=r"target 'y' is blank in 3 of 50 rows"):
        Schema.infer(df, target="y").validate(df)
    df.loc[[3, 7, 9], "y"] = "unknown"  # the advice: a class of its own
    Schema.infer(df, target="y").validate(df)
