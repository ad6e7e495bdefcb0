"""The plain and the fast column paths (clinsynth.data.columns, clinsynth.data.fast_columns) give
the same arrays and frames, to the bit; the fast one is chosen where numba is installed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_same_samples import mixed_table

import clinsynth.compiled
from clinsynth.data.columns import PLAIN, Rounding, column_paths
from clinsynth.data.datasets import simulate_trial
from clinsynth.data.fast_columns import fast_columns
from clinsynth.data.transforms import TableEncoder
from clinsynth.schema import Schema

FAST = fast_columns()  # numba: the test extra


def _switch(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    monkeypatch.setattr(clinsynth.compiled, "_COMPILED", {})
    monkeypatch.setenv("CLINSYNTH_NUMBA", "1" if fast else "0")


def test_the_fast_path_is_chosen_with_numba_and_the_plain_one_without(monkeypatch):
    _switch(monkeypatch, True)
    assert fast_columns() is not None and column_paths() is fast_columns()  # numba: the test extra
    _switch(monkeypatch, False)
    assert fast_columns() is None and column_paths() is PLAIN


@pytest.mark.parametrize("labels", [("a", "b", "c"), ("a", "bb", "ccc"), ("é", "b", ""), ("10", "9", "100"), ("yes",),
                                    ("", ""), ("no", "ok"), ("abc", "def"), ("1995", "2003"), ("abcdefgh", "ijklmnop"),
                                    ("abcdefghij", "x", "yz"), ("abcdefghij", "klmnopqrst"), ("1", "10", "12345678")])
def test_text_columns_are_the_labels_with_nulls_on_both_paths(labels):
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(labels) + 1, 1000).astype(np.int16)  # len(labels): a missing slot's code
    missing = rng.random(1000) < 0.2
    dtype = pd.StringDtype("pyarrow", na_value=np.nan)
    for mask in (None, missing):
        expected = [np.nan if mask is not None and m else labels[min(i, len(labels) - 1)] for i, m in zip(index, missing)]
        for paths in (FAST, PLAIN):
            got = paths.text(index, labels, mask, dtype)
            assert got.dtype == dtype
            pd.testing.assert_extension_array_equal(got, pd.array(expected, dtype=dtype))
    for paths in (FAST, PLAIN):  # out-of-range codes are clipped into the labels; empty draws work
        assert list(paths.text(np.array([-1, 0], np.int64), labels, None, dtype)) == [labels[0]] * 2
        assert len(paths.text(np.array([], np.int16), labels, None, dtype)) == 0


@pytest.mark.parametrize("rounding", [Rounding(0.0, 50.0, 0), Rounding(-3.0, 3.0, 2), Rounding(decimals=1),
                                      Rounding(0.0, 1.0, None)])
def test_numeric_finishing_gives_the_same_numbers_on_both_paths(rounding):
    rng = np.random.default_rng(3)
    value = rng.normal(scale=30.0, size=5000)
    value[:4] = [0.5, 1.5, -2.5, 12.25]  # halves: np.round's even rounding
    missing, blank = (rng.random(5000) < 0.1).astype(np.int16), rng.random(5000) < 0.2
    out = {}
    for paths in (FAST, PLAIN):
        out[paths] = value.copy()
        paths.finish_numeric(out[paths], rounding, missing, blank)
        only_missing = value.copy()
        paths.finish_numeric(only_missing, rounding, missing, None)
        assert np.isnan(only_missing[missing != 0]).all() and not np.isnan(only_missing[missing == 0]).any()
    np.testing.assert_array_equal(out[FAST], out[PLAIN])
    gone = (missing != 0) | blank
    assert np.isnan(out[FAST][gone]).all() and not np.isnan(out[FAST][~gone]).any()
    assert (out[FAST][~gone] >= rounding.lo).all() and (out[FAST][~gone] <= rounding.hi).all()


def test_the_fast_frame_is_the_constructors_frame_on_the_float_block_without_copying():
    from clinsynth.data import fast_columns as fast
    n = 50
    block = np.random.default_rng(0).normal(size=(3, n))
    text = pd.array(list("ab") * 25, dtype="str")
    columns = {"z": block[2], "t": text, "x": block[0], "y": block[1]}
    frame = FAST.frame(columns, n, block, pd.Index(list(columns)))
    pd.testing.assert_frame_equal(frame, PLAIN.frame(columns, n, block, None))
    assert list(frame.columns) == ["z", "t", "x", "y"]
    if fast.create_dataframe_from_blocks is not None:  # pandas >= 3: the block itself, no copy
        assert np.shares_memory(frame["x"].to_numpy(), block)
    # layouts the fast path cannot take go through the constructor, with the same result
    for other in ({"x": block[0], "y": block[1]},                      # a block row no column holds
                  {"x": block[0], "y": block[0].copy(), "z": block[2]},  # a column that is no row of it
                  {"x": block[0], "y": block[0], "z": block[2]},         # one row in two columns
                  {"x": block[0], "y": block[1], "z": block[2], "o": np.array(["a"] * n, dtype=object)}):
        pd.testing.assert_frame_equal(FAST.frame(other, n, block, None), pd.DataFrame(other))


@pytest.mark.parametrize("table, target", [(mixed_table(), "group"), (simulate_trial(n=400, seed=2), "arm")])
@pytest.mark.parametrize("transform", ["standard", "quantile"])
def test_whole_decodes_are_the_same_frames_on_both_paths(table, target, transform, monkeypatch):
    enc = TableEncoder(Schema.infer(table, target=target), numeric_transform=transform).fit(table)
    X = enc.encode(table)
    values, codes = enc.split(X)
    frames = {}
    for fast in (True, False):
        _switch(monkeypatch, fast)
        frames[fast] = (enc.decode(X), enc.decode_parts(np.asfortranarray(values), np.asfortranarray(codes)))
    for a, b in zip(frames[True], frames[False]):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert a.dtypes.equals(b.dtypes)
