"""The ``clinsynth`` command on bad input: one clear line, non-zero exit, no traceback, no training.

Plus the happy path: schema → fit (1 epoch on a tiny table) → conditional sample to CSV/Parquet.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinsynth.cli import main, parse_conditions
from clinsynth.data.datasets import simulate_trial
from clinsynth.data.io import read_table, write_table
from clinsynth.errors import ConfigError
from clinsynth.models.acgan import ACGAN
from clinsynth.schema import Schema


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trial_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "trial.csv"
    write_table(simulate_trial(200, seed=1), path)
    return path


@pytest.fixture(scope="module")
def bundle(trial_csv, tmp_path_factory) -> Path:
    """A model fitted through the CLI: 1 epoch on 200 rows (a few seconds)."""
    out = tmp_path_factory.mktemp("model") / "bundle"
    assert main(["fit", str(trial_csv), "--target", "arm", "--model", "acgan", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture
def no_training(monkeypatch):
    """Any training attempt fails the test: errors must come before the model sees data."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("training started although the input is bad")
    monkeypatch.setattr(ACGAN, "_fit", refuse)


def _fails(capsys, args: list[str], *phrases: str, lines: int | None = 1) -> str:
    start = time.perf_counter()
    code = main([str(a) for a in args])
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert code != 0
    assert code == 1
    assert err.startswith("error: "), err
    assert "Traceback" not in out + err
    assert out == ""
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in {err!r}"
    if lines is not None:
        assert err.count("\n") == lines, err
    assert elapsed < 10
    return err


def _csv(tmp_path: Path, name: str, df: pd.DataFrame) -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


# --- input files ------------------------------------------------------------------------------

