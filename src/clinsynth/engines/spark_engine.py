"""The Spark engine: the counting models' statistics through Spark SQL, for a table on a cluster.

:class:`SparkTable` is the Spark plumbing of :class:`~clinsynth.engines.table.SqlTable`, which
holds every statistic, written once for DuckDB and Spark in :mod:`clinsynth.engines.sql`'s
:data:`~clinsynth.engines.sql.SPARK` dialect: the same GROUP BY statements run on the executors
and only their aggregates reach the driver. The schema-inference sample is bounded (the rows with
the smallest hash of seed and row id, a top-k per partition), never the whole table.

Rows are numbered as Spark reads them (``monotonically_increasing_id`` within each partition, a
partition's offset from the counts of the ones before it), so the non-DP network's held-out folds
are DuckDB's for one Parquet file; a folder of files may be read in another order, which changes
only which rows fall in which fold. Under DP there are no folds and every count is DuckDB's.

The network's singles and pairs (~190 cells a fit) are counted in one pass on the executors by
numpy (``mapInArrow``, :meth:`SparkTable.cell_counts_many`): Spark SQL can only expand each row into
one row per cell and hash them, 2·10⁸ rows at 10⁶ rows. The executors' Python needs numpy and
pyarrow (pyspark's own Arrow requirements); on a local master it is this interpreter.

Without pyspark or Java, :func:`spark_session` raises :class:`SparkUnavailableError`, one line
naming what to install.
"""
from __future__ import annotations

import os
import shutil
import sys
import uuid
import warnings
from importlib import resources
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from clinsynth.engines import sql
from clinsynth.engines.source import TableSource
from clinsynth.engines.table import SAMPLE_ROWS, SqlTable
from clinsynth.errors import ConfigError, InputError

DEFAULT_MASTER = "local[2]"
INSTALL = "pip install 'clinsynth[spark]'"
#: Spark's simple type names in DuckDB's spelling (what ``sql.as_double`` and the checks read)
_TYPES = {"tinyint": "TINYINT", "smallint": "SMALLINT", "int": "INTEGER", "bigint": "BIGINT", "float": "FLOAT",
          "double": "DOUBLE", "string": "VARCHAR", "boolean": "BOOLEAN", "date": "DATE",
          "timestamp": "TIMESTAMP WITH TIME ZONE", "timestamp_ntz": "TIMESTAMP", "binary": "BLOB", "void": "NULL"}
_ID = "__clinsynth_row"
_PARTITION_BITS = 33
#: statements longer than this (characters) run without code generation: a bucket's or a state's
#: search tree compiles to Java for minutes (a 601-edge grid over 14 columns: 140 s against 19 s
#: interpreted, on 3,000 rows), far more than evaluating it costs on the rows of a count
_INTERPRETED_ABOVE = 8_000
_NO_CODEGEN = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}  # monotonically_increasing_id: partition index above bit 33, row within it below


class SparkUnavailableError(ConfigError):
    """The Spark engine cannot start: pyspark or Java is missing, or the JVM failed."""


def _java() -> str | None:
    """The ``java`` Spark will launch: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def spark_session(master: str | None = None, driver_memory: str = "1g") -> Any:
    """A SparkSession for ``master`` (``local[2]`` by default; an existing active session is
    reused as it is): no web UI, no progress bar, 4 shuffle partitions, Spark's log at ERROR."""
    try:
        with warnings.catch_warnings():  # pyspark warns at import about pandas versions it has not tested
            warnings.simplefilter("ignore", FutureWarning)
            from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailableError(f"--engine spark needs pyspark, which is not installed: {INSTALL} "
                                    "(Spark also needs Java: a JDK 17)") from None
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    if _java() is None:
        raise SparkUnavailableError("--engine spark needs Java, which was not found (no java on PATH, no "
                                    "JAVA_HOME): install a JDK 17 (e.g. apt-get install openjdk-17-jre-headless) "
                                    "or set JAVA_HOME")
    log_config = resources.files("clinsynth.engines") / "spark-log4j2.properties"
    builder = (SparkSession.builder.master(master or DEFAULT_MASTER).appName("clinsynth")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.driver.memory", driver_memory)
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log_config}"))
    if (master or DEFAULT_MASTER).startswith("local"):
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        # the counting workers (``cell_counts_many``) run this interpreter, which has numpy and
        # pyarrow, not the ``python3`` on PATH (pyspark reads only the environment variable)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        session = builder.getOrCreate()
    except Exception as e:  # the JVM did not start: Java too old, no memory, a bad master URL
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SparkUnavailableError(f"Spark did not start on master '{master or DEFAULT_MASTER}' ({first}); "
                                    "check the --spark-master URL and that Java 17 is installed") from None
    session.sparkContext.setLogLevel("ERROR")
    return session


def _duckdb_type(spark_type: str) -> str:
    t = spark_type.lower()
    if t.startswith("decimal"):
        return t.upper()
    if t.startswith(("varchar", "char")):
        return "VARCHAR"
    if t.startswith("array"):
        return f"{t}[]"
    if t.startswith(("struct", "map")):
        return t.upper()
    return _TYPES.get(t, t.upper())


