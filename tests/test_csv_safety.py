"""Formula injection (issue 25, point 8): text cells a spreadsheet would run are written to CSV
with a leading ``'`` by default (OWASP's rule); numbers and Parquet are never touched."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from clinsynth.cli import main
from clinsynth.data.ehr import CodeMatrix, write_long
from clinsynth.data.io import csv_safe_frame, read_table, write_table
from clinsynth.models.registry import create

HOSTILE = ["=HYPERLINK(\"http://x\")", "=cmd|' /C calc'!A0", "+1+2", "-2+3", "@SUM(A1)", "\tpad", "\rcr"]


def _cells(path: Path, sep: str = ",") -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh, delimiter=sep))


@pytest.fixture
def hostile() -> pd.DataFrame:
    n = len(HOSTILE)
    return pd.DataFrame({
        "obj": pd.Series(HOSTILE, dtype=object),
        "str": pd.Series(HOSTILE, dtype="str"),
        "cat": pd.Categorical(HOSTILE),
        "neg": np.arange(n, dtype=float) - 3.5,          # negative numbers are numbers, not text
        "int": -np.arange(n, dtype=np.int64),
        "plain": ["ok"] * n,
    })


@pytest.mark.parametrize("name, sep", [("t.csv", ","), ("t.tsv", "\t")])
def test_formula_cells_get_a_quote(hostile, tmp_path, name, sep):
    rows = _cells(write_table(hostile, tmp_path / name), sep)
    body = rows[1:]
    for j, column in enumerate(("obj", "str", "cat")):
        assert [r[j] for r in body] == ["'" + v for v in HOSTILE], column
    assert [r[3] for r in body] == [repr(float(v)) for v in np.arange(len(HOSTILE)) - 3.5]
    assert [r[4] for r in body] == [str(-i) for i in range(len(HOSTILE))]
    assert [r[5] for r in body] == ["ok"] * len(HOSTILE)


def test_off_writes_verbatim_and_parquet_is_unchanged(hostile, tmp_path):
    rows = _cells(write_table(hostile, tmp_path / "raw.csv", csv_safe=False))
    assert [r[0] for r in rows[1:]] == HOSTILE
    back = read_table(write_table(hostile, tmp_path / "t.parquet"))
    assert back["obj"].tolist() == HOSTILE and back["cat"].astype(str).tolist() == HOSTILE


def test_header_cells_and_number_like_text(tmp_path):
    df = pd.DataFrame({"=cmd|' /C calc'!A0": ["-1", "+2.5", "-1e-3", "-", "+", "1-2", "-1-2"], "age": range(7)})
    rows = _cells(write_table(df, tmp_path / "h.csv"))
    assert rows[0] == ["'=cmd|' /C calc'!A0", "age"]
    # a cell that is a plain number opens as that number (no formula runs); anything else is quoted
    assert [r[0] for r in rows[1:]] == ["-1", "+2.5", "-1e-3", "'-", "'+", "1-2", "'-1-2"]


def test_missing_values_and_mixed_objects_survive(tmp_path):
    df = pd.DataFrame({"x": pd.Series(["=1", None, 3, True, np.nan], dtype=object),
                       "c": pd.Categorical(["=a", None, "b", "=a", "b"])})
    safe = csv_safe_frame(df)
    assert safe["x"].tolist()[0] == "'=1" and safe["x"].tolist()[2:4] == [3, True]
    assert safe["x"].isna().tolist() == [False, True, False, False, True]
    assert safe["c"].astype(object).tolist()[0] == "'=a" and safe["c"].isna().tolist() == [False, True, False, False, False]
    assert df["x"].tolist()[0] == "=1"  # the caller's frame is not modified


def test_carriage_returns_inside_cells_keep_rows_whole(tmp_path):
    """pandas quoted only cells with ``\\n``: a ``\\r`` inside a cell went out bare and split its row."""
    df = pd.DataFrame({"a": ["x\ry", "p\nq", "t"], "b": [1, 2, 3]})
    for csv_safe in (True, False):
        back = read_table(write_table(df, tmp_path / "cr.csv", csv_safe=csv_safe))
        pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert (tmp_path / "cr.csv").read_bytes().startswith(b"a,b\r\n")
    write_table(df.assign(a=["x", "y", "z"]), tmp_path / "plain.csv")
    assert b"\r" not in (tmp_path / "plain.csv").read_bytes()  # tables without one keep "\n"


def test_one_column_of_spaces_keeps_its_rows(tmp_path):
    """A one-column cell of spaces alone on its line read back as a blank line: the row was lost."""
    df = pd.DataFrame({"note": pd.Series([None, " ", "x", "  "], dtype=object)})
    back = read_table(write_table(df, tmp_path / "one.csv"))
    assert back["note"].tolist()[1:] == [" ", "x", "  "] and back["note"].isna().tolist() == [True, False, False, False]
    numbers = pd.DataFrame({"x": [1.5, np.nan, -2.0]})
    pd.testing.assert_frame_equal(read_table(write_table(numbers, tmp_path / "n.csv")), numbers)


def test_colliding_category_names_fall_back(tmp_path):
    df = pd.DataFrame({"c": pd.Categorical(["=a", "'=a", "b"])})
    assert csv_safe_frame(df)["c"].astype(object).tolist() == ["'=a", "'=a", "b"]


def test_frames_without_hostile_text_are_returned_as_they_are():
    df = pd.DataFrame({"a": ["x", "y"], "b": [1.0, -2.0]})
    assert csv_safe_frame(df) is df


def test_write_long_quotes_codes(tmp_path):
    codes = CodeMatrix(sp.csr_array(np.array([[1, 0], [1, 1]])), ("=E11", "I10"), np.array(["p1", "=p2"], dtype=object), True)
    rows = _cells(write_long(codes, tmp_path / "long.csv"))
    assert rows[1:] == [["p1", "'=E11"], ["'=p2", "'=E11"], ["'=p2", "I10"]]
    rows = _cells(write_long(codes, tmp_path / "raw.csv", csv_safe=False))
    assert rows[1] == ["p1", "=E11"]


def test_quoting_is_vectorised(tmp_path):
    """20,000 rows × 4 text columns: the check costs a few ms, not a per-cell Python loop."""
    rng = np.random.default_rng(0)
    labels = np.array(["no", "yes", "=bad", "-2", "maybe"])
    df = pd.DataFrame({f"c{j}": pd.Series(labels[rng.integers(0, 5, 20_000)], dtype="str") for j in range(4)})
    csv_safe_frame(df)
    start = time.perf_counter()
    safe = csv_safe_frame(df)
    elapsed = time.perf_counter() - start
    assert (safe["c0"] == "'=bad").sum() == (df["c0"] == "=bad").sum() > 0
    assert elapsed < 0.25, elapsed


@pytest.fixture(scope="module")
def hostile_bundle(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"arm": rng.integers(0, 2, 120), "note": rng.choice(["=cmd|' /C calc'!A0", "@SUM(1)", "fine"], 120),
                       "age": rng.normal(60, 10, 120).round(1)})
    path = tmp_path_factory.mktemp("bundle") / "m"
    create("bayesnet", progress=False).fit(df).save(path)
    return path


def test_cli_sample_quotes_by_default_and_no_csv_safe_turns_it_off(hostile_bundle, tmp_path, capsys):
    assert main(["sample", str(hostile_bundle), "-n", "300", "--out", str(tmp_path / "s.csv")]) == 0
    notes = {r[1] for r in _cells(tmp_path / "s.csv")[1:]}
    assert notes == {"'=cmd|' /C calc'!A0", "'@SUM(1)", "fine"}
    assert main(["sample", str(hostile_bundle), "-n", "300", "--out", str(tmp_path / "raw.csv"), "--no-csv-safe"]) == 0
    assert {r[1] for r in _cells(tmp_path / "raw.csv")[1:]} == {"=cmd|' /C calc'!A0", "@SUM(1)", "fine"}
    assert main(["sample", str(hostile_bundle), "-n", "300", "--out", str(tmp_path / "s.parquet")]) == 0
    assert set(read_table(tmp_path / "s.parquet")["note"]) == {"=cmd|' /C calc'!A0", "@SUM(1)", "fine"}


def test_run_config_carries_the_switch(tmp_path):
    from clinsynth.pipeline import RunConfig

    assert RunConfig(target=None).csv_safe is True
    assert RunConfig(target=None, csv_safe=False).csv_safe is False


@pytest.mark.slow  # a whole release: its evaluation takes 10-50 s on 2 cores
def test_run_quotes_by_default(tmp_path, capsys):
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"arm": rng.integers(0, 2, 80), "note": rng.choice(["=cmd|' /C calc'!A0", "fine"], 80),
                       "age": rng.normal(60, 10, 80).round(1)})
    write_table(df, tmp_path / "t.parquet")
    assert main(["run", str(tmp_path / "t.parquet"), "--target", "arm", "--model", "bayesnet", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0, capsys.readouterr().err
    assert {r[1] for r in _cells(tmp_path / "r" / "synthetic.csv")[1:]} == {"'=cmd|' /C calc'!A0", "fine"}
    import json

    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["config"]["csv_safe"] is True


def test_run_passes_no_csv_safe_on(tmp_path, monkeypatch):
    import clinsynth.pipeline

    seen = {}

    def capture(df, config, *args, **kwargs):
        seen["config"] = config
        raise SystemExit(0)
    monkeypatch.setattr(clinsynth.pipeline, "run_release", capture)
    write_table(pd.DataFrame({"arm": [0, 1] * 10, "x": np.arange(20.0)}), tmp_path / "t.csv")
    with pytest.raises(SystemExit):
        main(["run", str(tmp_path / "t.csv"), "--target", "arm", "--no-csv-safe", "--out", str(tmp_path / "r")])
    assert seen["config"].csv_safe is False