@pytest.mark.usefixtures("no_training")
class TestBadInput:
    def test_missing_file(self, capsys, tmp_path):
        path = tmp_path / "a_rather_long_directory_name_to_pass_eighty_columns" / "nope.csv"
        _fails(capsys, ["fit", path, "--target", "arm"], f"file '{path}' does not exist")

    def test_empty_file(self, capsys, tmp_path):
        (tmp_path / "empty.csv").write_bytes(b"")
        _fails(capsys, ["fit", tmp_path / "empty.csv"], "empty.csv", "is empty")

    def test_binary_junk(self, capsys, tmp_path):
        (tmp_path / "junk.csv").write_bytes(np.random.default_rng(0).bytes(2048))
        _fails(capsys, ["fit", tmp_path / "junk.csv"], "junk.csv", "not a text table")

    def test_header_only(self, capsys, tmp_path):
        (tmp_path / "h.csv").write_text("arm,age\n")
        _fails(capsys, ["fit", tmp_path / "h.csv"], "has a header but no rows")

    def test_unknown_target(self, capsys, trial_csv):
        _fails(capsys, ["fit", trial_csv, "--target", "nope"],
               "target column 'nope' is not in the table", "participant_id, arm")

    def test_one_class_target(self, capsys, tmp_path):
        df = pd.DataFrame({"outcome": ["alive"] * 40, "age": np.arange(40) + 50})
        _fails(capsys, ["fit", _csv(tmp_path, "one.csv", df), "--target", "outcome"],
               "target column 'outcome' has only one class ('alive')")

    def test_numeric_target_with_many_values(self, capsys, trial_csv):
        _fails(capsys, ["fit", trial_csv, "--target", "egfr"], "target column 'egfr'", "must be a class label")

    def test_all_missing_column(self, capsys, tmp_path):
        df = pd.DataFrame({"arm": [0, 1] * 20, "age": np.arange(40) + 50, "notes": np.nan})
        err = _fails(capsys, ["fit", _csv(tmp_path, "na.csv", df), "--target", "arm"],
                     "column 'notes' is entirely missing", lines=2)
        assert err.splitlines()[0] == "error: cannot infer a schema; fix these columns first:"

    def test_mixed_types(self, capsys, tmp_path):
        values = [f"{v:.1f}" for v in np.random.default_rng(0).normal(5.0, 1.0, 95)] + ["abc"] * 5
        df = pd.DataFrame({"arm": [0, 1] * 50, "hba1c": values})
        _fails(capsys, ["fit", _csv(tmp_path, "mixed.csv", df), "--target", "arm"],
               "column 'hba1c' is mostly numbers but has 5 text value(s) such as 'abc'", lines=2)

    def test_several_bad_columns_at_once(self, capsys, tmp_path):
        values = [str(v) for v in range(95)] + ["n/a?"] * 5
        df = pd.DataFrame({"arm": [0, 1] * 50, "lab": values, "empty": np.nan})
        _fails(capsys, ["fit", _csv(tmp_path, "two.csv", df), "--target", "arm"],
               "column 'lab'", "column 'empty'", lines=3)

    def test_duplicate_columns(self, capsys, tmp_path):
        (tmp_path / "dup.csv").write_text("arm,sbp,dbp,sbp\n0,120,80,121\n1,130,85,129\n")
        _fails(capsys, ["fit", tmp_path / "dup.csv", "--target", "arm"], "duplicate column names: sbp")

    def test_unknown_suffix(self, capsys, tmp_path):
        (tmp_path / "data.xlsx").write_bytes(b"PK\x03\x04")
        _fails(capsys, ["fit", tmp_path / "data.xlsx"], "unknown table format '.xlsx'")

    def test_schema_of_another_table(self, capsys, tmp_path, trial_csv):
        other = simulate_trial(300, seed=5)
        other = other[other["race"] != "Hispanic"].drop(columns=["egfr"]).assign(bmi=lambda d: d["bmi"].fillna(30.0))
        schema_path = tmp_path / "schema.json"
        Schema.infer(other, target="arm").save(schema_path)
        data = read_table(trial_csv)
        assert data["bmi"].isna().any() and (data["race"] == "Hispanic").any()
        err = _fails(capsys, ["fit", trial_csv, "--schema", schema_path], "the table does not match the schema",
                     lines=None)
        problems = err.splitlines()[1:]
        assert len(problems) == 3, err
        assert any("egfr" in p and "not in the schema" in p for p in problems)
        assert any("'race'" in p and "Hispanic" in p for p in problems)
        assert any("'bmi'" in p and "missing" in p for p in problems)

    def test_schema_file_missing_or_malformed(self, capsys, tmp_path, trial_csv):
        _fails(capsys, ["fit", trial_csv, "--schema", tmp_path / "none.json"], "none.json", "does not exist")
        (tmp_path / "bad.json").write_text("{oops")
        _fails(capsys, ["fit", trial_csv, "--schema", tmp_path / "bad.json"], "bad.json", "is not valid JSON")

    def test_target_disagrees_with_schema(self, capsys, tmp_path, trial_csv):
        Schema.infer(read_table(trial_csv), target="arm").save(tmp_path / "s.json")
        _fails(capsys, ["fit", trial_csv, "--schema", tmp_path / "s.json", "--target", "female"],
               "--target female disagrees with the schema's target 'arm'")

    def test_unknown_model(self, capsys, trial_csv):
        _fails(capsys, ["fit", trial_csv, "--target", "arm", "--model", "gpt"], "unknown model 'gpt'", "acgan")

    def test_bad_hyperparameters(self, capsys, trial_csv):
        _fails(capsys, ["fit", trial_csv, "--target", "arm", "--model", "acgan", "--param", "bogus=1"],
               "model 'acgan' has no hyperparameter bogus", "epochs")
        _fails(capsys, ["fit", trial_csv, "--target", "arm", "--epochs", "5"],  # auto chose a model without epochs
               "--param: model 'bayesnet' (auto's choice for tables like this one; name another model to use its "
               "hyperparameters) has no hyperparameter epochs", "parent_bins")
        _fails(capsys, ["fit", trial_csv, "--target", "arm", "--param", "seed=3"], "no hyperparameter seed", "--seed")
        _fails(capsys, ["fit", trial_csv, "--target", "arm", "--param", "epochs"], "--param 'epochs': expected NAME=VALUE")
        _fails(capsys, ["fit", trial_csv, "--target", "arm", "--model", "acgan", "--epochs", "0"], "invalid hyperparameters epochs=0")


# --- sample -----------------------------------------------------------------------------------

@pytest.mark.parametrize("condition, phrase", [
    ("arm", "--condition 'arm': expected COLUMN=VALUE[:WEIGHT]"),
    ("=0:1", "--condition '=0:1': expected COLUMN=VALUE"),
    ("arm=", "--condition 'arm=': expected COLUMN=VALUE"),
    ("arm=0:half,1:0.5", "weight 'half' is not a number"),
    ("arm=7", "condition arm='7': no such class; classes are 0, 1"),
    ("arm=0:-1,1:2", "weight must be a non-negative number"),
    ("arm=0:0,1:0", "the weights sum to zero"),
    ("female=1", "can condition only on its target 'arm', not on 'female'"),
])
def test_sample_bad_condition(capsys, bundle, tmp_path, condition, phrase):
    out = tmp_path / "s.csv"
    _fails(capsys, ["sample", bundle, "--condition", condition, "-n", "10", "--out", out], phrase)
    assert not out.exists()


