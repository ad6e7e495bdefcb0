"""The DuckDB engine (issue 24): the counting models' statistics computed in DuckDB from a Parquet
file, a glob of Parquet files or a DuckDB table equal the pandas path's counts — exactly without
DP (given the same encoder scaling, which DuckDB sums in another order), and under DP the same
released schema, the same ledger, the same noiseless counts and so the same noisy tables."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from clinsynth.cli import main
from clinsynth.data.datasets import simulate_trial
from clinsynth.engines import sql
from clinsynth.engines.duckdb_engine import DuckDBTable
from clinsynth.engines.source import TableSource
from clinsynth.errors import InputError
from clinsynth.models.bayesnet import BayesNet, StatesMatrix
from clinsynth.privacy.budget import Privacy
from clinsynth.privacy.formats import number_formats
from clinsynth.privacy.histograms import bucket, grid_edges
from clinsynth.privacy.conform import conform

from engine_checks import assert_buckets_are_numpys, assert_same_network, grid_probes


def _trial(n: int, columns: int | None) -> pd.DataFrame:
    df = simulate_trial(n, seed=3)
    return df if columns is None else df.iloc[:, :columns]


def _pandas_scaling(model: BayesNet) -> dict:
    return {k: dict(c.state) for k, c in model.encoder_.codecs.items() if getattr(c, "state", None)}


def _check_exact(df: pd.DataFrame, source: TableSource) -> None:
    """Non-DP: scaling equal to the last bits or so, then (with the same scaling) the same network."""
    table = DuckDBTable(source)
    schema = table.infer_schema(target="arm")
    in_memory = BayesNet(seed=0, progress=False).fit(df, schema)
    expected = _pandas_scaling(in_memory)
    for name, state in table.numeric_scaling(schema).items():
        assert state["loc"] == pytest.approx(expected[name]["loc"], rel=1e-12)
        assert state["scale"] == pytest.approx(expected[name]["scale"], rel=1e-12)
    table.numeric_scaling = lambda schema: expected  # the counts, not the summation order, are under test
    engine = BayesNet(seed=0, progress=False).fit(table, schema)
    assert engine.n_train_ == len(df)
    assert_same_network(in_memory, engine)
    table.close()


def _check_dp(df: pd.DataFrame, source: TableSource) -> None:
    """DP: the same release, ledger, noiseless counts and noisy tables."""
    table = DuckDBTable(source)
    schema = table.infer_schema(target="arm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        in_memory = BayesNet(seed=0, progress=False, privacy=Privacy(epsilon=1.0)).fit(df, schema)
        engine = BayesNet(seed=0, progress=False, privacy=Privacy(epsilon=1.0)).fit(table, schema)
    assert in_memory.ledger_.state_dict() == engine.ledger_.state_dict()
    assert_same_network(in_memory, engine)
    # the noiseless counts themselves, variable by variable and for the fitted families
    enc, m = in_memory.encoder_, in_memory
    frame = conform(df, m.release_)
    values, codes = enc.split(enc.encode(frame))
    blank, missing = m._gaps(frame, enc, codes)
    states = StatesMatrix(m._discretise(values, codes, enc, blank, missing), m.variables_, m.target_, folds=1)
    counts = table.state_counts(enc, m.variables_, m.target_, seed=0, folds=1)
    for v in range(len(m.variables_)):
        assert np.array_equal(states.family(v, m.parents_[v]), counts.family(v, m.parents_[v]))
    # a family the tree never builds (two parents besides the target) is counted the same way too
    a, b, c = [v for v in range(len(m.variables_)) if v != m.target_][:3]
    for parents in ([m.target_, b, c], [b, c]):
        assert np.array_equal(states.family(a, parents), counts.family(a, parents))
    features = m._features()
    assert np.array_equal(states.dependence(features), counts.dependence(features))
    table.close()


def test_counts_equal_pandas_on_parquet(tmp_path):
    df = _trial(8_000, 26)  # demographics, labs and a visit group with dropout
    path = tmp_path / "trial.parquet"
    df.to_parquet(path)
    _check_exact(df, TableSource(str(path)))
    _check_dp(df, TableSource(str(path)))


@pytest.mark.slow
def test_counts_equal_pandas_on_100k_rows(tmp_path):
    df = _trial(100_000, None)
    path = tmp_path / "trial.parquet"
    df.to_parquet(path)
    _check_exact(df, TableSource(str(path)))
    _check_dp(df, TableSource(str(path)))


def test_glob_of_parquet_files_is_one_table(tmp_path):
    df = _trial(9_000, 16)
    for i in range(3):  # names sort in row order: a glob is read in sorted order
        df.iloc[i * 3000:(i + 1) * 3000].to_parquet(tmp_path / f"part-{i}.parquet")
    _check_exact(df, TableSource(str(tmp_path / "part-*.parquet")))


def test_duckdb_table_through_the_cli(tmp_path):
    import duckdb

    df = _trial(6_000, 16)
    df.to_parquet(tmp_path / "t.parquet")
    con = duckdb.connect(str(tmp_path / "ehr.duckdb"))
    con.execute(f"CREATE TABLE trial AS SELECT * FROM read_parquet('{tmp_path / 't.parquet'}')")
    con.close()
    for data, extra, out in ((tmp_path / "ehr.duckdb", ["--table", "trial"], "a"),
                             (tmp_path / "t.parquet", ["--engine", "duckdb"], "b")):
        assert main(["fit", str(data), *extra, "--target", "arm", "--model", "dp-bayesnet", "--epsilon", "1",
                     "--quiet", "--out", str(tmp_path / out)]) == 0
    from clinsynth.models.registry import load

    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert a.n_train_ == b.n_train_ == 6_000
    assert a.ledger_.state_dict() == b.ledger_.state_dict()
    assert all(np.array_equal(x, y) for x, y in zip(a.tables_, b.tables_))
    assert len(a.sample(50, seed=1)) == 50


@pytest.mark.parametrize("args, message", [
    (["{d}/missing.parquet", "--engine", "duckdb"], "file '{d}/missing.parquet' does not exist"),
    (["{d}/nothing-*.parquet"], "matches no file"),
    (["{d}/ehr.duckdb"], "name the table to read with --table"),
    (["{d}/ehr.duckdb", "--table", "visits"], "has no table 'visits' (its tables: trial)"),
    (["{d}/t.parquet", "--table", "trial"], "reads a DuckDB database file"),
    (["{d}/t.parquet", "--engine", "duckdb", "--model", "acgan"], "needs the table in memory"),
    (["{d}/blank_target.parquet", "--engine", "duckdb", "--target", "arm"], "target 'arm' is blank in 3 of 300 rows"),
])
def test_clear_one_line_errors(tmp_path, capsys, args, message):
    import duckdb

    _trial(300, 8).to_parquet(tmp_path / "t.parquet")
    blank = _trial(300, 8)
    blank.loc[[1, 5, 9], "arm"] = None  # refused as the pandas path refuses it (it was fitted)
    blank.to_parquet(tmp_path / "blank_target.parquet")
    con = duckdb.connect(str(tmp_path / "ehr.duckdb"))
    con.execute("CREATE TABLE trial AS SELECT 1 AS x")
    con.close()
    args = [a.format(d=tmp_path) for a in args]
    assert main(["fit", *args, "--quiet", "--out", str(tmp_path / "m")]) != 0
    err = capsys.readouterr()
    text = " ".join((err.out + err.err).split())
    assert message.format(d=tmp_path) in text
    assert "Traceback" not in text
    assert not (tmp_path / "m").exists()


def test_sample_is_deterministic_per_seed(tmp_path):
    _trial(5_000, 6).to_parquet(tmp_path / "t.parquet")
    table = DuckDBTable(TableSource(str(tmp_path / "t.parquet")))
    a, b, c = table.sample(500, seed=1), table.sample(500, seed=1), table.sample(500, seed=2)
    assert len(a) == 500
    pd.testing.assert_frame_equal(a, b)
    assert not a["participant_id"].equals(c["participant_id"])


def test_sql_twins_give_numpy_numbers():
    import duckdb

    rng = np.random.default_rng(0)
    raw = rng.normal(0, 50, 2000)
    x = np.concatenate([[np.round(v, int(d)) for v, d in zip(raw, rng.integers(0, 8, 2000))],
                        [0.0, 1.0, 2.5, -3.0, 1e-9, 123456.125, 0.1 + 0.2, np.nan]])
    edges = grid_edges("continuous")
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (SELECT unnest(?) AS x)", [x.tolist()])
    con.execute("UPDATE t SET x = 'NaN'::DOUBLE WHERE x IS NULL")
    got = con.execute(f"SELECT {sql.searchsorted('x', edges)}, {sql.bucket('x', edges)}, "
                      f"{sql.number_format('x', 1e-9)} FROM t").fetchnumpy()
    cols = list(got)
    assert np.array_equal(got[cols[0]], np.searchsorted(edges, x, side="right"))
    seen = ~np.isnan(x)
    assert np.array_equal(got[cols[1]][seen], bucket(edges, x[seen]))
    assert np.array_equal(got[cols[2]][seen], number_formats(x[seen], 1e-9))
    with pytest.raises(InputError, match="unknown table format"):
        TableSource("table.xlsx").check()


def test_grid_bucket_by_the_grids_formula_is_numpys():
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest(?) AS x, generate_subscripts(?, 1) AS i", [grid_probes().tolist()] * 2)
    con.execute("UPDATE t SET x = 'NaN'::DOUBLE WHERE x IS NULL")
    assert_buckets_are_numpys(lambda e: [r[0] for r in con.execute(f"SELECT {e} FROM t ORDER BY i").fetchall()],
                              sql.DUCKDB)


def test_value_state_with_exact_value_states_is_numpys():
    """A numeric variable whose bins hold exact-value states (piles on round values): the state
    from one set test and two search trees, as ``bayesnet.value_states`` gives it."""
    import duckdb

    from clinsynth.models.bayesnet import states_from_counts, value_states

    rng = np.random.default_rng(3)
    values = np.unique(np.round(rng.normal(0, 1, 400), 2)).astype(np.float32)
    counts = rng.integers(1, 4, values.size)
    counts[[0, 7, 50, 51, 120, values.size - 1]] = 400  # piles, at the minimum and the maximum too
    lo, hi = (np.asarray(a) for a in states_from_counts(values, counts, 20))
    assert (lo == hi).any() and not (lo == hi).all()
    x = np.concatenate([values, np.nextafter(values, np.float32(np.inf)), [-9.0, 9.0, np.nan]]).astype(np.float32)
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT CAST(unnest(?) AS FLOAT) AS x, generate_subscripts(?, 1) AS i",
                [x.astype(float).tolist()] * 2)
    got = np.array([r[0] for r in con.execute(f"SELECT {sql.value_state('x', lo, hi)} FROM t ORDER BY i").fetchall()])
    seen = ~np.isnan(x)
    assert np.array_equal(got[seen], value_states(lo, hi, x[seen]))


def test_run_through_duckdb_holds_out_by_row_hash(tmp_path):
    df = _trial(4_000, 12)
    for i in range(2):
        df.iloc[i * 2000:(i + 1) * 2000].to_parquet(tmp_path / f"part-{i}.parquet")
    out = tmp_path / "release"
    assert main(["run", str(tmp_path / "part-*.parquet"), "--target", "arm", "--model", "bayesnet", "--n", "300",
                 "--evaluate", "none", "--quiet", "--out", str(out)]) == 0
    import json

    manifest = json.loads((out / "steward" / "manifest.json").read_text())
    split = manifest["split"]
    assert split["n_train"] + split["n_test"] == 4_000
    assert 0.15 < split["n_test"] / 4_000 < 0.25  # test_size 0.2, by a hash of each row
    assert manifest["input"]["engine"] == "duckdb"
    assert len(pd.read_csv(out / "share" / "synthetic.csv")) == 300


def test_sql_clip_keeps_gaps_as_pandas_clip_does():
    """conform() clips with pandas, which keeps NaN; SQL's greatest()/least() skip NULL and would
    turn every gap into the lower bound (under DP, a column's gaps then counted in its first bin)."""
    import duckdb

    x = [None, float("nan"), -5.0, 0.5, 7.0]
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (SELECT unnest(?) AS x)", [x])
    con.execute("UPDATE t SET x = 'NaN'::DOUBLE WHERE x IS NOT NULL AND x <> x")
    got = [r[0] for r in con.execute(f"SELECT {sql.clip('x', 0.0, 1.0)} FROM t").fetchall()]
    expected = pd.Series(x, dtype=float).clip(0.0, 1.0).tolist()
    assert [g is None or g != g for g in got] == [e != e for e in expected]
    assert [g for g in got if g is not None and g == g] == [e for e in expected if e == e]


def test_a_model_that_reads_records_is_refused_an_engine_table(tmp_path):
    """Only models that define how they learn from counts (``_fit_engine``) take an engine's table."""
    from clinsynth import create
    from clinsynth.errors import ConfigError

    _trial(500, 12).to_parquet(tmp_path / "t.parquet")
    with DuckDBTable(TableSource(str(tmp_path / "t.parquet"))) as table:
        with pytest.raises(ConfigError, match="acgan learns from the records themselves"):
            create("acgan").fit(table)
