"""Which engine reads an input: the rule, in one place, for the CLI and the Python API.

``engine="spark"`` reads a Parquet or CSV file (or a glob of Parquet files) through Spark SQL
(``engines.spark_engine``; ``spark_master`` names the cluster, ``local[2]`` by default).
``engine="duckdb"`` always reads through DuckDB; ``"pandas"`` loads the table into memory (refused
for a glob or a database, which only the engine reads). ``"auto"`` (the default) uses DuckDB for a
glob of Parquet files, a database file (``--table``), and a file of at least
:data:`AUTO_BYTES` when the model learns from counts alone — below that, the in-memory path is as
fast and gives every model the same split and inference it always had. A PostgreSQL URL is
always read through DuckDB (``engines.postgres``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from clinsynth.engines.source import TableSource, is_engine_input
from clinsynth.errors import ConfigError

ENGINES = ("auto", "pandas", "duckdb", "spark")
AUTO_BYTES = 256 << 20
COUNTING_MODELS = ("bayesnet", "dp-bayesnet")


def wants_engine(data: str | Path, table: str | None, engine: str, model: str) -> bool:
    """Whether ``data`` is read through DuckDB (see the module docstring)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    engine_only = is_engine_input(data, table)
    if engine == "spark":
        from clinsynth.engines.source import is_postgres_url

        if is_postgres_url(str(data)):
            raise ConfigError(f"'{_shown(data)}' is read through DuckDB (ADBC), not Spark: drop --engine spark")
        return True
    if engine == "pandas":
        if engine_only:
            raise ConfigError(f"'{_shown(data)}'{' --table ' + table if table else ''} is read by DuckDB only "
                              "(a glob or a database table): drop --engine pandas")
        return False
    if engine == "duckdb" or engine_only:
        return True
    counting = model in COUNTING_MODELS
    try:
        return counting and Path(data).stat().st_size >= AUTO_BYTES
    except OSError:
        return False


def _shown(data: str | Path) -> str:
    from clinsynth.engines.postgres import is_postgres_url, mask

    return mask(str(data)) if is_postgres_url(str(data)) else str(data)


def engine_model(model: str) -> str:
    """The model an engine input fits: a counting model; ``auto`` means ``bayesnet``."""
    if model == "auto":
        return "bayesnet"
    if model not in COUNTING_MODELS:
        raise ConfigError(f"model '{model}' learns from the rows themselves and needs the table in memory; "
                          f"through DuckDB only {' and '.join(COUNTING_MODELS)} fit (or pass --engine pandas "
                          "with a CSV/Parquet file)")
    return model


def open_table(data: str | Path, table: str | None = None, columns: list[str] | None = None,
               engine: str = "duckdb", spark: Any = None, spark_master: str | None = None, **options: Any) -> Any:
    """The engine's view of ``data``. DuckDB (the default): a file, a glob, a DuckDB database file
    or a PostgreSQL URL (``postgresql://user@host:port/db``, streamed into DuckDB once: only
    ``columns`` when a schema names them; a file is read in place, so they need no say there);
    with a database, its ``table``. ``engine="spark"``: a file or glob, or a Spark DataFrame, read
    by the SparkSession ``spark`` (or one started on ``spark_master``). Checked: a missing file,
    table, driver, server, pyspark or Java is one clear line."""
    from clinsynth.engines.duckdb_engine import DuckDBTable
    from clinsynth.engines.postgres import PostgresSource, is_postgres_url

    if engine == "spark":
        from clinsynth.engines.spark_engine import SparkTable

        if table is not None:
            raise ConfigError(f"--table {table!r} names a table of a DuckDB or PostgreSQL database, which Spark does "
                              "not read here: pass a Parquet file or glob (or, in Python, spark.table(name))")
        if not isinstance(data, (str, Path)):
            return SparkTable(data, spark=spark, master=spark_master)
        return SparkTable(TableSource(str(data)), spark=spark, master=spark_master)
    if is_postgres_url(str(data)):
        source: Any = PostgresSource(str(data), table, tuple(columns) if columns is not None else None)
    else:
        source = TableSource(str(data), table)
    return DuckDBTable(source, **options)


def source_info(data: str | Path, table: str | None, source: Any) -> dict[str, Any]:
    """The input as the manifest names it (a database URL without its password) and its fingerprint."""
    named = source.manifest() if hasattr(source, "manifest") else {
        "name": Path(str(data)).name, "path": str(data), **({"table": table} if table else {})}
    return {**named, "fingerprint": source_fingerprint(source)}


def source_fingerprint(source: Any) -> str:
    """What ties a run to its input without reading every row: each file's path, size and time (a
    source that copied its rows, PostgreSQL, gives its own)."""
    if hasattr(source, "fingerprint"):
        return source.fingerprint()
    parts = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in source.files]
    return hashlib.sha256(json.dumps([parts, source.table]).encode()).hexdigest()
