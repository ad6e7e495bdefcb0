"""Messy inputs (issue 25, point 7): each is refused before any training with a message naming the
column and the problem, or handled in a documented way that keeps the output valid."""
from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clinsynth.cli import main
from clinsynth.data.io import read_table, write_table
from clinsynth.data.transforms import TableEncoder
from clinsynth.errors import InputError, SchemaError
from clinsynth.models.acgan import ACGAN
from clinsynth.models.bayesnet import BayesNet
from clinsynth.models.registry import create
from clinsynth.schema import MAX_MAGNITUDE, Schema


@pytest.fixture
def no_training(monkeypatch):
    """Any training attempt fails the test: errors must come before the model sees data."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("training started although the input is bad")
    monkeypatch.setattr(ACGAN, "_fit", refuse)
    monkeypatch.setattr(BayesNet, "_fit", refuse)


def _fails(capsys, args: list, *phrases: str, lines: int = 1) -> str:
    """The CLI exits 1 with an ``error:`` message of ``lines`` lines holding every phrase, no traceback."""
    start = time.perf_counter()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert err.startswith("error: "), err
    assert "Traceback" not in out + err and out == ""
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in {err!r}"
    assert err.count("\n") == lines, err
    assert time.perf_counter() - start < 10
    return err


def _table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"arm": rng.integers(0, 2, n), "age": rng.normal(60, 10, n).round(1),
                         "site": rng.choice(["a", "b", "c"], n)})


# --- non-finite and extreme numbers -------------------------------------------------------------

@pytest.mark.parametrize("bad, count", [([np.inf], 1), ([-np.inf, np.inf], 2)])
def test_infinite_values_are_refused_at_inference(bad, count):
    df = _table()
    df.loc[: len(bad) - 1, "age"] = bad
    with pytest.raises(SchemaError) as e:
        Schema.infer(df, target="arm")
    (problem,) = e.value.problems
    assert problem.startswith(f"column 'age' has {count} infinite value(s)")
    assert "blank them" in problem


def test_infinite_numbers_held_as_objects_are_refused():
    """An object column of numbers with an inf became a category ``inf`` that JSON cannot hold."""
    df = _table().assign(flag=pd.Series([None, 0.0] * 29 + [np.inf, 1.0], dtype=object))
    with pytest.raises(SchemaError) as e:
        Schema.infer(df)
    assert e.value.problems == ["column 'flag' has 1 infinite value(s) (inf); blank them (a missing value) "
                                "or replace them with numbers"]
    with pytest.raises(SchemaError, match="categories cannot hold NaN or infinite numbers"):
        Schema.from_json('{"columns": [{"name": "f", "kind": "binary", "categories": [0.0, Infinity]}]}')


def test_infinite_values_are_refused_against_a_declared_schema():
    df = _table()
    schema = Schema.infer(df, target="arm")
    df.loc[3, "age"] = -np.inf
    with pytest.raises(SchemaError) as e:
        schema.validate(df)
    assert e.value.problems == ["column 'age' has 1 infinite value(s) (-inf); blank them (a missing value) "
                                "or replace them with numbers"]


def test_infinite_values_in_the_cli(capsys, tmp_path, no_training):
    df = _table()
    df.loc[5, "age"] = np.inf
    df.to_csv(tmp_path / "inf.csv", index=False)
    assert "inf" in (tmp_path / "inf.csv").read_text()
    _fails(capsys, ["fit", tmp_path / "inf.csv", "--target", "arm", "--out", tmp_path / "m"],
           "column 'age' has 1 infinite value(s) (inf)", lines=2)
    _fails(capsys, ["run", tmp_path / "inf.csv", "--target", "arm", "--out", tmp_path / "r"],
           "column 'age' has 1 infinite value(s)", lines=2)
    Schema.infer(_table(), target="arm").save(tmp_path / "s.json")
    _fails(capsys, ["fit", tmp_path / "inf.csv", "--schema", tmp_path / "s.json", "--out", tmp_path / "m"],
           "the table does not match the schema", "column 'age' has 1 infinite value(s)", lines=2)
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", [1e308, -1e200, 2 * MAX_MAGNITUDE])
def test_numbers_too_large_to_scale_are_refused(value):
    df = _table()
    df.loc[0, "age"] = value
    with pytest.raises(SchemaError) as e:
        Schema.infer(df)
    (problem,) = e.value.problems
    assert problem.startswith(f"column 'age' has 1 value(s) beyond ±{MAX_MAGNITUDE:g} (e.g. {value:g})")
    schema = Schema.infer(_table())
    with pytest.raises(SchemaError, match="beyond"):
        schema.validate(df)


def test_declared_bounds_must_be_finite_and_scalable():
    for bounds in ([0, 1e308], [-1e31, 0]):
        with pytest.raises(SchemaError, match=r"columns\.0: .*column 'x': bounds .* beyond"):
            Schema.from_json(json.dumps({"columns": [{"name": "x", "kind": "continuous", "bounds": bounds}]}))
    with pytest.raises(SchemaError, match="bounds"):
        Schema.from_json('{"columns": [{"name": "x", "kind": "continuous", "bounds": [0, Infinity]}]}')


@pytest.mark.parametrize("model, params", [("bayesnet", {}), ("acgan", {"epochs": 1})])
def test_numbers_up_to_the_limit_sample_valid_values(model, params):
    """Right at the limit every part still works: finite, in bounds, no NaN (1e308 gave 100 % NaN)."""
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"arm": rng.integers(0, 2, 200), "big": rng.normal(0, 0.3, 200) * MAX_MAGNITUDE,
                       "mix": np.r_[rng.normal(5, 1, 199), MAX_MAGNITUDE]})
    schema = Schema.infer(df, target="arm")
    synthetic = create(model, progress=False, **params).fit(df, schema).sample(500, seed=0)
    for column in ("big", "mix"):
        x = synthetic[column].to_numpy(float)
        assert np.isfinite(x).all(), column
        lo, hi = schema.column(column).bounds
        assert ((x >= lo) & (x <= hi)).all()
    schema.validate(synthetic)


def test_quantile_encoder_round_trips_extreme_spans():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"x": np.r_[rng.normal(0, 1, 99), MAX_MAGNITUDE], "y": np.r_[-MAX_MAGNITUDE, rng.normal(0, 1, 99)]})
    schema = Schema.infer(df)
    for transform in ("standard", "quantile"):
        enc = TableEncoder(schema, transform).fit(df)
        X = enc.encode(df)
        assert np.isfinite(X).all()
        out = enc.decode(X)
        assert np.isfinite(out.to_numpy(float)).all(), transform
        assert out["x"].iloc[-1] == pytest.approx(MAX_MAGNITUDE, rel=1e-6)


# --- decimals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("decimals", [-3, -1, 16, 400])
def test_decimals_outside_0_to_15_are_refused(decimals):
    text = json.dumps({"columns": [{"name": "age", "kind": "continuous", "decimals": decimals}]})
    with pytest.raises(SchemaError) as e:
        Schema.from_json(text, source="schema file 's.json'")
    (problem,) = e.value.problems
    assert f"column 'age': decimals must be a whole number from 0 to 15, got {decimals}" in problem


def test_negative_decimals_in_the_cli(capsys, tmp_path, no_training):
    df = _table()
    write_table(df, tmp_path / "t.csv")
    schema = json.loads(Schema.infer(df, target="arm").to_json())
    schema["columns"][1]["decimals"] = -3
    (tmp_path / "s.json").write_text(json.dumps(schema))
    _fails(capsys, ["fit", tmp_path / "t.csv", "--schema", tmp_path / "s.json", "--out", tmp_path / "m"],
           "s.json' is not a valid clinsynth schema", "column 'age': decimals must be a whole number from 0 to 15, got -3",
           lines=2)


def test_valid_decimals_still_round():
    spec = Schema.from_json(json.dumps({"columns": [{"name": "x", "kind": "continuous", "decimals": 15}]}))
    assert spec.column("x").decimals == 15


# --- time zones and nested columns ----------------------------------------------------------------

def test_mixed_offsets_in_a_csv_are_read_as_utc(tmp_path, capsys):
    df = _table()
    df["seen"] = [f"2020-03-{i % 28 + 1:02d}T10:00:00+0{i % 3}:00" for i in range(len(df))]
    df.to_csv(tmp_path / "tz.csv", index=False)
    assert main(["schema", str(tmp_path / "tz.csv"), "--out", str(tmp_path / "s.json")]) == 0
    spec = Schema.load(tmp_path / "s.json").column("seen")
    assert spec.kind == "datetime" and spec.dtype == "datetime64[ns, UTC]"
    assert spec.bounds == ("2020-03-01T08:00:00", "2020-03-28T10:00:00")  # wall clock in UTC
    assert main(["fit", str(tmp_path / "tz.csv"), "--model", "bayesnet", "--quiet", "--out", str(tmp_path / "m")]) == 0
    assert main(["sample", str(tmp_path / "m"), "-n", "200", "--out", str(tmp_path / "s.csv")]) == 0
    capsys.readouterr()
    seen = read_table(tmp_path / "s.csv")["seen"]
    assert seen.str.endswith("+00:00").all()
    parsed = pd.to_datetime(seen, format="ISO8601")
    assert parsed.min() >= pd.Timestamp("2020-03-01T08:00:00+00:00")
    assert parsed.max() <= pd.Timestamp("2020-03-28T10:00:00+00:00")


def test_one_offset_in_a_csv_is_kept():
    df = _table()
    df["seen"] = [f"2021-06-{i % 28 + 1:02d}T08:30:00+02:00" for i in range(len(df))]
    spec = Schema.infer(df).column("seen")
    assert spec.dtype == "datetime64[ns, UTC+02:00]" and spec.bounds[0] == "2021-06-01T08:30:00"
    out = TableEncoder(Schema.infer(df)).fit(df)
    back = out.decode(out.encode(df))["seen"]
    assert str(back.dtype) == "datetime64[ns, UTC+02:00]"
    assert (back == pd.to_datetime(df["seen"], format="ISO8601")).all()


@pytest.mark.parametrize("zone", ["Europe/Paris", "UTC", "America/New_York"])
def test_time_zone_aware_parquet_round_trips_in_its_zone(tmp_path, zone):
    df = _table(80)
    df["admitted"] = pd.date_range("2021-03-20", periods=80, freq="D", tz=zone)  # crosses a DST change
    df["stamp"] = pd.date_range("2021-10-25 01:30", periods=80, freq="37min", tz=zone)
    write_table(df, tmp_path / "tz.parquet")
    data = read_table(tmp_path / "tz.parquet")
    schema = Schema.infer(data, target="arm")
    spec = schema.column("admitted")
    assert spec.dtype.endswith(f", {zone}]") and spec.decimals == 0
    assert spec.bounds == ("2021-03-20T00:00:00", "2021-06-07T00:00:00")  # wall clock, no offset
    enc = TableEncoder(schema).fit(data)
    back = enc.decode(enc.encode(data))
    for column in ("admitted", "stamp"):
        assert str(back[column].dtype) == str(data[column].dtype)
        pd.testing.assert_series_equal(back[column], data[column], check_names=False)
    synthetic = create("bayesnet", progress=False).fit(data, schema).sample(300, seed=0)
    assert str(synthetic["admitted"].dtype) == str(data["admitted"].dtype)
    wall = synthetic["admitted"].dt.tz_localize(None)
    assert (wall == wall.dt.normalize()).all()  # whole local days, as the input
    assert wall.min() >= pd.Timestamp("2021-03-20") and wall.max() <= pd.Timestamp("2021-06-07")
    schema.validate(synthetic)
    write_table(synthetic, tmp_path / "syn.parquet")
    assert str(read_table(tmp_path / "syn.parquet")["admitted"].dtype) == str(data["admitted"].dtype)


def test_time_zone_aware_parquet_through_the_cli(capsys, tmp_path):
    df = _table()
    df["admitted"] = pd.date_range("2020-01-01", periods=len(df), freq="D", tz="Europe/Paris")
    write_table(df, tmp_path / "tz.parquet")
    assert main(["fit", str(tmp_path / "tz.parquet"), "--model", "bayesnet", "--quiet", "--out", str(tmp_path / "m")]) == 0
    assert main(["sample", str(tmp_path / "m"), "-n", "50", "--out", str(tmp_path / "s.parquet")]) == 0
    assert main(["sample", str(tmp_path / "m"), "-n", "50", "--out", str(tmp_path / "s.csv")]) == 0
    capsys.readouterr()
    assert str(read_table(tmp_path / "s.parquet")["admitted"].dtype).endswith("Europe/Paris]")
    assert read_table(tmp_path / "s.csv")["admitted"].str.endswith("+01:00").all()


@pytest.mark.slow  # a whole release: its evaluation takes 10-50 s on 2 cores
def test_release_of_zone_aware_and_mixed_offset_columns(capsys, tmp_path):
    """The whole release (the evaluation reads dates too) on a zone-aware column and mixed offsets."""
    df = _table(120)
    df["admitted"] = pd.date_range("2020-01-01", periods=len(df), freq="D", tz="Europe/Paris")
    df["seen"] = [f"2020-03-{i % 28 + 1:02d}T10:00:00+0{i % 3}:00" for i in range(len(df))]
    write_table(df, tmp_path / "tz.parquet")
    assert main(["run", str(tmp_path / "tz.parquet"), "--target", "arm", "--model", "bayesnet", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0, capsys.readouterr().err
    synthetic = read_table(tmp_path / "r" / "synthetic.csv")
    assert synthetic["admitted"].str.fullmatch(r"2020-\d\d-\d\d 00:00:00\+0[12]:00").all()  # local midnights (DST too)
    assert synthetic["seen"].str.endswith("+00:00").all()
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "admitted" in json.dumps(metrics["fidelity"])


def test_canaries_of_a_zone_aware_column():
    from clinsynth.privacy.audit import make_canaries

    df = _table(50)
    df["admitted"] = pd.date_range("2020-01-01", periods=50, freq="D", tz="Europe/Paris")
    schema = Schema.infer(df, target="arm")
    canaries = make_canaries(schema, 20, np.random.default_rng(0))
    assert str(canaries["admitted"].dtype) == str(df["admitted"].dtype)
    schema.validate(pd.concat([df, canaries], ignore_index=True))


def test_dp_model_on_a_time_zone_aware_column():
    df = _table(400, seed=4)
    df["admitted"] = pd.date_range("2019-01-01", periods=400, freq="D", tz="Europe/Paris")
    schema = Schema.infer(df, target="arm")
    model = create("dp-bayesnet", epsilon=4.0, progress=False).fit(df, schema)
    synthetic = model.sample(200, seed=0)
    assert str(synthetic["admitted"].dtype) == str(df["admitted"].dtype)
    assert synthetic["admitted"].notna().all()


def test_nested_parquet_columns_are_refused(capsys, tmp_path, no_training):
    n = 20
    table = pa.table({"arm": pa.array([0, 1] * (n // 2)), "vitals": pa.array([{"hr": i, "unit": "bpm"} for i in range(n)]),
                      "codes": pa.array([["I10", "E11"]] * n), "tags": pa.array([[("k", "v")]] * n, type=pa.map_(pa.string(), pa.string()))})
    pq.write_table(table, tmp_path / "nested.parquet")
    err = _fails(capsys, ["fit", tmp_path / "nested.parquet", "--out", tmp_path / "m"],
                 "nested.parquet", "column 'vitals' is nested (struct<hr: int64, unit: string>)",
                 "column 'codes' is nested (list<", "column 'tags' is nested (map<", "flatten")
    with pytest.raises(InputError, match="nested"):
        read_table(tmp_path / "nested.parquet")
    assert "arm" not in err


def test_nested_python_objects_are_refused_by_schema():
    df = _table(10)
    df["vitals"] = [{"hr": i} for i in range(10)]
    df["codes"] = [["I10"]] * 10
    with pytest.raises(SchemaError) as e:
        Schema.infer(df)
    assert e.value.problems == ["column 'vitals' holds nested values (dict); flatten them into plain columns",
                                "column 'codes' holds nested values (list); flatten them into plain columns"]
    schema = Schema.infer(_table(10).assign(vitals="x"))
    with pytest.raises(SchemaError, match="column 'vitals' holds nested values"):
        schema.validate(df.drop(columns="codes"))


def test_column_names_that_are_not_text():
    """An int column name became the text "0" in the schema, which then did not match its own frame."""
    df = pd.DataFrame({0: [1.5, 2.5, 3.5], "b": ["x", "y", "x"]})
    with pytest.raises(SchemaError, match=r"column names must be text, not 0 \(int\); rename them"):
        Schema.infer(df)
    with pytest.raises(SchemaError, match="column names must be text"):
        Schema.infer(df.set_axis(["0", "b"], axis=1)).validate(df)


# --- one-row tables ----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [None, "arm"])
def test_one_row_table(capsys, tmp_path, target, no_training):
    _table().iloc[:1].to_csv(tmp_path / "one.csv", index=False)
    extra = ["--target", target] if target else []
    phrase = "the table has only 1 row; clinsynth needs at least 2 records to learn from"
    _fails(capsys, ["fit", tmp_path / "one.csv", "--model", "bayesnet", "--out", tmp_path / "m", *extra], phrase)
    _fails(capsys, ["run", tmp_path / "one.csv", "--model", "bayesnet", "--out", tmp_path / "r", *extra], phrase)
    _fails(capsys, ["schema", tmp_path / "one.csv", *extra], phrase)
    with pytest.raises(SchemaError, match="only 1 row"):
        create("bayesnet", progress=False).fit(_table().iloc[:1], Schema.infer(_table()))


def test_tables_too_small_to_hold_out(capsys, tmp_path, no_training):
    _table().iloc[:3].to_csv(tmp_path / "three.csv", index=False)
    _fails(capsys, ["run", tmp_path / "three.csv", "--model", "bayesnet", "--out", tmp_path / "r"],
           "3 rows are too few to hold 20% out")
    _table().iloc[:12].to_csv(tmp_path / "twelve.csv", index=False)
    _fails(capsys, ["run", tmp_path / "twelve.csv", "--target", "site", "--model", "bayesnet", "--out", tmp_path / "r",
                    "--test-size", "0.1"], "too few to hold 10% out")
    rare = _table(50).assign(site=["rare"] + ["a", "b"] * 24 + ["a"])
    write_table(rare, tmp_path / "rare.csv")
    _fails(capsys, ["run", tmp_path / "rare.csv", "--target", "site", "--model", "bayesnet", "--out", tmp_path / "r"],
           "target 'site' class 'rare' has only 1 row: a stratified holdout needs at least 2 of each class")


def test_two_rows_can_still_be_modelled():
    df = _table().iloc[:2]
    synthetic = create("bayesnet", progress=False).fit(df, Schema.infer(df)).sample(5, seed=0)
    assert synthetic.shape == (5, 3)


# --- labels with TeX in figures -------------------------------------------------------------------------

def test_dollar_and_tex_names_render_literally():
    from clinsynth.report import figures

    names = ["$\\cmd$", "a_{b}^c", "$x", "50$ cost", "\\frac{1}{0}"]
    marginals = [{"column": name, "kind": "categorical", "labels": ["$\\alpha$", "$"], "real": [0.5, 0.5],
                  "synthetic": [0.4, 0.6]} for name in names]
    uri = figures.marginals_figure(marginals, {name: 0.1 for name in names})
    assert uri.startswith("data:image/png;base64,") and len(base64.b64decode(uri.split(",", 1)[1])) > 1000
    matrix = {"columns": names, "difference": np.eye(len(names)).tolist()}
    assert figures.association_heatmap(matrix).startswith("data:image/png")
    import matplotlib

    assert matplotlib.rcParams["text.parse_math"] is True  # the user's own settings are left alone


def test_report_figures_of_a_table_with_tex_names():
    """The report's figures from a real fidelity evaluation of a table whose names and labels are TeX."""
    from clinsynth.evaluate.fidelity import fidelity
    from clinsynth.report.html import build_figures

    rng = np.random.default_rng(5)
    real = pd.DataFrame({"arm": rng.integers(0, 2, 150), "$\\cmd$": rng.normal(0, 1, 150).round(2),
                         "cost_{$}": rng.choice(["$5", "$\\alpha$", "a^b"], 150)})
    synthetic = real.sample(frac=1.0, random_state=1).reset_index(drop=True).assign(arm=rng.integers(0, 2, 150))
    schema = Schema.infer(real, target="arm")
    result = fidelity(real, synthetic, schema).to_dict()
    drawn = build_figures({"fidelity": result, "utility": {}, "schema": json.loads(schema.to_json())})
    assert drawn["marginals"].startswith("data:image/png;base64,")
    assert drawn["associations"].startswith("data:image/png;base64,")


@pytest.mark.slow  # a whole release: its evaluation takes 10-50 s on 2 cores
def test_report_of_a_table_with_a_tex_column_name(tmp_path, capsys):
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"arm": rng.integers(0, 2, 120), "$\\cmd$": rng.normal(0, 1, 120).round(2),
                       "cost_{$}": rng.choice(["$5", "$\\alpha$", "a^b"], 120)})
    df.to_csv(tmp_path / "tex.csv", index=False)
    assert main(["run", str(tmp_path / "tex.csv"), "--target", "arm", "--model", "bayesnet", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0, capsys.readouterr().err
    html = (tmp_path / "r" / "report.html").read_text()
    assert "$\\cmd$" in html and "data:image/png;base64," in html
