"""The Spark engine (issue 24 item 2): the same statements as DuckDB's (``engines/table.py`` in
``sql.SPARK``), run by Spark on ``local[2]``, give DuckDB's statistics on the same Parquet file —
numbers with gaps, categories with gaps and a quote, a binary flag, a dropout timeline — and so the
same bayesnet, and under DP the same release, ledger and tables. A missing pyspark or Java is one
line naming what to install.

One SparkSession serves the module (the JVM starts once). Without pyspark or Java the tests skip,
unless CLINSYNTH_REQUIRE_SPARK=1 (set by `.ci/run`) makes the absence a failure.
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from clinsynth.cli import main
from clinsynth.data.datasets import simulate_trial
from clinsynth.engines.duckdb_engine import DuckDBTable
from clinsynth.engines.source import TableSource
from clinsynth.models.bayesnet import BayesNet
from clinsynth.privacy.budget import Privacy

from engine_checks import assert_buckets_are_numpys, assert_same_network, grid_probes

ROWS = 3_000


def _missing(what: str) -> None:
    if os.environ.get("CLINSYNTH_REQUIRE_SPARK") == "1":
        pytest.fail(f"{what} (CLINSYNTH_REQUIRE_SPARK=1)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def spark():
    from clinsynth.engines.spark_engine import SparkUnavailableError, spark_session

    try:
        session = spark_session("local[2]")
    except SparkUnavailableError as e:
        _missing(str(e))
    yield session
    session.stop()


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> tuple[pd.DataFrame, str]:
    """The trial's demographics, labs and a dropout timeline, plus a flag and a category with gaps."""
    df = simulate_trial(ROWS, seed=5).iloc[:, :22]
    rng = np.random.default_rng(1)
    df["flag"] = pd.array(rng.random(ROWS) < 0.3, dtype="boolean")
    df.loc[rng.random(ROWS) < 0.05, "flag"] = pd.NA
    df["site"] = pd.Series(rng.choice(["north", "O'Brien ward", "south"], ROWS), dtype=object)
    df.loc[rng.random(ROWS) < 0.1, "site"] = None
    df["dose"] = pd.array(rng.integers(0, 40, ROWS), dtype="Int64")
    df.loc[rng.random(ROWS) < 0.1, "dose"] = pd.NA
    path = tmp_path_factory.mktemp("spark") / "trial.parquet"
    df.to_parquet(path)
    return df, str(path)


@pytest.fixture(scope="module")
def tables(spark, parquet):
    from clinsynth.engines.spark_engine import SparkTable

    duck, sparked = DuckDBTable(TableSource(parquet[1])), SparkTable(parquet[1], spark=spark)
    yield duck, sparked
    duck.close()
    sparked.close()


@pytest.fixture(scope="module")
def schema(tables):
    return tables[0].infer_schema(target="arm")


class _Counted:
    """Counts the statements a table runs (``query`` is where every one goes)."""

    def __init__(self, table):
        self.table, self.n = table, 0

    def __enter__(self):
        query = type(self.table).query

        def counted(text):
            self.n += 1
            return query(self.table, text)

        self.table.query = counted
        return self

    def __exit__(self, *exc):
        del self.table.query


def test_statistics_equal_duckdb(tables):
    duck, sparked = tables
    assert sparked.types == duck.types and sparked.n == duck.n == ROWS
    schema = duck.infer_schema(target="arm")
    with _Counted(sparked) as counted:
        assert sparked.infer_schema(target="arm") == schema  # every row is in both samples: the same inference
    assert counted.n <= 2  # every column's facts in one statement, the categories' values in one more
    assert schema.column("flag").kind == "binary" and schema.column("flag").missing == "indicator"
    assert "O'Brien ward" in schema.column("site").categories
    specs = [s for s in schema.model_columns if s.kind in ("continuous", "integer")]
    scaling = sparked.numeric_scaling(schema)
    for name, state in duck.numeric_scaling(schema).items():  # summed in another order: to the last bits
        assert scaling[name] == pytest.approx(state, rel=1e-12)
    from clinsynth.privacy.histograms import grid_edges

    edges = grid_edges("continuous")
    assert np.array_equal(sparked.value_histogram(specs, edges), duck.value_histogram(specs, edges))
    assert np.array_equal(sparked.format_histogram(specs, schema), duck.format_histogram(specs, schema))
    for columns in (["site"], ["flag"], ["race", "smoker"], ["dose"]):
        assert sparked.observed_counts(columns) == duck.observed_counts(columns)
    assert sparked.shared_ids(schema) == duck.shared_ids(schema)


