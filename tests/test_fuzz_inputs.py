"""Fuzzing the way in (issue 25, point 10): schema inference, the encoder's round trip and the CSV
reader over generated messy frames and raw CSV text. Each either works or raises a
``ClinsynthError`` (one line for the user); any other exception is a bug.

The default run is a modest number of examples (a few seconds); ``-m slow`` runs many more.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinsynth.data.io import read_table, write_table
from clinsynth.data.transforms import TableEncoder
from clinsynth.errors import ClinsynthError
from clinsynth.schema import Schema, parse_datetimes, wall_clock

FORMULAS = ["=1+2", "=cmd|' /C calc'!A0", "+", "-", "-1", "+2.5", "@SUM(A1)", "\tx", "\rx", "'=quoted"]
TEXT = st.one_of(st.sampled_from(FORMULAS + ["", " ", "NA", "null", "None", "nan", "1,5", 'say "hi"', "a\nb", "é", "日本",
                                              "$\\cmd$", "2020-01-01"]),
                 st.text(min_size=0, max_size=8))
EXTREME = [0.0, -0.0, 1e-308, 5e-324, -1e-300, 1e15, -1e15, 1e29, -1e30, 1e30, 1e31, 1e200, 1e308, -1e308,
           np.inf, -np.inf, np.nan]
NAMES = st.one_of(st.sampled_from(["age", "=cmd", "+x", "$\\cmd$", "a b", "日本", "id", "patient_id", "sbp_m01",
                                   "sbp_m02", "sbp_m03", "x_bl", "", " ", "1", "nan"]),
                  st.text(min_size=1, max_size=6), st.integers(0, 3))  # a frame's names need not be text


def _float_column(draw, n: int) -> pd.Series:
    base = draw(st.sampled_from(["normal", "extreme", "whole", "decimals"]))
    values = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=64), min_size=n, max_size=n))
    x = np.array(values)
    if base == "whole":
        x = np.round(x)
    elif base == "decimals":
        x = np.round(x, draw(st.integers(0, 4)))
    elif base == "extreme":
        picks = draw(st.lists(st.sampled_from(EXTREME), min_size=n, max_size=n))
        mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        x = np.where(mask, picks, x)
    nan_share = draw(st.sampled_from([0.0, 0.0, 0.0, 0.3, 0.9]))
    if nan_share:
        x[np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))) < nan_share] = np.nan
    dtype = draw(st.sampled_from(["float64", "float64", "float32", "Float64"]))
    with np.errstate(over="ignore"):
        return pd.Series(x).astype(dtype)


def _column(draw, n: int) -> pd.Series:
    kind = draw(st.sampled_from(["float"] * 4 + ["int", "nullable_int", "bool", "bool_object"] + ["text"] * 2 +
                                ["categorical", "mixed", "datetime", "datetime_tz", "datetime_text", "constant"] +
                                (["all_missing"] if draw(st.integers(0, 9)) == 0 else [])))
    if kind == "float":
        return _float_column(draw, n)
    if kind == "int":
        return pd.Series(draw(st.lists(st.integers(-2**62, 2**62) | st.integers(-3, 3), min_size=n, max_size=n)),
                         dtype="int64")
    if kind == "nullable_int":
        return pd.Series(draw(st.lists(st.none() | st.integers(-1000, 1000), min_size=n, max_size=n)), dtype="Int64")
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if kind == "bool_object":
        return pd.Series(draw(st.lists(st.none() | st.booleans(), min_size=n, max_size=n)), dtype=object)
    if kind == "text":
        pool = draw(st.lists(TEXT, min_size=1, max_size=5))
        values = draw(st.lists(st.none() | st.sampled_from(pool), min_size=n, max_size=n))
        return pd.Series(values, dtype=draw(st.sampled_from([object, "str"])))
    if kind == "categorical":
        pool = draw(st.lists(TEXT, min_size=1, max_size=4, unique=True))
        return pd.Series(pd.Categorical(draw(st.lists(st.none() | st.sampled_from(pool), min_size=n, max_size=n))))
    if kind == "mixed":
        return pd.Series(draw(st.lists(st.none() | st.integers(-5, 5) | TEXT | st.floats(allow_nan=True),
                                       min_size=n, max_size=n)), dtype=object)
    if kind in ("datetime", "datetime_tz"):
        days = draw(st.lists(st.integers(-40_000, 40_000), min_size=n, max_size=n))
        seconds = draw(st.lists(st.sampled_from([0, 0, 1, 3600, 86_399, 37_800]), min_size=n, max_size=n))
        ts = pd.Series(pd.to_datetime(np.array(days) * 86_400 + np.array(seconds), unit="s"))
        if kind == "datetime_tz":
            zone = draw(st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]))
            ts = ts.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))) & draw(st.booleans())
        return ts.mask(mask)
    if kind == "datetime_text":
        offsets = draw(st.lists(st.sampled_from(["", "Z", "+02:00", "-05:00", "+00:00"]), min_size=n, max_size=n))
        days = draw(st.lists(st.integers(1, 28), min_size=n, max_size=n))
        return pd.Series([f"2021-03-{d:02d}T08:15:00{o}" for d, o in zip(days, offsets)], dtype=object)
    if kind == "constant":
        return pd.Series([draw(st.one_of(TEXT, st.integers(), st.floats(allow_nan=False)))] * n, dtype=object)
    return pd.Series([np.nan] * n, dtype=draw(st.sampled_from([float, object])))


@st.composite
def messy_frames(draw) -> pd.DataFrame:
    n = draw(st.sampled_from([1, 2, 3, 5, 8, 13, 30, 30, 60]))
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    df = pd.DataFrame({name: _column(draw, n).reset_index(drop=True) for name in names})
    if draw(st.booleans()) and n > 1:  # duplicated rows
        df = pd.concat([df, df.iloc[: n // 2]], ignore_index=True)
    return df


def _infer(df: pd.DataFrame, target: str | None) -> Schema | None:
    """The schema, or None when inference refused the frame with a ClinsynthError."""
    try:
        return Schema.infer(df, target=target)
    except ClinsynthError as e:
        assert str(e).strip(), "an error with no message"
        return None


def _check_round_trip(df: pd.DataFrame, schema: Schema, transform: str) -> None:
    """decode(encode(df)) gives df back on the schema's domain, and stays inside the schema."""
    enc = TableEncoder(schema, transform).fit(df)
    X = enc.encode(df)
    assert X.shape == (len(df), enc.dim) and np.isfinite(X).all()
    out = enc.decode(X)
    assert list(out.columns) == schema.names and len(out) == len(df)
    schema.validate(out)
    for spec in schema.model_columns:
        real, back = df[spec.name], out[spec.name]
        missing = real.isna().to_numpy()
        assert (back.isna().to_numpy() == missing).all(), spec.name
        if spec.kind in ("binary", "categorical"):
            assert list(back[~missing].astype(object)) == list(real[~missing].astype(object)), spec.name
        elif spec.kind == "datetime":
            a, b = (wall_clock(parse_datetimes(s[~missing])).astype("datetime64[ns]").to_numpy().astype("int64") / 86_400e9
                    for s in (real, back))  # days since 1970, as encoded
            step = 1.0 if spec.decimals == 0 else 1 / 86_400  # whole days, or seconds
            # float32 codes hold ~7 digits: seconds over decades are not exact
            assert np.all(np.abs(a - b) <= step + 1e-5 * (np.abs(a).max(initial=0.0) + 1)), (spec.name, a, b)
        else:
            a = pd.to_numeric(real[~missing]).to_numpy(dtype=float)
            b = pd.to_numeric(back[~missing]).to_numpy(dtype=float)
            span = float(np.abs(a).max(initial=0.0)) + 1.0
            grid = 10.0 ** -(spec.decimals or 0) if spec.decimals is not None or spec.kind == "integer" else 0.0
            # float32 codes, a float32 column, and a quantile table's steps set the tolerance
            tolerance = grid + (1e-3 if transform == "quantile" else 1e-5) * span
            assert np.all(np.abs(a - b) <= tolerance), (spec.name, a, b)


