"""Tests for clinsynth.data.io: CSV/Parquet round trips, atomic writes, and clear input errors."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinsynth.data.io import atomic_path, read_table, table_format, write_bytes_atomic, write_table, write_text_atomic
from clinsynth.errors import InputError


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "n": np.array([3, -1, 0, 12], dtype=np.int64),
        "x": [0.1, np.nan, 2.5, -1e-7],
        "text": pd.Series(["a", None, "c, with comma", 'quote "q"'], dtype="str"),
        "unicode": pd.Series(["é", "Ünï", "line\nbreak", "日本"], dtype="str"),
    })


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.parquet", "t.pq", "T.CSV"])
def test_round_trip(frame, tmp_path, name):
    path = write_table(frame, tmp_path / name)
    assert path == tmp_path / name
    back = read_table(path)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert back["x"].isna().tolist() == [False, True, False, False]
    assert back["text"].isna().tolist() == [False, True, False, False]
    assert _listing(tmp_path) == [name]  # no temp file left behind


def test_round_trip_floats_exact(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000) * 10.0 ** rng.uniform(-6, 6, 5000)
    df = pd.DataFrame({"x": x})
    for name in ("f.csv", "f.parquet"):
        np.testing.assert_array_equal(read_table(write_table(df, tmp_path / name))["x"].to_numpy(), x)


def test_csv_and_tsv_separators(frame, tmp_path):
    write_table(frame, tmp_path / "t.tsv")
    header = (tmp_path / "t.tsv").read_text().splitlines()[0]
    assert header == "n\tx\ttext\tunicode"
    write_table(frame, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "n,x,text,unicode"


def test_write_creates_parent_directories_and_overwrites(frame, tmp_path):
    target = tmp_path / "a" / "b" / "out.csv"
    write_table(frame, target)
    write_table(frame.iloc[:2], target)
    assert len(read_table(target)) == 2
    assert _listing(target.parent) == ["out.csv"]


def test_table_format():
    assert table_format("x.csv") == "csv"
    assert table_format("x.TSV") == "csv"
    assert table_format("dir.v2/x.parquet") == "parquet"
    with pytest.raises(InputError, match=r"unknown table format '\.xlsx'; use \.csv or \.parquet"):
        table_format("x.xlsx")
    with pytest.raises(InputError, match=r"unknown table format '\(none\)'"):
        table_format("data")


# --- atomic writes --------------------------------------------------------------------------------

def test_failed_csv_write_leaves_target_unchanged(frame, tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    target.write_text("old,content\n1,2\n")
    before = target.read_bytes()

    def half_write(self, path, *args, **kwargs):
        Path(path).write_text("n,x,te")  # a partial file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_write)
    with pytest.raises(OSError, match="No space left"):
        write_table(frame, target)
    assert target.read_bytes() == before
    assert _listing(tmp_path) == ["out.csv"]


def test_failed_parquet_write_leaves_target_unchanged(frame, tmp_path, monkeypatch):
    target = tmp_path / "out.parquet"
    write_table(frame, target)
    before = target.read_bytes()

    def half_write(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half")
        raise KeyboardInterrupt  # even an interrupt, not only an error

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_write)
    with pytest.raises(KeyboardInterrupt):
        write_table(frame.iloc[:1], target)
    assert target.read_bytes() == before
    pd.testing.assert_frame_equal(read_table(target), frame)
    assert _listing(tmp_path) == ["out.parquet"]


def test_failed_write_without_previous_file_leaves_nothing(frame, tmp_path, monkeypatch):
    def boom(self, path, *args, **kwargs):
        Path(path).write_text("partial")
        raise RuntimeError("writer crashed")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(RuntimeError, match="writer crashed"):
        write_table(frame, tmp_path / "new.csv")
    assert _listing(tmp_path) == []


def test_atomic_path_and_text_bytes_writers(tmp_path):
    target = tmp_path / "notes.txt"
    write_text_atomic(target, "first\n")
    write_text_atomic(target, "second\n")
    assert target.read_text() == "second\n"
    write_bytes_atomic(tmp_path / "blob.bin", b"\x00\x01")
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"

    with pytest.raises(ValueError, match="stop"):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_text("never seen")
            raise ValueError("stop")
    assert target.read_text() == "second\n"
    assert _listing(tmp_path) == ["blob.bin", "notes.txt"]


def test_unknown_suffix_write_creates_nothing(frame, tmp_path):
    with pytest.raises(InputError, match=r"unknown table format '\.xlsx'"):
        write_table(frame, tmp_path / "out.xlsx")
    assert _listing(tmp_path) == []


# --- input errors ---------------------------------------------------------------------------------

def _error(path: Path) -> str:
    with pytest.raises(InputError) as excinfo:
        read_table(path)
    return str(excinfo.value)


def test_missing_file(tmp_path):
    msg = _error(tmp_path / "nope.csv")
    assert "nope.csv" in msg and "does not exist" in msg


def test_directory(tmp_path):
    (tmp_path / "data.csv").mkdir()
    msg = _error(tmp_path / "data.csv")
    assert "is a directory, not a table file" in msg


@pytest.mark.parametrize("name", ["empty.csv", "empty.parquet"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    msg = _error(tmp_path / name)
    assert name in msg and "is empty" in msg


def test_header_only_csv(tmp_path):
    (tmp_path / "h.csv").write_text("age,sex,arm\n")
    assert "has a header but no rows" in _error(tmp_path / "h.csv")


def test_header_only_parquet(tmp_path):
    pd.DataFrame({"a": pd.Series([], dtype=float)}).to_parquet(tmp_path / "h.parquet")
    assert "has a header but no rows" in _error(tmp_path / "h.parquet")


def test_no_header_row(tmp_path):
    (tmp_path / "blank.csv").write_text("\n\n1,2\n")
    assert "has no header row" in _error(tmp_path / "blank.csv")


def test_duplicate_column_names(tmp_path):
    (tmp_path / "dup.csv").write_text("id,sbp,dbp,sbp\n1,120,80,121\n")
    msg = _error(tmp_path / "dup.csv")
    assert "duplicate column names: sbp" in msg
    (tmp_path / "dup2.csv").write_text("a, b ,b\n1,2,3\n")  # names compared without padding
    assert "duplicate column names: b" in _error(tmp_path / "dup2.csv")


@pytest.mark.parametrize("content", [
    np.random.default_rng(0).bytes(4096),
    gzip.compress(b"a,b\n1,2\n" * 50),
    b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(200),
], ids=["random", "gzip", "png"])
def test_binary_file_named_csv(tmp_path, content):
    (tmp_path / "junk.csv").write_bytes(content)
    msg = _error(tmp_path / "junk.csv")
    assert "junk.csv" in msg and "not a text table" in msg


def test_binary_after_a_text_header(tmp_path):
    (tmp_path / "mixed.csv").write_bytes(b"a,b\n1,2\n" + b"x" * 20_000 + np.random.default_rng(2).bytes(4096))
    msg = _error(tmp_path / "mixed.csv")
    assert "mixed.csv" in msg and "not a text table (it holds NUL bytes" in msg


def test_ragged_csv(tmp_path):
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3,4,5,6\n")
    assert "not a readable CSV table" in _error(tmp_path / "ragged.csv")


def test_prose_is_not_a_table(tmp_path):
    text = ("These are the minutes of the steering committee meeting held on Monday\n"
            + "We discussed the budget at length and agreed on nothing in particular today\n" * 3)
    (tmp_path / "notes.csv").write_text(text)
    assert "does not look like a table" in _error(tmp_path / "notes.csv")


def test_bad_parquet(tmp_path):
    (tmp_path / "bad.parquet").write_text("a,b\n1,2\n")
    msg = _error(tmp_path / "bad.parquet")
    assert "bad.parquet" in msg and "not a readable Parquet table" in msg
    good = tmp_path / "cut.parquet"
    pd.DataFrame({"a": np.arange(1000)}).to_parquet(good)
    good.write_bytes(good.read_bytes()[:-50])  # truncated download
    assert "not a readable Parquet table" in _error(good)


def test_unknown_suffix(tmp_path):
    (tmp_path / "data.xlsx").write_bytes(b"PK\x03\x04" + os.urandom(64))
    msg = _error(tmp_path / "data.xlsx")
    assert "unknown table format '.xlsx'" in msg and "use .csv or .parquet" in msg


def test_atomic_writes_get_a_normal_file_mode(frame, tmp_path):
    """mkstemp's 0600 must not leak into the release: a shared synthetic.csv gets the umask's mode."""
    import stat

    old = os.umask(0o022)
    try:
        path = write_table(frame, tmp_path / "shared.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_european_spreadsheet_export_reads_as_its_numbers(tmp_path):
    # ';' between cells and ',' in numbers, Windows-1252 text: it was one column named
    # "age;sex;bmi;…" (then "target column 'y' is not in the table"), or "not a text table"
    text = "Größe;Gewicht;Raucher;y\n172,5;70,25;ja;1\n168,0;;nein;0\n181,25;88,5;ja;1\n"
    (tmp_path / "eu.csv").write_bytes(text.encode("cp1252"))
    df = read_table(tmp_path / "eu.csv")
    assert list(df.columns) == ["Größe", "Gewicht", "Raucher", "y"]
    assert df["Größe"].tolist() == [172.5, 168.0, 181.25] and np.isnan(df["Gewicht"].iloc[1])
    (tmp_path / "bom.csv").write_bytes(("\ufeff" + text).encode("utf-8"))  # Excel's "CSV UTF-8"
    assert read_table(tmp_path / "bom.csv").equals(df)


def test_semicolons_with_decimal_points_and_commas_inside_quotes_keep_their_meaning(tmp_path):
    (tmp_path / "points.csv").write_text("a;b\n1.5;x\n2.25;y\n")
    assert read_table(tmp_path / "points.csv")["a"].tolist() == [1.5, 2.25]
    (tmp_path / "quoted.csv").write_text('note,v\n"a;b",1\n"c;d",2\n')  # a comma file: the header says so
    df = read_table(tmp_path / "quoted.csv")
    assert list(df.columns) == ["note", "v"] and df["note"].tolist() == ["a;b", "c;d"]