def test_grid_bucket_by_the_grids_formula_is_numpys(spark):
    from clinsynth.engines import sql

    x = grid_probes()
    spark.createDataFrame(pd.DataFrame({"i": np.arange(x.size), "x": x})).createOrReplaceTempView("t")
    assert_buckets_are_numpys(
        lambda e: [r[0] for r in spark.sql(f"SELECT {e} FROM t ORDER BY i").collect()], sql.SPARK)


def test_bayesnet_through_spark_is_duckdbs(tables, schema):
    """Same counts → the same network (the scaling given, as DuckDB's own test gives pandas')."""
    duck, sparked = tables
    a = BayesNet(seed=0, progress=False).fit(duck, schema)
    scaling = duck.numeric_scaling(schema)
    sparked.numeric_scaling = lambda schema: scaling
    try:
        with _Counted(sparked) as counted:
            b = BayesNet(seed=0, progress=False).fit(sparked, schema)
    finally:
        del sparked.numeric_scaling
    assert b.n_train_ == ROWS
    # numeric values: their distinct counts, their value counts; the states' partition sizes; the
    # singles and pairs for the gains (one job), the pairs for the tree (one job)
    assert counted.n <= 6
    assert_same_network(a, b)


def test_dp_bayesnet_through_spark_is_duckdbs(tables, schema):
    """Under DP the scaling is released, not summed: the same release, ledger and noisy tables."""
    duck, sparked = tables
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = BayesNet(seed=0, progress=False, privacy=Privacy(epsilon=1.0)).fit(duck, schema)
        with _Counted(sparked) as counted:
            b = BayesNet(seed=0, progress=False, privacy=Privacy(epsilon=1.0)).fit(sparked, schema)
    assert a.ledger_.state_dict() == b.ledger_.state_dict()
    # the release: shared ids, formats, two value histograms (fine and coarse grids), one per
    # category group (5 here); the states' counts in one job
    assert counted.n <= 12
    assert_same_network(a, b)
    # the noiseless family counts themselves, the conformed records' states in both engines
    m = a
    x = duck.state_counts(m.encoder_, m.variables_, m.target_, seed=0, folds=1)
    y = sparked.state_counts(m.encoder_, m.variables_, m.target_, seed=0, folds=1)
    for v in range(len(m.variables_)):
        assert np.array_equal(x.family(v, m.parents_[v]), y.family(v, m.parents_[v]))


def test_folds_follow_the_file_order(tables, schema):
    """The non-DP held-out folds come from each row's position, numbered as Spark reads it."""
    duck, sparked = tables
    m = BayesNet(seed=0, progress=False).fit(duck, schema)
    x = duck.state_counts(m.encoder_, m.variables_, m.target_, seed=3, folds=5)
    y = sparked.state_counts(m.encoder_, m.variables_, m.target_, seed=3, folds=5)
    for v in range(len(m.variables_)):
        assert np.array_equal(x.single(v), y.single(v))


@pytest.mark.slow  # the fast variant: test_dp_bayesnet_through_spark_is_duckdbs
def test_fit_through_the_cli(spark, parquet, tmp_path):
    _, path = parquet
    assert main(["fit", path, "--spark-master", "local[2]", "--target", "arm", "--model", "dp-bayesnet",
                 "--epsilon", "1", "--quiet", "--out", str(tmp_path / "s")]) == 0
    assert main(["fit", path, "--engine", "duckdb", "--target", "arm", "--model", "dp-bayesnet",
                 "--epsilon", "1", "--quiet", "--out", str(tmp_path / "d")]) == 0
    from clinsynth.models.registry import load

    s, d = load(tmp_path / "s"), load(tmp_path / "d")
    assert s.ledger_.state_dict() == d.ledger_.state_dict()
    assert all(np.array_equal(x, y) for x, y in zip(s.tables_, d.tables_))


@pytest.mark.slow
def test_run_through_the_cli_holds_out_in_spark(spark, parquet, tmp_path):
    _, path = parquet
    out = tmp_path / "release"
    assert main(["run", path, "--engine", "spark", "--target", "arm", "--model", "bayesnet", "--n", "200",
                 "--evaluate", "none", "--quiet", "--out", str(out)]) == 0
    import json

    manifest = json.loads((out / "steward" / "manifest.json").read_text())
    assert manifest["input"]["engine"] == "spark"
    split = manifest["split"]
    assert split["n_train"] + split["n_test"] == ROWS and 0.15 < split["n_test"] / ROWS < 0.25
    assert len(pd.read_csv(out / "share" / "synthetic.csv")) == 200