class SparkTable(SqlTable):
    """A table Spark reads (a Parquet or CSV file, a glob of Parquet files, or a Spark DataFrame
    such as ``spark.table("omop.measurement")``), answering the counting models' questions with
    Spark SQL (see the module docstring). ``spark``: the session to use (one is started on
    ``master`` otherwise); the table's views live in it under a name of their own."""

    dialect = sql.SPARK

    def __init__(self, data: TableSource | str | Path | Any, spark: Any = None, master: str | None = None):
        self.spark = spark if spark is not None else (data.sparkSession if _is_dataframe(data)
                                                      else spark_session(master))
        self.prefix = f"clinsynth_{uuid.uuid4().hex[:12]}_"
        if _is_dataframe(data):
            self.source: Any = _FrameSource(data)
            frame = data
        else:
            self.source = (data if isinstance(data, TableSource) else TableSource(str(data))).check()
            frame = self._read(self.source)
        self._states: Any = None
        self.relation = self.view("input")
        frame.createOrReplaceTempView(self.relation)
        self._view("src", f"SELECT * FROM {self.relation}")
        self.types = {name: _duckdb_type(t) for name, t in frame.dtypes}
        self.columns = list(self.types)
        self.n = self.total = self.query(f"SELECT count(*) FROM {self.src}")[0][0]
        if self.n == 0:
            raise InputError(f"'{self.source.describe()}' has no rows")
        nested = [c for c, t in self.types.items() if t.endswith("[]") or t.startswith(("STRUCT", "MAP"))]
        if nested:
            raise InputError(f"'{self.source.describe()}': column '{nested[0]}' is nested ({self.types[nested[0]]}); "
                             "clinsynth reads flat tables: flatten it into plain columns first")
        self.release = None

    def _read(self, source: TableSource) -> Any:
        if source.kind == "duckdb":
            raise InputError(f"'{source.describe()}' is a DuckDB database, which Spark does not read: "
                             "drop --engine spark (DuckDB reads it), or export the table to Parquet")
        try:
            if source.kind == "parquet":
                return self.spark.read.parquet(*source.files)
            sep = "\t" if Path(source.path).suffix.lower() == ".tsv" else ","
            return self.spark.read.csv(source.path, header=True, inferSchema=True, sep=sep)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise InputError(f"'{source.describe()}' is not a readable table ({first})") from None

    # -- plumbing ------------------------------------------------------------------------------
    def query(self, text: str) -> list[tuple[Any, ...]]:
        with self._interpreted(text):
            return [tuple(row) for row in self.spark.sql(text).collect()]

    @contextmanager
    def _interpreted(self, text: str) -> Iterator[None]:
        """Code generation off while a long statement (:data:`_INTERPRETED_ABOVE`) is planned and
        run, the session's own settings restored after."""
        if len(text) <= _INTERPRETED_ABOVE:
            yield
            return
        conf = self.spark.conf
        before = {k: conf.get(k, None) for k in _NO_CODEGEN}
        for k, v in _NO_CODEGEN.items():
            conf.set(k, v)
        try:
            yield
        finally:
            for k, v in before.items():
                conf.unset(k) if v is None else conf.set(k, v)

    def cell_counts_many(self, cells: list[tuple[tuple[int, ...], list[str]]], table: str
                         ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every cell counted in one pass over ``table`` on the executors (``mapInArrow``): each
        partition's rows are binned by numpy into one array per cell, and only the non-zero counts
        (cell number, count) leave it, summed on the driver. Spark SQL could only expand each row
        into one row per cell (~2·10⁸ rows for 190 cells at 10⁶ rows) and hash them, ~50× slower
        here. The executors need numpy and pyarrow only (pyspark's own requirements for Arrow)."""
        if not cells:
            return []
        plan = [(tuple(int(k) for k in shape), list(columns)) for shape, columns in cells]
        needed = sorted({c for _, columns in plan for c in columns if not c.isdigit()})
        # the partitions' counts summed here, not by a GROUP BY: they are aggregates already, and
        # Spark hashes the millions of (cell, count) rows of wide pairs slower than numpy adds them
        got = (self.spark.table(table).select(*needed)
               .mapInArrow(_cell_counter(plan), "q INT, cell BIGINT, k BIGINT").toArrow())
        q, cell, k = (got.column(name).to_numpy() for name in ("q", "cell", "k"))
        out = []
        for i, (shape, _) in enumerate(plan):
            mine = q == i
            total = np.bincount(cell[mine], weights=k[mine].astype(float), minlength=int(np.prod(shape)))
            kept = np.flatnonzero(total)
            out.append((kept.astype(np.int64), total[kept]))
        return out

    def _view(self, name: str, select: str) -> None:
        self.spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW {self.view(name)} AS {select}")

    def _store_states(self, rows: str, columns: str, fold: Callable[[str], str] | None) -> None:
        """The states stored on the executors (a local checkpoint). A row's position: the rows of
        the partitions before its own, plus its number within its partition."""
        numbered = f"(SELECT *, monotonically_increasing_id() AS {_ID} FROM {rows}) AS numbered"
        f = "0"
        if fold is not None:
            part = f"shiftright({_ID}, {_PARTITION_BITS})"
            sizes = sorted(self.query(f"SELECT {part} AS p, count(*) FROM {numbered} GROUP BY p"))
            offsets, start = [], 0
            for p, k in sizes:
                offsets.append(f"WHEN {int(p)} THEN {start}")
                start += int(k)
            within = f"({_ID} & {(1 << _PARTITION_BITS) - 1})"
            f = fold(f"(CASE {part} {' '.join(offsets)} END + {within})")
        self._drop_states()
        # computed now and kept on the executors with its plan cut: every later GROUP BY reads the
        # stored states instead of planning the state expressions again
        text = f"SELECT CAST({f} AS TINYINT) AS f, {columns} FROM {numbered}"
        with self._interpreted(text):
            self._states = self.spark.sql(text).localCheckpoint(eager=True)
        self._states.createOrReplaceTempView(self.view("states"))

    def _drop_states(self) -> None:
        if self._states is not None:
            self._states.unpersist()
            self._states = None

    def sample(self, rows: int = SAMPLE_ROWS, seed: int = 0, view: str = "src") -> pd.DataFrame:
        """The ``rows`` rows with the smallest hash of (seed, row id): a uniform sample, the same
        for the same seed and partitioning, drawn as a top-k on each partition (bounded memory)
        and only then brought to the driver."""
        from pyspark.sql import functions as F

        frame = self.spark.table(self.view(view))
        key = F.xxhash64(F.lit(int(seed)), F.monotonically_increasing_id())
        picked = frame.withColumn(_ID, key).orderBy(_ID).limit(int(rows)).drop(_ID)
        return _to_pandas(picked)

    def close(self) -> None:
        self._drop_states()
        for name in ("held_out", "src", "src_all", "states", "input"):
            self.spark.catalog.dropTempView(self.view(name))


def _cell_counter(plan: list[tuple[tuple[int, ...], list[str]]]) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The function ``mapInArrow`` runs on each partition: per cell ``(shape, columns)`` of
    ``plan``, the counts of its mixed-radix number (``PairCounts.cell``: ``((c₀·n₁ + c₁)·n₂ …``, a
    column named by a digit being that constant), as rows (q, cell, count) of the non-zero counts.
    A closure over numpy and pyarrow alone, so an executor needs no clinsynth."""

    def count(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pyarrow as pa

        totals = [np.zeros(int(np.prod(shape)), dtype=np.int64) for shape, _ in plan]
        for batch in batches:
            n = batch.num_rows
            cols = {name: batch.column(name).to_numpy(zero_copy_only=False).astype(np.int64)
                    for name in batch.schema.names}
            for total, (shape, columns) in zip(totals, plan):
                cell = np.zeros(n, dtype=np.int64)
                for size, name in zip(shape, columns):
                    cell = cell * size + (cols[name] if name in cols else int(name))
                total += np.bincount(cell, minlength=total.size)
        q = np.concatenate([np.full(t.size, i, dtype=np.int32) for i, t in enumerate(totals)])
        cell = np.concatenate([np.arange(t.size, dtype=np.int64) for t in totals])
        k = np.concatenate(totals)
        kept = k > 0
        yield pa.RecordBatch.from_arrays([pa.array(q[kept]), pa.array(cell[kept]), pa.array(k[kept])],
                                         names=["q", "cell", "k"])

    return count


class _FrameSource:
    """A Spark DataFrame given as the input: how messages and the manifest name it."""

    kind = "spark"
    table = None

    def __init__(self, frame: Any):
        self.frame = frame

    def describe(self) -> str:
        return "the Spark DataFrame"

    def manifest(self) -> dict[str, Any]:
        return {"name": "spark-dataframe", "path": None}

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.frame.schema.json().encode()).hexdigest()


def _is_dataframe(data: Any) -> bool:
    return type(data).__module__.startswith("pyspark.") and hasattr(data, "createOrReplaceTempView")


#: Spark's whole-number and flag types as DuckDB's sample gives them in pandas (numpy without gaps,
#: pandas' nullable types with gaps), so a schema inferred from either sample is the same
_PANDAS = {"tinyint": ("int8", "Int8"), "smallint": ("int16", "Int16"), "int": ("int32", "Int32"),
           "bigint": ("int64", "Int64"), "boolean": ("bool", "boolean")}


def _to_pandas(frame: Any) -> pd.DataFrame:
    """A small Spark DataFrame (a bounded sample) as pandas, typed as DuckDB's ``.df()`` types it."""
    rows = frame.collect()
    out = pd.DataFrame.from_records([tuple(r) for r in rows], columns=frame.columns)
    for name, t in frame.dtypes:
        if t in _PANDAS:
            plain, nullable = _PANDAS[t]
            out[name] = out[name].astype(nullable if out[name].isna().any() else plain)
        elif t in ("float", "double") or t.startswith("decimal"):
            out[name] = pd.to_numeric(out[name], errors="coerce").astype("float32" if t == "float" else "float64")
    return out