def test_sample_other_errors(capsys, bundle, tmp_path):
    _fails(capsys, ["sample", bundle, "-n", "0", "--out", tmp_path / "s.csv"], "--n must be at least 1, got 0")
    _fails(capsys, ["sample", bundle, "--out", tmp_path / "s.xlsx"], "unknown table format '.xlsx'")
    _fails(capsys, ["sample", tmp_path, "--out", tmp_path / "s.csv"], "is not a clinsynth model bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_usage_error_has_no_traceback(capsys, trial_csv):
    code = main(["fit", str(trial_csv), "--no-such-option"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "No such option: --no-such-option" in err
    assert "Traceback" not in out + err


def test_parse_conditions():
    assert parse_conditions(["arm=0:0.25,1:0.75"]) == {"arm": {"0": 0.25, "1": 0.75}}
    assert parse_conditions(["arm=1"]) == {"arm": {"1": 1.0}}
    assert parse_conditions(None) is None
    with pytest.raises(ConfigError):
        parse_conditions(["arm:1"])


# --- happy path -------------------------------------------------------------------------------

def test_schema_prints_json(capsys, trial_csv):
    assert main(["schema", str(trial_csv), "--target", "arm"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    printed = Schema.from_json(out)
    assert printed == Schema.infer(read_table(trial_csv), target="arm")
    assert json.loads(out)["target"] == "arm"
    assert [g["name"] for g in json.loads(out)["longitudinal"]] == ["sbp", "dbp", "meds"]


def test_schema_to_file(capsys, trial_csv, tmp_path):
    target = tmp_path / "schema.json"
    assert main(["schema", str(trial_csv), "--out", str(target)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("wrote ") and "50 columns, 3 longitudinal group(s), target None" in err
    assert Schema.load(target).target is None


def test_models_lists_auto_then_acgan(capsys):
    assert main(["models"]) == 0
    out, _ = capsys.readouterr()
    assert out.split()[:2] == ["auto", "the"] and "acgan" in out.split()
    assert "class-conditional GAN" in out


def test_fit_then_sample(capsys, bundle, trial_csv, tmp_path):
    assert {p.name for p in bundle.iterdir()} == {".clinsynth.json", "config.json", "encoder.json", "schema.json", "weights.pt"}
    assert json.loads((bundle / "config.json").read_text())["params"]["epochs"] == 1
    schema = Schema.load(bundle / "schema.json")
    assert schema.target == "arm"

    csv_out = tmp_path / "syn.csv"
    assert main(["sample", str(bundle), "--condition", "arm=0:0.5,1:0.5", "-n", "1000", "--out", str(csv_out)]) == 0
    _, err = capsys.readouterr()
    assert "1,000 synthetic rows × 50 columns (arm=0: 50.0%, arm=1: 50.0%)" in err
    synthetic = read_table(csv_out)
    assert synthetic.shape == (1000, 50)
    assert list(synthetic.columns) == list(read_table(trial_csv).columns)
    assert synthetic["arm"].value_counts().to_dict() == {0: 500, 1: 500}
    assert synthetic["participant_id"].str.fullmatch(r"syn-\d{6}").all()
    assert not set(synthetic["participant_id"]) & set(read_table(trial_csv)["participant_id"])
    schema.validate(synthetic)

    pq_out = tmp_path / "syn.parquet"
    assert main(["sample", str(bundle), "--condition", "arm=0:0.5,1:0.5", "-n", "1000", "--out", str(pq_out)]) == 0
    from_parquet = read_table(pq_out)
    assert from_parquet.shape == (1000, 50)
    assert from_parquet["arm"].value_counts().to_dict() == {0: 500, 1: 500}
    pd.testing.assert_frame_equal(from_parquet, synthetic)  # same seed, same rows, either format

    only_ones = tmp_path / "ones.csv"
    assert main(["sample", str(bundle), "--condition", "arm=1", "-n", "37", "--out", str(only_ones)]) == 0
    assert read_table(only_ones)["arm"].tolist() == [1] * 37
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ones.csv", "syn.csv", "syn.parquet"]
