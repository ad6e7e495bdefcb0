"""Long-format visit tables in the schema: patient and time columns, per-patient vs per-visit
columns, and the one-line refusals of bad layouts (issue 21, item 1)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clinsynth.errors import ConfigError, SchemaError
from clinsynth.long_schema import limit_visits
from clinsynth.models.registry import create
from clinsynth.privacy.unit import PrivacyUnitError, check_privacy_unit
from clinsynth.schema import Schema


def visits(patients: int = 40, seed: int = 0) -> pd.DataFrame:
    """1–6 visits per patient at increasing days; arm, sex and death per patient; sbp (sometimes missing) per visit."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 7, patients)
    pid = np.repeat(np.arange(500, 500 + patients), counts)
    day = np.concatenate([np.cumsum(np.r_[0, rng.integers(60, 120, c - 1)]) for c in counts])
    per = {"arm": rng.integers(0, 2, patients), "sex": rng.choice(["F", "M"], patients),
           "death": rng.integers(0, 2, patients), "baseline_egfr": np.where(rng.random(patients) < 0.2, np.nan,
                                                                            rng.normal(70, 15, patients).round(0))}
    df = pd.DataFrame({"pid": pid, "day": day, **{k: np.repeat(v, counts) for k, v in per.items()}})
    df["sbp"] = rng.normal(135, 15, len(df)).round(0)
    df.loc[rng.random(len(df)) < 0.1, "sbp"] = np.nan
    return df


def test_levels_are_inferred_and_recorded_in_the_json():
    df = visits()
    schema = Schema.infer(df, target="death", patient="pid", time="day")
    assert schema.is_long and (schema.patient, schema.time) == ("pid", "day")
    levels = {c.name: c.level for c in schema.columns}
    assert levels == {"pid": None, "day": None, "arm": "patient", "sex": "patient", "death": "patient",
                      "baseline_egfr": "patient", "sbp": "visit"}
    assert schema.column("pid").kind == "id"
    again = Schema.from_json(schema.to_json())
    assert again == schema
    schema.validate(df)