def _check_frame(df: pd.DataFrame, target_pick: int, transform: str) -> None:
    columns = list(df.columns)
    target = columns[target_pick % len(columns)] if target_pick >= 0 else None
    schema = _infer(df, target)
    if schema is None:
        return
    schema.validate(df)  # a schema inferred from a frame accepts that frame
    assert Schema.from_json(schema.to_json()) == schema  # and survives its JSON
    if schema.model_columns and len(df) >= 2:
        _check_round_trip(df, schema, transform)


def _check_csv(df: pd.DataFrame, csv_safe: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "t.csv"
        try:
            write_table(df, path, csv_safe=csv_safe)
        except ClinsynthError:
            return
        try:
            back = read_table(path)
        except ClinsynthError:
            return
        assert back.shape == df.shape, (back.shape, df.shape)
        expected = [f"Unnamed: {i}" if str(c) == "" else "'" + str(c) if csv_safe and _formula(str(c)) else str(c)
                    for i, c in enumerate(df.columns)]  # pandas names a blank header cell
        assert [str(c) for c in back.columns] == expected
        _infer(back, None)


def _formula(text: str) -> bool:
    import re

    from clinsynth.data.io import _PLAIN_NUMBER, FORMULA_START

    return bool(re.match(FORMULA_START, text)) and not re.fullmatch(_PLAIN_NUMBER, text)


CSV_PIECES = st.sampled_from([",", ",", "\n", "\r\n", "\r", '"', '""', "a", "1", "-2.5", "1e308", "inf", "NaN", "",
                              " ", "=x", "é", "\x00", "\ufeff", "\t", ";", "2020-01-01", "2020-01-01T00:00:00+02:00"])


def _check_raw_csv(text: str, encoding: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "raw.csv"
        path.write_bytes(text.encode(encoding, errors="replace"))
        try:
            df = read_table(path)
        except ClinsynthError as e:
            assert "\n" not in str(e).strip(), str(e)
            return
        assert df.shape[0] > 0 and df.shape[1] > 0
        _infer(df, None)


# --- the default run: a few seconds ---------------------------------------------------------------------

FAST = settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@FAST
@given(df=messy_frames(), target_pick=st.integers(-1, 4), transform=st.sampled_from(["standard", "quantile"]))
def test_inference_and_round_trip(df, target_pick, transform):
    _check_frame(df, target_pick, transform)


@FAST
@given(df=messy_frames(), csv_safe=st.booleans())
def test_csv_written_reads_back(df, csv_safe):
    _check_csv(df, csv_safe)


@FAST
@given(pieces=st.lists(CSV_PIECES | st.text(max_size=4), min_size=1, max_size=40),
       encoding=st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16"]))
def test_raw_csv_text(pieces, encoding):
    _check_raw_csv("".join(pieces), encoding)


# --- the long run: -m slow -------------------------------------------------------------------------------

SLOW = settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.mark.slow
@SLOW
@given(df=messy_frames(), target_pick=st.integers(-1, 4), transform=st.sampled_from(["standard", "quantile"]))
def test_inference_and_round_trip_long(df, target_pick, transform):
    _check_frame(df, target_pick, transform)


@pytest.mark.slow
@SLOW
@given(df=messy_frames(), csv_safe=st.booleans())
def test_csv_written_reads_back_long(df, csv_safe):
    _check_csv(df, csv_safe)


@pytest.mark.slow
@SLOW
@given(pieces=st.lists(CSV_PIECES | st.text(max_size=4), min_size=1, max_size=80),
       encoding=st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16"]))
def test_raw_csv_text_long(pieces, encoding):
    _check_raw_csv("".join(pieces), encoding)
