"""Tests for clinsynth.data.ehr (sparse patient × code matrices, long format) and the EHR simulator."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from clinsynth.data.ehr import (
    CodeMatrix,
    from_dense_rows,
    read_long,
    synthetic_ids,
    to_long,
    write_long,
)
from clinsynth.data.ehr_simulator import _bernoulli_runs, simulate_ehr
from clinsynth.errors import ConfigError, InputError


@pytest.fixture
def long_counts() -> pd.DataFrame:
    """Text ids and codes that pandas would mangle as numbers ('007', '038', '250.10')."""
    return pd.DataFrame({
        "patient_id": ["007", "007", "007", "P2", "P2", "P3", "007"],
        "code": ["250.10", "038", "V58.61", "250.10", "401.9", "038", "250.10"],
        "count": [2, 1, 5, 1, 3, 7, 4],
    })


@pytest.fixture(scope="module")
def sim() -> tuple[CodeMatrix, pd.DataFrame]:
    return simulate_ehr(20_000, 1_000, seed=3)


def _dense(cm: CodeMatrix) -> np.ndarray:
    return cm.matrix.toarray()


# --- long → CodeMatrix → long ---------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_file(long_counts, tmp_path, suffix, binary):
    cm = read_long(long_counts, count_col="count", binary=binary)
    assert cm.vocabulary == ("038", "250.10", "401.9", "V58.61")
    assert list(cm.patient_ids) == ["007", "P2", "P3"]
    expected = np.array([[1, 6, 0, 5], [0, 1, 3, 0], [7, 0, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(_dense(cm), np.minimum(expected, 1) if binary else expected)

    path = write_long(cm, tmp_path / f"codes.{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"codes.{suffix}"]
    back = read_long(path, count_col=None if binary else "count")
    assert back.binary is binary
    assert back.vocabulary == cm.vocabulary
    assert list(back.patient_ids) == list(cm.patient_ids)
    assert (back.matrix != cm.matrix).nnz == 0
    pd.testing.assert_frame_equal(to_long(back), to_long(cm), check_exact=True)
    long = to_long(cm)
    assert list(long.columns) == (["patient_id", "code"] if binary else ["patient_id", "code", "count"])
    if not binary:
        assert long["count"].dtype == np.int64 and long["count"].sum() == long_counts["count"].sum()


def test_round_trip_simulated_counts(tmp_path):
    cm, _ = simulate_ehr(3_000, 200, seed=1, binary=False)
    cm = cm.subset(cm.codes_per_patient() > 0)  # long format cannot hold patients without codes
    back = read_long(write_long(cm, tmp_path / "sim.parquet"), count_col="count", vocabulary=list(cm.vocabulary))
    assert back.vocabulary == cm.vocabulary
    np.testing.assert_array_equal(back.patient_ids, cm.patient_ids)
    assert (back.matrix != cm.matrix).nnz == 0


def test_write_long_refuses_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match="unknown table format '.json'"):
        write_long(_small(), tmp_path / "codes.json")
    assert list(tmp_path.iterdir()) == []


def test_integer_ids_kept_in_parquet_and_text_in_csv(tmp_path):
    df = pd.DataFrame({"patient_id": [10, 10, 2], "code": ["A", "B", "A"]})
    cm = read_long(df)
    assert cm.patient_ids.dtype == np.int64 and list(cm.patient_ids) == [10, 2]
    assert list(read_long(write_long(cm, tmp_path / "c.parquet")).patient_ids) == [10, 2]
    assert list(read_long(write_long(cm, tmp_path / "c.csv")).patient_ids) == ["10", "2"]


def test_csv_codes_read_as_text(tmp_path):
    (tmp_path / "c.csv").write_text("patient_id,code\n1,038\n1,250.10\n2,4019\n")
    cm = read_long(tmp_path / "c.csv")
    assert cm.vocabulary == ("038", "250.10", "4019")


def test_numeric_code_column_written_without_float_suffix():
    cm = read_long(pd.DataFrame({"patient_id": ["a", "b", "c"], "code": [250.0, 401.1, np.float64(38)]}))
    assert cm.vocabulary == ("250", "38", "401.1")


def test_whitespace_stripped_and_duplicates_summed():
    df = pd.DataFrame({"patient_id": ["P1", " P1 ", "P2"], "code": [" 250.1", "250.1 ", "250.1"]})
    counts = read_long(df, binary=False)
    assert counts.vocabulary == ("250.1",) and list(counts.patient_ids) == ["P1", "P2"]
    np.testing.assert_array_equal(_dense(counts), [[2], [1]])
    np.testing.assert_array_equal(_dense(read_long(df)), [[1], [1]])  # no count column: binary


def test_binary_default_follows_count_column(long_counts):
    assert read_long(long_counts).binary is True
    assert read_long(long_counts, count_col="count").binary is False
    assert read_long(long_counts, count_col="count", binary=True).matrix.data.max() == 1


def test_zero_counts_are_absent_but_patient_kept():
    df = pd.DataFrame({"patient_id": ["a", "a", "b"], "code": ["X", "Y", "Y"], "count": [1, 0, 0]})
    cm = read_long(df, count_col="count")
    assert list(cm.patient_ids) == ["a", "b"] and cm.vocabulary == ("X", "Y")
    np.testing.assert_array_equal(_dense(cm), [[1, 0], [0, 0]])
    np.testing.assert_allclose(cm.prevalence(), [0.5, 0.0])
    assert list(to_long(cm)["patient_id"]) == ["a"]  # long format drops patients without codes


# --- truncation, min_count, vocabulary ---------------------------------------------------------

def test_truncation_merges_codes():
    df = pd.DataFrame({"patient_id": ["a", "a", "b", "b"], "code": ["250.01", "250.02", "250.1", "40.19"],
                       "count": [2, 3, 1, 4]})
    cm = read_long(df, count_col="count", truncate=3)
    assert cm.vocabulary == ("250", "401")
    np.testing.assert_array_equal(_dense(cm), [[5, 0], [1, 4]])
    assert read_long(df, truncate=3).matrix.data.max() == 1
    assert read_long(df, truncate=4).vocabulary == ("2500", "2501", "4019")


def test_min_count_drops_rare_codes():
    df = pd.DataFrame({"patient_id": ["a", "b", "c", "a", "a", "b", "c", "c"],
                       "code": ["X", "X", "X", "Y", "Y", "Z", "W", "W"]})
    assert read_long(df, min_count=1).vocabulary == ("W", "X", "Y", "Z")
    cm = read_long(df, min_count=2)  # W and Y are twice in one patient each: one patient
    assert cm.vocabulary == ("X",)
    assert list(cm.patient_ids) == ["a", "b", "c"]
    np.testing.assert_array_equal(_dense(cm), [[1], [1], [1]])
    assert read_long(df, min_count=3).vocabulary == ("X",)  # exactly min_count patients is enough
    with pytest.raises(InputError, match=r"min_count=4 drops all 4 codes \(the most common is in 3 patients\)"):
        read_long(df, min_count=4)


def test_declared_vocabulary_order_empty_columns_and_unknown_codes():
    df = pd.DataFrame({"patient_id": ["a", "a", "b"], "code": ["K1", "UNKNOWN", "A9"]})
    cm = read_long(df, vocabulary=["Z0", "K1", " A9 ", "never"])
    assert cm.vocabulary == ("Z0", "K1", "A9", "never")
    np.testing.assert_array_equal(_dense(cm), [[0, 1, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(cm.prevalence(), [0, 0.5, 0.5, 0])


def test_declared_vocabulary_refusals():
    df = pd.DataFrame({"patient_id": ["a"], "code": ["250.01"]})
    with pytest.raises(InputError, match="none of the codes in column 'code' is in the declared vocabulary"):
        read_long(df, vocabulary=["401"])
    with pytest.raises(ConfigError, match="min_count > 1"):
        read_long(df, vocabulary=["250.01"], min_count=2)
    with pytest.raises(ConfigError, match="can never match codes truncated to 3"):
        read_long(df, vocabulary=["250.01"], truncate=3)
    with pytest.raises(ConfigError, match="repeats 250"):
        read_long(df, vocabulary=["250", "250 "])
    assert read_long(df, vocabulary=["250"], truncate=3).vocabulary == ("250",)


# --- input errors --------------------------------------------------------------------------------

def test_missing_columns_named():
    df = pd.DataFrame({"pid": ["a"], "dx": ["X"]})
    with pytest.raises(InputError, match=r"missing columns 'patient_id', 'code', 'n'; the table has: pid, dx"):
        read_long(df, count_col="n")
    with pytest.raises(InputError, match=r"missing column 'code';"):
        read_long(df, patient_col="pid")


def test_empty_table(tmp_path):
    with pytest.raises(InputError, match="table has no rows"):
        read_long(pd.DataFrame({"patient_id": [], "code": []}))
    (tmp_path / "e.csv").write_text("patient_id,code\n")
    with pytest.raises(InputError, match="header but no rows"):
        read_long(tmp_path / "e.csv")


@pytest.mark.parametrize(("counts", "message"), [
    ([1, -2, -1], r"2 rows have a negative count in column 'n' \(e.g. -2\)"),
    (["1", "x", "2"], r"1 rows have a non-numeric count in column 'n' \(e.g. 'x'\)"),
    ([1, None, 2], r"1 rows have no count in column 'n' \(first at data row 2\)"),
    ([1, np.inf, 2], r"column 'n' has infinite counts"),
], ids=["negative", "non-numeric", "missing", "infinite"])
def test_bad_counts(counts, message):
    df = pd.DataFrame({"patient_id": ["a", "b", "c"], "code": ["X", "X", "Y"], "n": counts})
    with pytest.raises(InputError, match=message):
        read_long(df, count_col="n")


def test_missing_ids_and_codes_counted(tmp_path):
    (tmp_path / "m.csv").write_text("patient_id,code\na,X\n,X\nb,Y\n,Z\n")
    with pytest.raises(InputError, match=r"2 of 4 rows have no patient id in column .patient_id. \(first at data row 2\)"):
        read_long(tmp_path / "m.csv")
    df = pd.DataFrame({"patient_id": ["a", "b", "c"], "code": ["X", None, "  "]})
    with pytest.raises(InputError, match=r"2 of 3 rows have no code in column 'code' \(first at data row 2\)"):
        read_long(df)
    with pytest.raises(InputError, match=r"1 of 2 rows have no patient id"):
        read_long(pd.DataFrame({"patient_id": ["a", " "], "code": ["X", "Y"]}))


def test_all_counts_zero():
    df = pd.DataFrame({"patient_id": ["a"], "code": ["X"], "n": [0]})
    with pytest.raises(InputError, match="no codes left: every count in column 'n' is 0"):
        read_long(df, count_col="n")


def test_bad_parameters():
    df = pd.DataFrame({"patient_id": ["a"], "code": ["X"]})
    for kwargs in ({"truncate": 0}, {"min_count": 0}, {"truncate": True}):
        with pytest.raises(ConfigError):
            read_long(df, **kwargs)
    with pytest.raises(InputError, match="expected a file path or a DataFrame"):
        read_long(42)


# --- CodeMatrix ----------------------------------------------------------------------------------

def _small() -> CodeMatrix:
    dense = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32)
    return CodeMatrix(sp.csr_array(dense), ("A", "B", "C"), np.array(["p1", "p2", "p3", "p4", "p5"]), True)


def test_codematrix_sizes_and_prevalence_without_densifying(monkeypatch):
    cm = _small()
    assert (cm.n_patients, cm.n_codes, cm.nnz, len(cm)) == (5, 3, 6, 5)
    assert isinstance(cm.matrix, sp.csr_array) and cm.matrix.dtype == np.float32
    assert cm.matrix.indices.dtype == np.int32

    def refuse(*args, **kwargs):
        raise AssertionError("densified")
    for name in ("toarray", "todense"):
        monkeypatch.setattr(sp.csr_array, name, refuse)
    np.testing.assert_allclose(cm.prevalence(), [0.6, 0.2, 0.4])
    np.testing.assert_array_equal(cm.codes_per_patient(), [2, 0, 2, 1, 1])


def test_codematrix_validates():
    m = sp.csr_array(np.array([[2.0, 0]]))
    with pytest.raises(InputError, match="values other than 0 and 1"):
        CodeMatrix(m, ("A", "B"), np.array(["p"]), True)
    assert CodeMatrix(m, ("A", "B"), np.array(["p"]), False).matrix.data.tolist() == [2.0]
    with pytest.raises(InputError, match="does not match"):
        CodeMatrix(m, ("A",), np.array(["p"]), False)
    with pytest.raises(InputError, match="duplicate codes"):
        CodeMatrix(m, ("A", "A"), np.array(["p"]), False)
    with pytest.raises(InputError, match="unique; repeated: p"):
        CodeMatrix(sp.csr_array(np.ones((2, 2))), ("A", "B"), np.array(["p", "p"]), True)
    with pytest.raises(InputError, match="negative"):
        CodeMatrix(sp.csr_array(np.array([[-1.0, 0]])), ("A", "B"), np.array(["p"]), False)
    broken = sp.csr_array((np.ones(3, np.float32), np.array([0, 1, 0], np.int32), np.array([0, 2, 1], np.int32)),
                          shape=(2, 2))
    with pytest.raises(InputError, match="not a valid CSR matrix: indptr must be a non-decreasing"):
        CodeMatrix(broken, ("A", "B"), np.array(["p", "q"]), True)
    # non-canonical input (duplicate entries) is summed without touching the caller's arrays
    coo = sp.coo_array((np.array([1.0, 1.0]), (np.array([0, 0]), np.array([1, 1]))), shape=(1, 2))
    raw = sp.csr_array((coo.data, coo.coords[1], np.array([0, 2])), shape=(1, 2))
    cm = CodeMatrix(raw, ("A", "B"), np.array(["p"]), False)
    assert cm.matrix.nnz == 1 and cm.matrix.data.tolist() == [2.0] and raw.nnz == 2
    # int64 index arrays are narrowed to int32 (half the memory)
    wide = sp.csr_array((np.ones(2, np.float32), np.array([0, 1], np.int64), np.array([0, 1, 2], np.int64)),
                        shape=(2, 2))
    assert wide.indices.dtype == np.int64
    narrow = CodeMatrix(wide, ("A", "B"), np.array([1, 2]), True).matrix
    assert narrow.indices.dtype == np.int32 and narrow.indptr.dtype == np.int32
    assert (narrow != wide).nnz == 0


@pytest.mark.parametrize("rng", [None, 0, np.random.default_rng(5)])
def test_batches_cover_every_row_once(rng):
    cm, _ = simulate_ehr(1_000, 100, seed=2)
    dense = _dense(cm)
    seen = []
    for block in cm.batches(128, rng):
        assert block.dtype == np.float32 and block.ndim == 2
        assert 1 <= block.shape[0] <= 128 and block.shape[1] == 100
        seen.append(block)
    stacked = np.vstack(seen)
    assert stacked.shape == dense.shape
    # the same multiset of rows (rows sorted lexicographically on both sides)
    np.testing.assert_array_equal(stacked[np.lexsort(stacked.T)], dense[np.lexsort(dense.T)])
    if rng is None:
        np.testing.assert_array_equal(stacked, dense)
    assert [b.shape[0] for b in cm.batches(300, drop_last=True)] == [300, 300, 300]
    with pytest.raises(ConfigError):
        next(cm.batches(0))


def test_batches_shuffle_visits_each_row_once():
    ids = np.arange(7)
    cm = CodeMatrix(sp.csr_array(np.eye(7, dtype=np.float32)), tuple("abcdefg"), ids, True)
    rows = np.concatenate([b.argmax(axis=1) for b in cm.batches(3, rng=1)])
    assert sorted(rows.tolist()) == list(range(7)) and rows.tolist() != list(range(7))


def test_subset():
    cm = _small()
    sub = cm.subset([4, 0])
    assert list(sub.patient_ids) == ["p5", "p1"] and sub.vocabulary == cm.vocabulary
    np.testing.assert_array_equal(_dense(sub), _dense(cm)[[4, 0]])
    mask = np.array([True, False, True, False, False])
    np.testing.assert_array_equal(_dense(cm.subset(mask)), _dense(cm)[mask])
    assert list(cm.subset(slice(1, 3)).patient_ids) == ["p2", "p3"]
    assert cm.subset([]).n_patients == 0 and np.isnan(cm.subset([]).prevalence()).all()
    with pytest.raises(InputError, match="unique"):
        cm.subset([1, 1])
    with pytest.raises(InputError, match="mask has length 2"):
        cm.subset(np.array([True, False]))


# --- generated patients --------------------------------------------------------------------------

def test_synthetic_ids_new_and_unique():
    ids = synthetic_ids(1_000_001)
    assert ids[0] == "syn-0000001" and ids[-1] == "syn-1000001"
    assert len(set(ids)) == len(ids)
    assert list(synthetic_ids(2, prefix="gan")) == ["gan-000001", "gan-000002"]
    real = np.array(["P000001", "syn-000002"], dtype=object)
    assert not set(synthetic_ids(5, avoid=real[:1])) & set(real[:1])
    with pytest.raises(ConfigError, match="'syn-000002' is also a real id"):
        synthetic_ids(5, avoid=real)
    with pytest.raises(ConfigError):
        synthetic_ids(3, prefix=" ")


def test_from_dense_rows_blockwise_equals_whole():
    rng = np.random.default_rng(0)
    dense = (rng.random((250, 40)) < 0.1).astype(np.float32)
    consumed = []

    def blocks():
        for start in range(0, 250, 64):
            consumed.append(start)
            yield dense[start:start + 64]
    vocab = [f"c{i}" for i in range(40)]
    cm = from_dense_rows(blocks(), vocab, binary=True)
    assert consumed == [0, 64, 128, 192]
    np.testing.assert_array_equal(_dense(cm), dense)
    assert cm.patient_ids[0] == "syn-000001" and cm.n_patients == 250
    assert cm.matrix.indptr.dtype == np.int32
    whole = from_dense_rows(dense, vocab, binary=True, prefix="x")
    assert (whole.matrix != cm.matrix).nnz == 0 and whole.patient_ids[0] == "x-000001"
    counts = from_dense_rows(dense * 3, vocab, binary=False)
    assert counts.matrix.data.max() == 3


def test_from_dense_rows_refuses():
    with pytest.raises(InputError, match=r"binary rows must hold only 0 and 1 \(found 0.7\)"):
        from_dense_rows(np.array([[0.7, 0.0]]), ["a", "b"], binary=True)
    with pytest.raises(InputError, match="expected rows × 2 codes"):
        from_dense_rows(np.ones((2, 3)), ["a", "b"], binary=True)
    with pytest.raises(InputError, match="counts must be ≥ 0"):
        from_dense_rows(np.array([[-1.0, 0.0]]), ["a", "b"], binary=False)
    with pytest.raises(InputError, match="block 1: rows hold NaN"):
        from_dense_rows(iter([np.zeros((1, 2)), np.array([[np.nan, 0.0]])]), ["a", "b"], binary=False)


# --- simulator -----------------------------------------------------------------------------------

def test_bernoulli_runs_exact():
    rng = np.random.default_rng(11)
    lengths = np.array([400, 3, 0, 200, 1, 50])
    probs = np.array([0.3, 0.9, 0.5, 0.002, 1.0, 0.0])
    hits = np.zeros((6, 400))
    n_per_run = []
    for _ in range(3_000):
        run, pos = _bernoulli_runs(rng, lengths, probs)
        assert np.all(pos < lengths[run]) and np.all(pos >= 0)
        assert not pd.Index(run * 1000 + pos).duplicated().any()
        np.add.at(hits, (run, pos), 1)
        n_per_run.append(np.bincount(run, minlength=6))
    n_per_run = np.array(n_per_run)
    freq = hits / 3_000
    assert abs(freq[0].mean() - 0.3) < 0.005 and np.abs(freq[0] - 0.3).max() < 0.04  # uniform over positions
    assert abs(n_per_run[:, 0].var() - 400 * 0.3 * 0.7) < 15  # binomial spread
    assert np.abs(freq[1, :3] - 0.9).max() < 0.03
    assert abs(freq[3, :200].mean() - 0.002) < 0.0006
    # the whole count distribution is binomial, upper tail included (runs are continued)
    from scipy.stats import binom
    run, _ = _bernoulli_runs(rng, np.full(40_000, 100), np.full(40_000, 0.02))
    observed = np.bincount(np.bincount(run, minlength=40_000), minlength=11)[:11]
    expected = 40_000 * binom.pmf(np.arange(11), 100, 0.02)
    assert np.all(np.abs(observed - expected) < 4 * np.sqrt(expected) + 2)
    assert (np.bincount(run, minlength=40_000) >= 7).sum() > 0.5 * 40_000 * binom.sf(6, 100, 0.02)
    assert freq[4, 0] == 1.0 and n_per_run[:, [2, 5]].sum() == 0


def test_simulator_deterministic():
    a, da = simulate_ehr(2_000, 300, seed=7)
    b, db = simulate_ehr(2_000, 300, seed=7)
    c, _ = simulate_ehr(2_000, 300, seed=8)
    assert a.vocabulary == b.vocabulary
    for attr in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(a.matrix, attr), getattr(b.matrix, attr))
    pd.testing.assert_frame_equal(da, db)
    assert (a.matrix != c.matrix).nnz > 0


def test_simulator_shapes_and_demographics(sim):
    cm, demo = sim
    assert isinstance(cm.matrix, sp.csr_array) and cm.matrix.dtype == np.float32 and cm.binary
    assert cm.matrix.shape == (20_000, 1_000) and cm.matrix.has_canonical_format
    assert list(demo.columns) == ["patient_id", "age", "sex"]
    np.testing.assert_array_equal(demo["patient_id"].to_numpy(dtype=object), cm.patient_ids)
    assert demo["age"].between(18, 95).all() and set(demo["sex"]) == {"F", "M"}
    assert cm.vocabulary == tuple(sorted(cm.vocabulary)) and all(c.startswith("D") for c in cm.vocabulary)
    assert cm.patient_ids[0] == "P000001" and cm.patient_ids[-1] == "P020000"


def test_simulator_long_tailed(sim):
    prev = sim[0].prevalence()
    assert prev.max() > 0.15 and np.median(prev) < 0.02
    assert (prev < 0.01).mean() > 0.5


def test_simulator_clusters_make_cooccurrence(sim):
    cm = sim[0]
    prev = cm.prevalence()
    top = np.flatnonzero(prev > 0.005)
    x = cm.matrix[:, top]
    joint = (x.T @ x).toarray() / cm.n_patients
    lift = joint / np.outer(prev[top], prev[top])
    np.fill_diagonal(lift, 0)
    pairs = np.argwhere(np.triu(lift > 3) & (joint * cm.n_patients >= 20))  # supported by ≥ 20 patients
    assert len(pairs) >= 50


def test_simulator_age_and_sex_effects(sim):
    cm, demo = sim
    k = cm.codes_per_patient()
    age = demo["age"].to_numpy()
    assert k[age >= 65].mean() > 1.5 * k[age < 40].mean()
    female = (demo["sex"] == "F").to_numpy()
    in_f = np.bincount(cm.subset(female).matrix.indices, minlength=cm.n_codes)
    in_m = np.bincount(cm.subset(~female).matrix.indices, minlength=cm.n_codes)
    assert ((in_f >= 20) & (in_m == 0)).sum() >= 3 and ((in_m >= 20) & (in_f == 0)).sum() >= 1


def test_simulator_counts_mode():
    b, _ = simulate_ehr(120_000, 50, seed=4, binary=True)  # more than one chunk of rows
    c, _ = simulate_ehr(120_000, 50, seed=4, binary=False)
    assert not c.binary
    np.testing.assert_array_equal(c.matrix.indices, b.matrix.indices)  # same codes present
    assert c.matrix.data.min() >= 1 and np.all(c.matrix.data == np.round(c.matrix.data))
    assert 1.3 < c.matrix.data.mean() < 4


@pytest.mark.parametrize("n", [1_000, 200_000])
def test_simulator_sizes(n):
    cm, demo = simulate_ehr(n, 1_000, seed=0)
    assert cm.n_patients == n == len(demo) and cm.n_codes == 1_000
    assert 3 < cm.codes_per_patient().mean() < 20


@pytest.mark.parametrize("n_codes", [20, 21, 50, 137])
def test_simulator_small_vocabularies(n_codes):
    for seed in range(5):
        cm, _ = simulate_ehr(500, n_codes, seed=seed)
        assert cm.n_codes == n_codes == len(set(cm.vocabulary)) and cm.nnz > 0


def test_simulator_never_dense():
    tracemalloc.start()
    try:
        cm, _ = simulate_ehr(100_000, 5_000, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dense_bytes = cm.n_patients * cm.n_codes * 4  # 2 GB as float32
    assert peak < dense_bytes / 10


def test_simulator_truncates_to_categories(sim):
    cm = sim[0].subset(sim[0].codes_per_patient() > 0)
    merged = read_long(to_long(cm), truncate=4)
    present = np.asarray(cm.vocabulary)[cm.prevalence() > 0]
    assert merged.vocabulary == tuple(sorted({c.split(".")[0] for c in present}))
    assert merged.n_codes < cm.n_codes and merged.nnz < cm.nnz


def test_simulator_refuses_bad_sizes():
    with pytest.raises(ConfigError, match="n_patients"):
        simulate_ehr(0)
    with pytest.raises(ConfigError, match="n_codes"):
        simulate_ehr(10, n_codes=5)