def test_dates_are_a_time_column():
    df = visits()
    df["day"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(df["day"], unit="D")
    assert Schema.infer(df, patient="pid", time="day").column("day").kind == "datetime"


@pytest.mark.parametrize("change, phrase", [
    (lambda df: df.assign(day=["soon"] * len(df)), "time column 'day' is neither numbers"),
    (lambda df: pd.concat([df, df.iloc[[3, 4]]]), "2 rows repeat a (patient, time) pair"),
    (lambda df: df.assign(death=np.arange(len(df)) % 2), "target 'death' varies within patient"),
    (lambda df: df.drop(columns="day"), "time column 'day' is not in the table"),
])
def test_bad_layouts_are_refused_in_one_line(change, phrase):
    with pytest.raises(SchemaError) as e:
        Schema.infer(change(visits()), target="death", patient="pid", time="day")
    assert phrase in str(e.value) and "\n" not in str(e.value)


def test_a_declared_per_patient_column_that_varies_is_named_with_a_patient():
    df = visits()
    schema = Schema.infer(df, target="death", patient="pid", time="day")
    broken = df.copy()
    first = broken.index[broken["pid"].duplicated(keep=False)][0]
    broken.loc[first, "arm"] = 1 - broken.loc[first, "arm"]
    with pytest.raises(SchemaError, match=rf"'arm' is per patient in the schema but varies within 1 patient\(s\), "
                                          rf"e.g. {broken.loc[first, 'pid']}"):
        schema.validate(broken)


def test_patients_with_too_many_visits_are_refused_or_truncated():
    df = visits(60)
    most = int(df.groupby("pid").size().max())
    over = int((df.groupby("pid").size() > 3).sum())
    with pytest.raises(SchemaError, match=rf"{over} patient\(s\) have more than 3 visits \(up to {most}\).*--truncate-visits"):
        limit_visits(df, "pid", "day", max_visits=3)
    cut = limit_visits(df.sample(frac=1, random_state=0), "pid", "day", max_visits=3, truncate=True)
    assert cut.groupby("pid").size().max() == 3
    assert cut.groupby("pid")["day"].apply(lambda d: d.is_monotonic_increasing).all()
    # each patient keeps their first visits
    assert cut.groupby("pid")["day"].min().equals(df.groupby("pid")["day"].min())


def test_row_models_refuse_a_long_format_table():
    df = visits()
    schema = Schema.infer(df, target="death", patient="pid", time="day")
    with pytest.raises(ConfigError, match="bayesnet models ordinary tables, not a long-format table .*: name one of visitchain"):
        create("bayesnet").fit(df, schema)
    with pytest.raises(PrivacyUnitError, match="long-format"):
        check_privacy_unit(df, schema)


def test_schema_json_rules_for_long_format():
    data = Schema.infer(visits(), target="death", patient="pid", time="day").model_dump()
    with pytest.raises(SchemaError, match="both its patient and its time"):
        Schema.from_json(json.dumps({**data, "time": None}))
    target_per_visit = [dict(c, level="visit") if c["name"] == "death" else c for c in data["columns"]]
    with pytest.raises(SchemaError, match="target 'death' must be a per-patient column"):
        Schema.from_json(json.dumps({**data, "columns": target_per_visit}))
    no_level = [dict(c, level=None) if c["name"] == "sbp" else c for c in data["columns"]]
    with pytest.raises(SchemaError, match="column 'sbp': a long-format schema says"):
        Schema.from_json(json.dumps({**data, "columns": no_level}))


def test_the_holdout_of_a_long_table_keeps_each_patient_whole():
    from clinsynth.pipeline import split_patients_holdout

    df = visits(200)
    train, test = split_patients_holdout(df, "pid", "death", 0.25, seed=1)
    assert len(train) + len(test) == len(df)
    assert not set(train["pid"]) & set(test["pid"])
    assert len(set(test["pid"])) == 50
    per_patient = df.groupby("pid")["death"].first()
    share = lambda part: per_patient[sorted(set(part["pid"]))].mean()  # noqa: E731
    assert abs(share(train) - share(test)) < 0.03  # stratified by the per-patient target
    with pytest.raises(ConfigError, match="3 patients are too few to hold 20% out"):
        split_patients_holdout(df[df["pid"].isin([500, 501, 502])], "pid", None, 0.2)


def test_the_schema_and_the_patient_evaluation_read_a_time_column_by_one_rule():
    """One date rule (long_schema.time_kind): text the schema takes as dates the evaluation reads as
    dates, numbers as numbers, and what the one refuses the other refuses."""
    from clinsynth.evaluate.patients import _time_is_date
    from clinsynth.long_schema import check_layout_columns, time_kind

    cases = {"dates": (pd.Series(["2020-01-01", "2020-02-01T10:00", "2021-03-04"]), "date"),
             "numbers": (pd.Series([0.0, 30.0, 61.5]), "number"),
             "text numbers": (pd.Series(["0", "30", "61"]), "number"),
             "words": (pd.Series(["soon", "later", "2020-01-01"]), None),
             "true/false": (pd.Series([True, False, True]), None)}
    for name, (series, kind) in cases.items():
        assert time_kind(series) == kind, name
        frame = pd.DataFrame({"pid": [1, 1, 2], "day": series})
        if kind is None:
            with pytest.raises(SchemaError):
                check_layout_columns(frame, "pid", "day", None)
            with pytest.raises(SchemaError, match="neither a number nor a date|true/false"):
                _time_is_date(series, "synthetic", "day")
        else:
            assert _time_is_date(series, "synthetic", "day") == (kind == "date"), name
            if name == "text numbers":  # numbers, but the schema needs them as numbers: said so in one line
                with pytest.raises(SchemaError, match="numbers written as text"):
                    check_layout_columns(frame, "pid", "day", None)
            else:
                check_layout_columns(frame, "pid", "day", None)
