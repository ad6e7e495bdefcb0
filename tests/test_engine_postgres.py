"""A PostgreSQL table as input (issue 24 item 3): streamed through ADBC into the DuckDB engine, it
gives the counts and the fitted network the same table gives from a Parquet file — exactly without
DP; under DP the same ledger, noiseless counts and tables — and every failure is one line.

The tests start a throwaway PostgreSQL server (Debian's ``postgresql`` package, which `.ci/run`
installs) on a free port for this module. Without the server binaries or the ADBC driver they skip,
unless CLINSYNTH_REQUIRE_POSTGRES=1 (set by CI) makes the absence a failure.
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinsynth.cli import main
from clinsynth.data.datasets import simulate_trial
from clinsynth.engines.choose import open_table
from clinsynth.engines.duckdb_engine import DuckDBTable
from clinsynth.engines.postgres import PostgresError, PostgresSource, mask, mask_text, server
from clinsynth.engines.source import TableSource
from clinsynth.models.bayesnet import BayesNet
from clinsynth.privacy.budget import Privacy

from engine_checks import assert_same_network

ROWS = 4_000
PASSWORD = "s3cret-pw"  # trust authentication ignores it; it must never be printed or written


def _missing(what: str) -> None:
    if os.environ.get("CLINSYNTH_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{what} (CLINSYNTH_REQUIRE_POSTGRES=1)")
    pytest.skip(what)


def _bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's versioned folder (newest first)."""
    on_path = shutil.which("initdb")
    candidates = ([str(Path(on_path).parent)] if on_path else []) + sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
        reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(root: Path) -> dict:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` system user then (by the
    subprocess's own user switch: ``runuser`` lives in /usr/sbin, which a CI PATH may lack), from a
    folder that user can enter."""
    switch = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
    return {**switch, "cwd": root}


def _trial() -> pd.DataFrame:
    return simulate_trial(ROWS, seed=5).iloc[:, :26]  # demographics, labs and a visit group with dropout


@pytest.fixture(scope="module")
def postgres():
    """A throwaway server on a free port, holding the simulated trial (``trial``) and a table of
    NUMERIC values (``cdm.labs``); yields its URL (with a password) and the trial frame."""
    try:
        import adbc_driver_postgresql.dbapi as dbapi
    except ImportError:
        _missing('the ADBC PostgreSQL driver is not installed (pip install "clinsynth[postgres]")')
    bindir = _bindir()
    if bindir is None:
        _missing("PostgreSQL server binaries not found (apt-get install postgresql)")

    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _missing("running as root and there is no 'postgres' system user to run the server as")
    root = Path(tempfile.mkdtemp(prefix="clinsynth-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = _free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=20"
    try:
        for args in (["initdb", "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "--no-sync"],
                     ["pg_ctl", "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-t", "60", "-o", options,
                      "start"]):
            subprocess.run([str(bindir / args[0]), *args[1:]], check=True, capture_output=True, text=True,
                           timeout=120, **_as_server_user(root))
    except subprocess.CalledProcessError as e:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL ({e.cmd[-1]}): {e.stderr or e.stdout}{log}")
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
    try:
        df = _trial()
        with dbapi.connect(url) as con:
            with con.cursor() as cur:
                cur.adbc_ingest("trial", df, mode="create")
                cur.execute("CREATE SCHEMA cdm")
                cur.execute("CREATE TABLE cdm.labs (person_id int4, value_as_number numeric(8, 2), unit text)")
                cur.execute("INSERT INTO cdm.labs SELECT i, (i % 97) / 4.0, CASE WHEN i % 3 = 0 THEN 'mg/dL' "
                            "ELSE 'mmol/L' END FROM generate_series(1, 500) AS i")
                cur.execute("CREATE TABLE cdm.visits (visit_date date, sbp float8)")
                cur.execute("INSERT INTO cdm.visits SELECT DATE '2020-01-01' + i, 120 + i % 30 "
                            "FROM generate_series(1, 300) AS i")
                cur.execute("CREATE TABLE cdm.empty (x float8)")
            con.commit()
        yield url, df
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, **_as_server_user(root))
        shutil.rmtree(root, ignore_errors=True)


def test_counts_and_network_equal_parquet(postgres, tmp_path):
    url, df = postgres
    df.to_parquet(tmp_path / "trial.parquet")
    with open_table(url, "trial") as pg, DuckDBTable(TableSource(str(tmp_path / "trial.parquet"))) as pq:
        assert (pg.n, pg.types) == (pq.n, pq.types) == (ROWS, pg.types)
        assert pg.source.rows == ROWS
        schema = pg.infer_schema(target="arm")
        assert schema == pq.infer_schema(target="arm")
        pd.testing.assert_frame_equal(pg.sample(300, seed=2), pq.sample(300, seed=2))
        assert pg.numeric_scaling(schema) == pq.numeric_scaling(schema)
        assert_same_network(BayesNet(seed=0, progress=False).fit(pg, schema), BayesNet(seed=0, progress=False).fit(pq, schema))


def test_dp_ledger_and_noiseless_counts_equal_parquet(postgres, tmp_path):
    url, df = postgres
    df.to_parquet(tmp_path / "trial.parquet")
    with open_table(url, "trial") as pg, DuckDBTable(TableSource(str(tmp_path / "trial.parquet"))) as pq:
        schema = pq.infer_schema(target="arm")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = BayesNet(seed=0, progress=False, privacy=Privacy(epsilon=1.0)).fit(pg, schema)
            b = BayesNet(seed=0, progress=False, privacy=Privacy(epsilon=1.0)).fit(pq, schema)
        assert a.ledger_.state_dict() == b.ledger_.state_dict()
        assert_same_network(a, b)
        counts = [t.state_counts(a.encoder_, a.variables_, a.target_, seed=0, folds=1) for t in (pg, pq)]
        for v in range(len(a.variables_)):
            assert np.array_equal(counts[0].family(v, a.parents_[v]), counts[1].family(v, a.parents_[v]))
        assert counts[0].family(0, a.parents_[0]).sum() == ROWS  # noiseless: every row counted once


def test_numeric_columns_arrive_as_numbers_and_tables_by_schema(postgres):
    url, _ = postgres
    with open_table(url, "cdm.labs") as t:  # schema-qualified; NUMERIC comes from ADBC as text
        assert t.types == {"person_id": "INTEGER", "value_as_number": "DOUBLE", "unit": "VARCHAR"}
        total, = t.query("SELECT sum(value_as_number) FROM src")[0]
        assert total == pytest.approx(sum((i % 97) / 4.0 for i in range(1, 501)))
        copy = Path(t.source._tmp)
        assert copy.exists()
    assert not copy.exists()  # closing the table removes the streamed copy


def test_cli_run_and_fit_end_to_end(postgres, tmp_path):
    url, df = postgres
    out = tmp_path / "release"
    assert main(["run", url, "--table", "trial", "--target", "arm", "--model", "bayesnet", "--n", "300",
                 "--evaluate", "none", "--quiet", "--out", str(out)]) == 0
    manifest = json.loads((out / "steward" / "manifest.json").read_text())
    source = manifest["input"]
    assert source["engine"] == "duckdb" and source["rows"] == ROWS and source["streamed_rows"] == ROWS
    assert source["path"] == url.replace(PASSWORD, "***")
    assert manifest["split"]["n_train"] + manifest["split"]["n_test"] == ROWS
    assert len(pd.read_csv(out / "share" / "synthetic.csv")) == 300
    written = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in written if PASSWORD.encode() in p.read_bytes()]
    # fit under DP: the same model as from a Parquet file of the same rows
    df.to_parquet(tmp_path / "trial.parquet")
    for data, extra, name in ((url, ["--table", "trial"], "a"), (str(tmp_path / "trial.parquet"), ["--engine", "duckdb"], "b")):
        assert main(["fit", data, *extra, "--target", "arm", "--model", "dp-bayesnet", "--epsilon", "1", "--quiet",
                     "--out", str(tmp_path / name)]) == 0
    from clinsynth.models.registry import load

    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert a.n_train_ == b.n_train_ == ROWS
    assert a.ledger_.state_dict() == b.ledger_.state_dict()
    assert_same_network(a, b)


@pytest.mark.parametrize("args, message", [
    (["{url}"], "is a PostgreSQL database: name the table to read with --table"),
    (["{url}", "--table", "measurement"], "database 'postgres' at {server} has no table 'measurement' (its tables: cdm.empty, cdm.labs, cdm.visits, trial)"),
    (["{nodb}", "--table", "trial"], "the PostgreSQL server at {server} has no database 'nodb'"),
    (["{url}", "--table", "trial", "--engine", "pandas"], "is read by DuckDB only"),
    (["{url}", "--table", "cdm.empty"], "'postgresql://postgres:***@{server}/postgres (table cdm.empty)' has no rows"),
    (["{url}", "--table", "cdm.visits"], "column 'visit_date' holds dates, which the DuckDB engine does not read "
                                         "yet; read a view of the table without it, or give a --schema without it "
                                         "(`clinsynth schema URL --table T` writes one to edit)"),
])
def test_clear_one_line_errors(postgres, tmp_path, capsys, args, message):
    url, _ = postgres
    names = {"url": url, "nodb": url.rsplit("/", 1)[0] + "/nodb", "server": server(url)}
    before = _copies()
    assert main(["fit", *[a.format(**names) for a in args], "--quiet", "--out", str(tmp_path / "m")]) != 0
    err = capsys.readouterr()
    text = " ".join((err.out + err.err).split())
    assert message.format(**names) in text
    assert "Traceback" not in text and PASSWORD not in text
    assert not (tmp_path / "m").exists()
    import gc

    gc.collect()
    assert not _copies() - before  # a refused table leaves no temporary copy behind


def _copies() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "clinsynth-postgres-*")))


def test_server_refusing_is_one_line_naming_host_and_port(tmp_path, capsys):
    pytest.importorskip("adbc_driver_postgresql")
    port = _free_port()  # nothing listens there
    url = f"postgresql://clin:{PASSWORD}@127.0.0.1:{port}/omop"
    assert main(["run", url, "--table", "measurement", "--quiet", "--out", str(tmp_path / "r")]) != 0
    err = capsys.readouterr()
    text = " ".join((err.out + err.err).split())
    assert f"cannot connect to the PostgreSQL server at 127.0.0.1:{port} (Connection refused)" in text
    assert "Traceback" not in text and PASSWORD not in text
    assert not (tmp_path / "r").exists()


def test_missing_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "adbc_driver_postgresql.dbapi", None)  # import now raises ImportError
    with pytest.raises(PostgresError, match=r'pip install "clinsynth\[postgres\]"'):
        open_table("postgresql://clin@db.example:5432/omop", "measurement")


def test_mask_hides_every_password():
    assert mask("postgresql://clin:p%40ss@db:5433/omop?sslmode=require") == "postgresql://clin:***@db:5433/omop?sslmode=require"
    assert mask("postgres://db/omop?user=clin&password=x&port=6000") == "postgres://db/omop?user=clin&password=***&port=6000"
    assert server("postgresql:///omop?host=/run/postgresql") == "/run/postgresql:5432"
    assert mask_text("file 'postgresql:/clin:p@ss@db/omop' and postgres://db/x?password=p&a=1, not /a:b@c") == (
        "file 'postgresql:/clin:***@db/omop' and postgres://db/x?password=***&a=1, not /a:b@c")
    assert server("postgresql://clin@db.example/omop") == "db.example:5432"
    source = PostgresSource("postgresql://a:b@h/d", "t")
    assert source.describe() == "postgresql://a:***@h/d (table t)"
    assert repr(source) == "PostgresSource('postgresql://a:***@h/d', table='t')"


def test_a_schema_streams_only_its_columns(postgres, tmp_path, capsys):
    url, df = postgres
    from clinsynth.schema import Schema

    schema = Schema.infer(df.iloc[:, :10], target="arm")
    schema.save(tmp_path / "schema.json")
    with open_table(url, "trial", columns=[c.name for c in schema.columns]) as t:
        assert t.columns == list(df.columns[:10])
    assert main(["fit", url, "--table", "trial", "--schema", str(tmp_path / "schema.json"), "--model", "bayesnet",
                 "--quiet", "--out", str(tmp_path / "m")]) == 0
    assert "rows × 10 columns" in " ".join(capsys.readouterr().err.split())
    wrong = Schema.infer(df.iloc[:, :10].rename(columns={"bmi": "body_mass"}), target="arm")
    wrong.save(tmp_path / "wrong.json")
    assert main(["fit", url, "--table", "trial", "--schema", str(tmp_path / "wrong.json"), "--quiet",
                 "--out", str(tmp_path / "w")]) != 0
    err = capsys.readouterr()
    text = " ".join((err.out + err.err).split())
    assert "table 'trial' of database 'postgres' has no column(s) body_mass that the schema describes" in text


@pytest.mark.parametrize("command", [["run", "{url}", "--codes"], ["schema", "{url}"], ["fit", "{url}", "--engine", "pandas"]])
def test_no_error_prints_a_password(tmp_path, capsys, command):
    """A URL given where a file is expected (or refused) is named without its password."""
    url = f"postgresql://clin:{PASSWORD}@db.example:5432/omop"
    assert main([c.format(url=url) for c in command] + ["--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr()
    assert PASSWORD not in err.out + err.err
    assert "clin:***@db.example" in " ".join((err.out + err.err).split())


def test_schema_command_reads_a_database_table(postgres, tmp_path):
    """`clinsynth schema URL --table t` gives the schema to edit (e.g. to leave out a date column)."""
    from clinsynth.schema import Schema

    url, df = postgres
    df.to_parquet(tmp_path / "trial.parquet")
    assert main(["schema", url, "--table", "trial", "--target", "arm", "--out", str(tmp_path / "s.json")]) == 0
    with DuckDBTable(TableSource(str(tmp_path / "trial.parquet"))) as pq:
        assert Schema.load(tmp_path / "s.json") == pq.infer_schema(target="arm")
    assert main(["schema", url, "--table", "cdm.visits", "--out", str(tmp_path / "v.json")]) == 0
    assert [c.kind for c in Schema.load(tmp_path / "v.json").columns] == ["datetime", "integer"]