def test_a_spark_dataframe_in_the_python_api(spark, parquet):
    from clinsynth import create
    from clinsynth.engines.choose import open_table

    df, path = parquet
    frame = spark.read.parquet(path).select("arm", "age", "female", "race", "flag", "site")
    with open_table(frame, engine="spark") as table:
        assert table.n == ROWS and table.source.describe() == "the Spark DataFrame"
        sample = table.sample(500, seed=4)
        assert len(sample) == 500 and list(sample.columns) == list(frame.columns)
        pd.testing.assert_frame_equal(sample, table.sample(500, seed=4))
        model = create("bayesnet", seed=0, progress=False).fit(table)
    assert len(model.sample(20, seed=0)) == 20


def test_missing_pyspark_is_one_line(monkeypatch, tmp_path, capsys):
    import clinsynth.engines.spark_engine as engine

    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # import now raises ImportError
    simulate_trial(200, seed=0).iloc[:, :6].to_parquet(tmp_path / "t.parquet")
    assert main(["fit", str(tmp_path / "t.parquet"), "--engine", "spark", "--quiet", "--out", str(tmp_path / "m")]) != 0
    err = capsys.readouterr()
    text = " ".join((err.out + err.err).split())
    assert "needs pyspark, which is not installed: pip install 'clinsynth[spark]'" in text
    assert "Traceback" not in text and not (tmp_path / "m").exists()
    with pytest.raises(engine.SparkUnavailableError, match="JDK 17"):
        engine.spark_session()


def test_missing_java_is_one_line(spark, monkeypatch, tmp_path, capsys):
    import clinsynth.engines.spark_engine as engine
    from pyspark.sql import SparkSession

    monkeypatch.setattr(engine, "_java", lambda: None)
    monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: None))
    simulate_trial(200, seed=0).iloc[:, :6].to_parquet(tmp_path / "t.parquet")
    assert main(["fit", str(tmp_path / "t.parquet"), "--engine", "spark", "--quiet", "--out", str(tmp_path / "m")]) != 0
    err = capsys.readouterr()
    text = " ".join((err.out + err.err).split())
    assert "--engine spark needs Java, which was not found" in text and "install a JDK 17" in text
    assert "Traceback" not in text and not (tmp_path / "m").exists()


@pytest.mark.parametrize("args, message", [
    (["--engine", "duckdb", "--spark-master", "local[1]"], "--spark-master names a Spark cluster, but --engine is duckdb"),
    (["--engine", "spark", "--table", "t"], "which Spark does not read here"),
])
def test_spark_options_refused_in_one_line(tmp_path, capsys, args, message):
    simulate_trial(200, seed=0).iloc[:, :6].to_parquet(tmp_path / "t.parquet")
    assert main(["fit", str(tmp_path / "t.parquet"), *args, "--quiet", "--out", str(tmp_path / "m")]) != 0
    err = capsys.readouterr()
    text = " ".join((err.out + err.err).split())
    assert message in text and "Traceback" not in text


def test_partitions_drawn_on_the_executors_are_the_local_files(spark, tmp_path):
    """`sample --engine spark`: the same (seed, partition) plan as worker processes, so the same
    bytes, drawn by Spark tasks; and the CLI refuses Spark for a single output file."""
    import hashlib

    from clinsynth.models.registry import create
    from clinsynth.schema import Schema
    from clinsynth.streaming import sample_to_parquet

    df = simulate_trial(600, seed=4)[["arm", "age", "female", "egfr", "sbp_m01", "sbp_m06"]]
    model = create("bayesnet", seed=0, progress=False).fit(df, Schema.infer(df, target="arm"))
    kw = dict(partition_rows=4_000, row_group_rows=1_500, seed=3)
    local = sample_to_parquet(model, 10_000, tmp_path / "local", processes=1, **kw)
    drawn = sample_to_parquet(model, 10_000, tmp_path / "spark", spark=spark, **kw)
    assert drawn.partitions == local.partitions == 3 and drawn.rows == 10_000
    digest = {name: [hashlib.sha256((tmp_path / name / f).read_bytes()).hexdigest() for f in local.files
                     if f.endswith(".parquet")] for name in ("local", "spark")}
    assert digest["spark"] == digest["local"] and len(digest["local"]) == 3
    model.save(tmp_path / "model")
    assert main(["sample", str(tmp_path / "model"), "-n", "5000", "--out", str(tmp_path / "cli"),
                 "--partition-rows", "2000", "--engine", "spark"]) == 0
    assert len(list((tmp_path / "cli").glob("part-*.parquet"))) == 3
    assert main(["sample", str(tmp_path / "model"), "-n", "50", "--out", str(tmp_path / "one.csv"),
                 "--engine", "spark"]) == 1
