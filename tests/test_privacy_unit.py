"""The privacy unit: a DP run never prints a per-row guarantee on rows that share a patient.

A long-format table (one row per visit) with ``--epsilon`` is refused, naming the identifier
column and how many of its values repeat, unless the user declares each row a different person
(``--privacy-unit row``); the guarantee page, the manifest and the verdict then say the unit.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from clinsynth.cli import main
from clinsynth.models.registry import create
from clinsynth.pipeline import privacy_unit_of
from clinsynth.privacy.unit import PATIENT_UNIT, PrivacyUnitError, check_privacy_unit, shared_ids
from clinsynth.schema import Schema


def visits(patients: int = 300, per_patient: int = 5, seed: int = 0) -> pd.DataFrame:
    """Long format: ``per_patient`` rows for each patient id, per-patient arm and outcome repeated."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "patient_id": np.repeat(np.arange(1000, 1000 + patients), per_patient),
        "visit": np.tile(np.arange(per_patient), patients),
        "sbp": rng.normal(130, 15, patients * per_patient).round(1),
        "arm": np.repeat(rng.integers(0, 2, patients), per_patient),
        "y": np.repeat(rng.integers(0, 2, patients), per_patient),
    })


def one_row_each(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"subject_id": np.arange(n), "is_patient": rng.integers(0, 2, n),
                         "site_id": rng.integers(0, 2, n), "age": rng.normal(60, 10, n).round(0),
                         "y": rng.integers(0, 2, n)})


def test_repeating_identifier_is_found_with_its_counts():
    df = visits(300, 5)
    found = shared_ids(df, Schema.infer(df, target="y"))
    assert [(s.column, s.ids, s.rows, s.most) for s in found] == [("patient_id", 300, 1500, 5)]


def test_one_row_per_person_has_no_shared_identifier():
    # a unique id, a binary flag named like an id and a two-valued site code are not patients
    df = one_row_each()
    schema = Schema.infer(df, target="y")
    assert shared_ids(df, schema) == []
    assert check_privacy_unit(df, schema).startswith("row")


def test_declared_id_kind_counts_even_without_an_id_like_name():
    df = visits(50, 3).rename(columns={"patient_id": "who"})
    schema = Schema.infer(df, target="y")
    assert shared_ids(df, schema) == []  # an ordinary name: not guessed
    declared = schema.model_copy(update={"columns": [c.model_copy(update={"kind": "id"}) if c.name == "who" else c
                                                     for c in schema.columns]})
    assert [s.column for s in shared_ids(df, declared)] == ["who"]


def test_dp_fit_refuses_rows_that_share_a_patient():
    df = visits(300, 5)
    schema = Schema.infer(df, target="y")
    with pytest.raises(PrivacyUnitError, match=r"'patient_id'.*300 of its values repeat.*privacy unit 'row'"):
        create("dp-bayesnet", epsilon=1.0, seed=0).fit(df, schema)


def test_declared_row_unit_fits_and_is_stated():
    df = visits(300, 5)
    schema = Schema.infer(df, target="y", privacy_unit="row")
    model = create("dp-bayesnet", epsilon=1.0, seed=0).fit(df, schema)
    assert model.ledger_.spent() <= 1.0
    assert privacy_unit_of(model) == "row (each row is a different person), as declared"
    # the declaration travels with the schema (JSON) and so with the bundle
    assert Schema.from_json(schema.to_json()).privacy_unit == "row"


def test_code_matrix_unit_is_the_patient():
    model = SimpleNamespace(schema_=SimpleNamespace(codes=object(), privacy_unit=None))
    assert privacy_unit_of(model) == PATIENT_UNIT


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "visits.csv"
    visits(300, 5).to_csv(path, index=False)
    return path


def test_cli_refuses_long_table_under_epsilon(long_csv, tmp_path, capsys):
    out = tmp_path / "rel"
    code = main(["run", str(long_csv), "--target", "y", "--epsilon", "1", "--out", str(out), "--quiet"])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("error: rows share a person: column 'patient_id'")
    assert "300 of its values repeat (1,500 rows; up to 5 rows for one value)" in err
    assert "--privacy-unit row" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written, not even a staging folder


def test_cli_runs_non_dp_long_table(long_csv, tmp_path):
    # no guarantee is printed without --epsilon, so nothing to refuse
    assert main(["run", str(long_csv), "--target", "y", "--out", str(tmp_path / "rel"), "--quiet",
                 "--evaluate", "none"]) == 0


def test_cli_declared_row_unit_runs_and_says_so(long_csv, tmp_path):
    out = tmp_path / "rel"
    assert main(["run", str(long_csv), "--target", "y", "--epsilon", "1", "--privacy-unit", "row", "--out", str(out),
                 "--quiet", "--evaluate", "none"]) == 0
    manifest = json.loads((out / "steward" / "manifest.json").read_text())
    assert manifest["privacy_unit"] == "row (each row is a different person), as declared"
    assert "Privacy unit: row (each row is a different person), as declared" in (out / "share" / "guarantee.html").read_text()


def test_cli_privacy_unit_is_for_tables(long_csv, tmp_path, capsys):
    assert main(["run", str(long_csv), "--codes", "--epsilon", "1", "--privacy-unit", "row",
                 "--out", str(tmp_path / "rel")]) == 1
    assert "the privacy unit of --codes is the patient" in capsys.readouterr().err


def test_measurements_whose_names_end_in_id_are_not_identifiers():
    # sklearn's wine table has 'malic_acid' (repeated values): it was refused as a person identifier
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"uric_acid": rng.integers(2, 9, 300), "malic_acid": rng.normal(2, 1, 300).round(1),
                       "patient_age": rng.integers(40, 90, 300), "PatientID": np.repeat(np.arange(100), 3),
                       "y": rng.integers(0, 2, 300)})
    assert [s.column for s in shared_ids(df, Schema.infer(df, target="y"))] == ["PatientID"]
