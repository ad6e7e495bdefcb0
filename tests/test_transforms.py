"""Tests for clinsynth.data.transforms: lossless encode/decode, schema-valid decoding, helpers."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from clinsynth.data.datasets import simulate_trial
from clinsynth.data.fast_columns import create_dataframe_from_blocks, fast_columns
from clinsynth.data.transforms import PiecewiseLinear, TableEncoder, synthetic_ids
from clinsynth.errors import NotFittedError, SchemaError
from clinsynth.schema import Schema, last_observed_visit

TRANSFORMS = ("standard", "quantile")
VISITS = ["rz", "m01", "m02", "m03", "m06", "m09", "m12", "m15", "m18", "m21", "m24", "m27"]
MEASURES = ("sbp", "dbp", "meds")
WORDS = ["never", "former", "current", "A", "b", "", " ", "x, y", "1", "Ünïcode", "NA", "None"]
SYN_ID = re.compile(r"^syn-\d{6,}$")


# --- random tables -------------------------------------------------------------------------

def _missing_mask(draw, n: int) -> np.ndarray | None:
    """None, or a boolean mask of missing cells that leaves at least one value observed."""
    if not draw(st.booleans()):
        return None
    mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    mask[draw(st.integers(0, n - 1))] = False
    return mask


def _continuous(draw, n: int) -> pd.Series:
    decimals = draw(st.integers(0, 3))
    raw = draw(st.lists(st.floats(-1000, 1000, allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
    x = np.round(np.array(raw), decimals)
    mask = _missing_mask(draw, n)
    dtype = draw(st.sampled_from(["float64", "float32", "Float64"]))
    if mask is not None:
        x[mask] = np.nan
    return pd.Series(pd.array(x, dtype=dtype) if dtype == "Float64" else x.astype(dtype))


def _integer(draw, n: int) -> pd.Series:
    x = np.array(draw(st.lists(st.integers(-10_000, 10_000), min_size=n, max_size=n)), dtype=np.int64)
    mask = _missing_mask(draw, n)
    if mask is None:
        dtype = draw(st.sampled_from(["int64", "int32", "Int64"]))
        return pd.Series(pd.array(x, dtype=dtype) if dtype == "Int64" else x.astype(dtype))
    if draw(st.booleans()):
        return pd.Series(pd.array(np.where(mask, None, x).tolist(), dtype="Int64"))
    return pd.Series(np.where(mask, np.nan, x.astype(float)))


def _binary(draw, n: int) -> pd.Series:
    flags = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    mask = _missing_mask(draw, n)
    style = draw(st.sampled_from(["int", "bool", "text"]))
    if style == "int":
        x = flags.astype(np.int64)
        return pd.Series(x) if mask is None else pd.Series(np.where(mask, np.nan, x.astype(float)))
    if style == "bool":
        return pd.Series(flags) if mask is None else pd.Series(pd.array(np.where(mask, None, flags).tolist(), dtype="boolean"))
    text = pd.Series(np.where(flags, "yes", "no"), dtype="str")
    return text if mask is None else text.mask(mask)


def _categorical(draw, n: int) -> pd.Series:
    words = draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n))
    s = pd.Series(words, dtype="str")
    mask = _missing_mask(draw, n)
    return s if mask is None else s.mask(mask)


def _dates(draw, n: int) -> pd.Series:
    days = np.array(draw(st.lists(st.integers(0, 20_000), min_size=n, max_size=n)))
    unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
    s = pd.Series((np.datetime64("1990-01-01", "D") + days.astype("timedelta64[D]")).astype(f"datetime64[{unit}]"))
    mask = _missing_mask(draw, n)
    return s if mask is None else s.mask(mask)


MAKERS = {"cont": _continuous, "int": _integer, "bin": _binary, "cat": _categorical, "date": _dates}


def _longitudinal(draw, n: int, columns: dict[str, pd.Series]) -> None:
    """Two measures at 3-4 visits with arbitrary (intermittent and dropout) missingness."""
    k = draw(st.integers(3, 4))
    for measure in ("hr", "rr"):
        for v in range(1, k + 1):
            x = np.array(draw(st.lists(st.integers(40, 200), min_size=n, max_size=n)), dtype=float)
            mask = _missing_mask(draw, n)
            if mask is not None:
                x[mask] = np.nan
            columns[f"{measure}_v{v}"] = pd.Series(x)


@st.composite
def frames(draw) -> pd.DataFrame:
    n = draw(st.integers(2, 30))
    kinds = draw(st.lists(st.sampled_from(sorted(MAKERS)), min_size=1, max_size=6))
    columns: dict[str, pd.Series] = {}
    if draw(st.booleans()):
        columns["record_id"] = pd.Series([f"R{i:04d}" for i in range(n)], dtype="str")
    for i, kind in enumerate(kinds):
        columns[f"{kind}_{i}"] = MAKERS[kind](draw, n)
    if draw(st.booleans()):
        _longitudinal(draw, n, columns)
    return pd.DataFrame(columns)


def _non_id(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    return df[[c.name for c in schema.model_columns]]


def _assert_within_schema(out: pd.DataFrame, schema: Schema) -> None:
    """Every decoded value is one the schema allows (whole integers, bounds, categories, decimals)."""
    assert list(out.columns) == schema.names
    for spec in schema.columns:
        s = out[spec.name]
        if spec.kind == "id":
            assert s.map(lambda v: bool(SYN_ID.match(v))).all()
            assert s.is_unique
            continue
        values = s.dropna()
        if spec.kind in ("binary", "categorical"):
            assert values.isin(pd.Index(spec.categories)).all(), spec.name
            continue
        if spec.kind == "datetime":
            lo, hi = (pd.Timestamp(b) for b in spec.bounds)
            assert ((values >= lo) & (values <= hi)).all(), spec.name
            continue
        x = values.to_numpy(dtype=float)
        lo, hi = spec.bounds
        assert np.all((x >= lo) & (x <= hi)), spec.name
        if spec.kind == "integer":
            assert np.all(x == np.round(x)), spec.name
        elif spec.decimals is not None:  # exact, up to the float32 representation of a decimal
            np.testing.assert_allclose(x, np.round(x, spec.decimals), rtol=2e-7, atol=0, err_msg=spec.name)


# --- property: decode(encode(df)) == df --------------------------------------------------------

@pytest.mark.parametrize("transform", TRANSFORMS)
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(df=frames(), seed=st.integers(0, 2**31 - 1))
def test_round_trip_random_frames(transform, df, seed):
    ids = ["record_id"] if "record_id" in df.columns else []
    schema = Schema.infer(df, ids=ids)
    schema.validate(df)
    enc = TableEncoder(schema, transform).fit(df)
    X = enc.encode(df)
    assert X.shape == (len(df), enc.dim)
    assert X.dtype == np.float32
    assert np.isfinite(X).all()

    out = enc.decode(X)
    assert list(out.columns) == list(df.columns)
    pd.testing.assert_frame_equal(_non_id(out, schema), _non_id(df, schema), check_exact=True)
    if ids:
        assert out["record_id"].tolist() == [f"syn-{i:06d}" for i in range(1, len(df) + 1)]
        assert not set(out["record_id"]) & set(df["record_id"])

    # the encoder survives JSON persistence with the schema
    schema2 = Schema.from_json(schema.to_json())
    enc2 = TableEncoder.from_state_dict(schema2, json.loads(json.dumps(enc.state_dict())))
    pd.testing.assert_frame_equal(_non_id(enc2.decode(X), schema), _non_id(df, schema), check_exact=True)

    # anything a generator might emit decodes to a table the schema accepts, in the input's dtypes
    noise = np.random.default_rng(seed).normal(size=(200, enc.dim)) * 3
    synthetic = enc.decode(noise)
    _assert_within_schema(synthetic, schema)
    schema.validate(synthetic)
    assert synthetic.dtypes[[c.name for c in schema.model_columns if c.missing == "none"]].equals(
        df.dtypes[[c.name for c in schema.model_columns if c.missing == "none"]])


def _dtype_zoo() -> pd.DataFrame:
    base = [1.25, 2.5, 3.5, -2.0, 7.125, 3.0]
    return pd.DataFrame({
        "f64": base,
        "f32": np.array(base, dtype="float32"),
        "f32_na": np.array(base[:-1] + [np.nan], dtype="float32"),
        "f32_tenths": np.array([0.1, 0.2, 1.2, np.nan, 0.0, 3.3], dtype="float32"),
        "F64": pd.array(base, dtype="Float64"),
        "F64_na": pd.array(base[:-1] + [None], dtype="Float64"),
        "i64": np.array([1, 2, 3, 4, 50, 6]),
        "i32": np.array([1, 2, 3, 4, 50, 6], dtype="int32"),
        "u8": np.array([1, 2, 3, 4, 50, 6], dtype="uint8"),
        "I16_na": pd.array([1, None, 3, 4, 50, 6], dtype="Int16"),
        "whole_na": [1.0, np.nan, 3.0, 4.0, 50.0, 6.0],
        "bin_i64": [0, 1, 1, 0, 1, 0],
        "bin_f32_na": np.array([0.0, 1.0, np.nan, 0.0, 1.0, 1.0], dtype="float32"),
        "bin_Int64_na": pd.array([1, 0, None, 1, 1, 0], dtype="Int64"),
        "bool": [True, False, True, True, False, False],
        "boolean_na": pd.array([True, False, None, True, True, False], dtype="boolean"),
        "text": pd.Series(["a", "b", "d", "c", "a", "a"], dtype="str"),
        "text_na": pd.Series(["a", "b", None, "c", "a", "a"], dtype="str"),
        "string_na": pd.Series(["a", "b", None, "c", "a", "a"], dtype="string"),
        "category": pd.Categorical(["x", "y", "x", "z", "y", "x"]),
        "category_na": pd.Categorical(["0", "1", None, "1", "0", "0"]),
        "category_int": pd.Categorical([3, 1, 2, 3, 3, 1]),
        "dates_us": pd.to_datetime(["2020-01-01", "2020-02-03", None, "2021-05-06", "2019-12-31", "2020-01-01"]),
        "dates_s": pd.Series(pd.to_datetime(["2020-01-01", "2020-02-03", "2021-05-06", "2019-12-31", "2020-01-01",
                                             "2022-02-02"])).astype("datetime64[s]"),
        "dates_ns": pd.date_range("2020-01-01", periods=6, freq="D").astype("datetime64[ns]"),
    })


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_round_trip_keeps_every_dtype(transform):
    df = _dtype_zoo()
    schema = Schema.infer(df)
    assert schema.column("f32_tenths").decimals == 1  # float32 0.1 is 0.100000001: still one decimal
    enc = TableEncoder(schema, transform).fit(df)
    out = enc.decode(enc.encode(df))
    pd.testing.assert_frame_equal(out, df, check_exact=True)
    synthetic = enc.decode(np.random.default_rng(1).normal(size=(100, enc.dim)))
    _assert_within_schema(synthetic, schema)
    schema.validate(synthetic)
    assert synthetic.dtypes.equals(df.dtypes)


# --- the simulated trial -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return simulate_trial(2000, seed=0)


@pytest.fixture(scope="module")
def trial_schema(trial) -> Schema:
    return Schema.infer(trial, target="arm")


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_round_trip_trial_exact(trial, trial_schema, transform):
    enc = TableEncoder(trial_schema, transform).fit(trial)
    X = enc.encode(trial)
    assert X.shape == (2000, enc.dim)
    out = enc.decode(X)
    assert out.dtypes.drop("participant_id").equals(trial.dtypes.drop("participant_id"))
    pd.testing.assert_frame_equal(out.drop(columns="participant_id"), trial.drop(columns="participant_id"),
                                  check_exact=True)
    # one-hot activation is what the decoder reads: decoding it changes nothing
    pd.testing.assert_frame_equal(enc.decode(enc.activate(X)), out)


def test_encoder_layout_for_trial(trial_schema):
    enc = TableEncoder(trial_schema)
    assert [t.name for t in enc.timelines] == ["dropout:sbp+dbp+meds"]
    span = enc.span("dropout:sbp+dbp+meds")
    assert (span.dim, span.activation) == (len(VISITS) + 1, "softmax")
    assert enc.span("race").dim == 4
    assert enc.span("smoker").dim == 4  # 3 categories + missing
    assert enc.span("bmi").activation == "linear"
    assert enc.span("bmi:missing").dim == 2
    with pytest.raises(KeyError):
        enc.span("sbp_m27:missing")  # dropout-only missingness needs no indicator
    with pytest.raises(KeyError):
        enc.span("participant_id")
    assert enc.spans[-1].stop == enc.dim
    assert all(a.stop == b.start for a, b in zip(enc.spans, enc.spans[1:]))


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_random_input_decodes_within_schema_and_dropout_is_monotone(trial, trial_schema, transform):
    enc = TableEncoder(trial_schema, transform).fit(trial)
    X = np.random.default_rng(7).normal(size=(3000, enc.dim)).astype(np.float32)
    out = enc.decode(X)
    _assert_within_schema(out, trial_schema)
    trial_schema.validate(out)
    assert out.dtypes.equals(trial.dtypes)
    assert not set(out["participant_id"]) & set(trial["participant_id"])

    # the dropout code: the argmax of the timeline span, as split() reads it
    timeline = enc.timelines[0]
    span = enc.span(timeline.name)
    last = X[:, span.start:span.stop].argmax(axis=1)
    softmax_names = [s.name for s in enc.spans if s.activation == "softmax"]
    _, codes = enc.split(X)
    np.testing.assert_array_equal(codes[:, softmax_names.index(timeline.name)], last)
    assert set(np.unique(last)) == set(range(len(VISITS) + 1))  # every dropout state occurs

    visit = np.arange(1, len(VISITS) + 1)
    after = visit[None, :] > last[:, None]
    for m in MEASURES:
        cols = [f"{m}_{v}" for v in VISITS]
        isna = out[cols].isna().to_numpy()
        assert isna[after].all(), f"{m}: a value after dropout"
        for j, c in enumerate(cols):
            if trial_schema.column(c).missing == "none":
                assert not isna[~after[:, j], j].any(), f"{c}: missing before dropout but policy 'none'"
            else:
                assert isna[~after[:, j], j].any()  # intermittent gaps are generated too
    # re-read from the decoded table, the last attended visit is exactly the dropout code: the
    # decoder keeps the measures of that visit even where every missed-visit flag says "missing"
    seen = last_observed_visit(out, timeline.groups)
    np.testing.assert_array_equal(seen, last)


def test_decode_trial_layout_reads_softmax_by_argmax(trial, trial_schema):
    enc = TableEncoder(trial_schema).fit(trial)
    X = enc.encode(trial.iloc[:5])
    race = enc.span("race")
    X[:, race.start:race.stop] = np.array([5.0, 1.0, 0.0, -2.0])  # "Black" wins everywhere
    assert enc.decode(X)["race"].tolist() == ["Black"] * 5


# --- errors -------------------------------------------------------------------------------------

def test_encoder_errors(trial, trial_schema):
    with pytest.raises(SchemaError, match="numeric_transform must be 'standard' or 'quantile'"):
        TableEncoder(trial_schema, "minmax")
    enc = TableEncoder(trial_schema)
    with pytest.raises(NotFittedError):
        enc.encode(trial)
    with pytest.raises(NotFittedError):
        enc.decode(np.zeros((1, enc.dim)))
    enc.fit(trial)
    with pytest.raises(ValueError, match=f"expected a matrix with {enc.dim} columns"):
        enc.decode(np.zeros((2, enc.dim + 1)))
    bad = trial.iloc[:10].copy()
    bad.loc[3, "race"] = "Martian"
    with pytest.raises(SchemaError, match="column 'race' has value 'Martian'"):
        enc.encode(bad)
    bad = trial.iloc[:10].copy()
    bad.loc[3, "race"] = np.nan
    with pytest.raises(SchemaError, match="column 'race' has missing values but its missing policy is 'none'"):
        enc.encode(bad)
    state = enc.state_dict()
    del state["columns"]["bmi"]
    with pytest.raises(SchemaError, match="no state for: bmi"):
        TableEncoder.from_state_dict(trial_schema, state)


# --- PiecewiseLinear ---------------------------------------------------------------------------

def _check_piecewise(xp: np.ndarray, fp: np.ndarray, x: np.ndarray) -> None:
    f = PiecewiseLinear(xp, fp)
    probe = np.concatenate([x, xp, np.nextafter(xp, np.inf), np.nextafter(xp, -np.inf),
                            [xp[0] - 1.0, xp[-1] + 1.0, -np.inf, np.inf]])
    before = probe.copy()
    got = f(probe)
    np.testing.assert_array_equal(probe, before)  # input untouched
    want = np.interp(probe, xp, fp)
    scale = max(1.0, float(np.abs(fp).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * scale)
    assert got[len(x)] == fp[0] and got[len(x) + len(xp) - 1] == fp[-1]  # the ends exactly
    np.testing.assert_array_equal(f(xp.copy()), fp)  # every knot maps exactly onto its value


@settings(max_examples=60, deadline=None, database=None)
@given(
    start=st.floats(-1e3, 1e3),
    gaps=hnp.arrays(np.float64, st.integers(1, 300), elements=st.floats(1e-6, 100)),
    fp_seed=st.integers(0, 2**32 - 1),
    x=hnp.arrays(np.float64, st.integers(0, 200), elements=st.floats(-1.2e4, 1.2e4)),
)
def test_piecewise_linear_matches_interp_property(start, gaps, fp_seed, x):
    xp = start + np.concatenate([[0.0], np.cumsum(gaps)])
    assume(np.all(np.diff(xp) > 0))
    fp = np.random.default_rng(fp_seed).normal(size=xp.size) * 5
    _check_piecewise(xp, fp, x)


@pytest.mark.parametrize("seed", range(6))
def test_piecewise_linear_matches_interp_random(seed):
    rng = np.random.default_rng(seed)
    m = [2, 3, 50, 1000, 1500, 4096][seed]
    if seed % 2:
        xp = np.unique(np.round(rng.uniform(-5, 5, m), 2))  # clustered knots on a grid
    else:
        xp = np.unique(np.cumsum(rng.exponential(size=m) ** 3))  # very uneven spacing
    fp = np.sort(rng.normal(size=xp.size)) * 3
    f = PiecewiseLinear(xp, fp)
    edges = f.lo + np.arange(f.buckets) / f.scale  # bucket boundaries, the likeliest place to slip
    x = np.concatenate([rng.uniform(xp[0] - 1, xp[-1] + 1, 20_000), edges, np.nextafter(edges, -np.inf)])
    _check_piecewise(xp, fp, x)


# --- synthetic ids -----------------------------------------------------------------------------

def test_synthetic_ids():
    ids = synthetic_ids(3)
    assert ids.tolist() == ["syn-000001", "syn-000002", "syn-000003"]
    assert pd.api.types.is_string_dtype(ids.dtype)  # text ids, like the input's
    assert synthetic_ids(2, prefix="fake_", start=9).tolist() == ["fake_000010", "fake_000011"]
    assert synthetic_ids(0).tolist() == []
    many = synthetic_ids(1_000_001)
    assert pd.Index(many).is_unique
    assert many[0] == "syn-000001"
    assert many[999_999] == "syn-1000000"
    assert many[-1] == "syn-1000001"
    # two chunks sampled with consecutive starts never collide
    a, b = synthetic_ids(500), synthetic_ids(500, start=500)
    assert not set(a) & set(b)
    assert all(SYN_ID.match(v) for v in np.concatenate([a, b]))


def test_synthetic_ids_never_real(trial, trial_schema):
    enc = TableEncoder(trial_schema).fit(trial)
    out = enc.decode(enc.encode(trial))
    assert out["participant_id"].is_unique
    assert out["participant_id"].iloc[0] == "syn-000001"
    assert not set(out["participant_id"]) & set(trial["participant_id"])
    second = enc.decode(enc.encode(trial.iloc[:10]), id_prefix="syn-", id_start=len(trial))
    assert second["participant_id"].iloc[0] == f"syn-{len(trial) + 1:06d}"


def test_decode_in_column_units_matches_decode_of_encoded_values(trial, trial_schema):
    enc = TableEncoder(trial_schema).fit(trial)
    values, codes = enc.split(enc.encode(trial))
    column = values.copy()
    for j, name in enumerate(s.name for s in enc.spans if s.activation == "linear"):
        scale, loc = enc.codecs[name].affine()
        column[:, j] = column[:, j] * scale + loc
    a = enc.decode_parts(np.asfortranarray(values), codes)
    b = enc.decode_parts(np.asfortranarray(column), codes, scaled=False)
    pd.testing.assert_frame_equal(a.drop(columns=[c.name for c in trial_schema.columns if c.kind == "id"]),
                                  b.drop(columns=[c.name for c in trial_schema.columns if c.kind == "id"]))


@pytest.mark.parametrize("transform", ["standard", "quantile"])
def test_decode_and_decode_parts_leave_their_inputs_as_they_were(trial, trial_schema, transform):
    enc = TableEncoder(trial_schema, numeric_transform=transform).fit(trial)
    X = enc.encode(trial)
    before = X.copy()
    enc.decode(X)
    np.testing.assert_array_equal(X, before)
    values, codes = enc.split(X)
    for scaled in (True, False):
        for layout in (np.asfortranarray, np.ascontiguousarray):
            v, c = layout(values.astype(np.float64)), layout(codes)
            v_before, c_before = v.copy(), c.copy()
            enc.decode_parts(v, c, scaled=scaled)
            np.testing.assert_array_equal(v, v_before)
            np.testing.assert_array_equal(c, c_before)


def test_decode_parts_given_its_values_decodes_them_in_place_to_the_same_frame(trial):
    floats = trial[[c for c in trial.columns if trial[c].dtype == np.float64] + ["arm"]]
    enc = TableEncoder(Schema.infer(floats, target="arm")).fit(floats)
    values, codes = enc.split(enc.encode(floats))
    values = np.asfortranarray(values.astype(np.float64))
    expected = enc.decode_parts(values, codes)
    given = values.copy(order="F")
    frame = enc.decode_parts(given, codes, overwrite_values=True)
    pd.testing.assert_frame_equal(frame, expected)
    if fast_columns() is not None and create_dataframe_from_blocks is not None:  # the frame keeps the given memory
        assert np.shares_memory(frame[floats.columns[0]].to_numpy(), given)
