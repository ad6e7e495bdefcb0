"""The DuckDB engine: a table read in place, out of core, answering the counting models' questions
with GROUP BY queries — only aggregates come back.

:class:`DuckDBTable` is the DuckDB plumbing of :class:`~clinsynth.engines.table.SqlTable`, which
holds every statistic (written once for DuckDB and Spark): a connection with bounded memory that
spills to a temporary folder, the input as the view ``src``, the schema-inference sample (a
reservoir sample, the same rows for the same seed), and the states table with each row's
position in file order.
"""
from __future__ import annotations

import tempfile
from typing import Any, Callable

import numpy as np
import pandas as pd

from clinsynth.engines import sql
from clinsynth.engines.source import TableSource
from clinsynth.engines.table import SAMPLE_ROWS, ObservedColumn, PairCounts, SqlTable  # noqa: F401 (re-exported)
from clinsynth.errors import InputError


class DuckDBTable(SqlTable):
    """Rows read in place by DuckDB (see the module docstring); ``memory_limit`` bounds the engine's
    own memory, spilling to ``temp_directory`` beyond it."""

    dialect = sql.DUCKDB

    def __init__(self, source: TableSource, memory_limit: str = "1GB", threads: int | None = None,
                 temp_directory: str | None = None):
        import duckdb

        from clinsynth import threads as thread_count

        self.source = source.check()
        self._tmp = tempfile.TemporaryDirectory(prefix="clinsynth-duckdb-") if temp_directory is None else None
        self.con = duckdb.connect(":memory:")
        self.threads = threads or thread_count.count()
        self.con.execute(f"SET threads = {int(self.threads)}")
        self.con.execute(f"SET memory_limit = {sql.text(memory_limit)}")
        self.con.execute(f"SET temp_directory = {sql.text(temp_directory or self._tmp.name)}")
        self.con.execute("SET preserve_insertion_order = true")
        source.attach(self.con)
        self.relation = source.relation()
        try:
            self.con.execute(f"CREATE VIEW src AS SELECT * FROM {self.relation}")
            described = self.con.execute("DESCRIBE src").fetchall()
            self.n = int(self.con.execute("SELECT count(*) FROM src").fetchone()[0])
        except duckdb.Error as e:
            raise InputError(f"'{source.describe()}' is not a readable table ({str(e).splitlines()[0]})") from None
        self.total = self.n  # rows of the input; ``n``: rows learnt from (all, unless some are held out)
        self.types = {row[0]: str(row[1]).upper() for row in described}
        self.columns = list(self.types)
        if self.n == 0:
            raise InputError(f"'{source.describe()}' has no rows")
        nested = [c for c, t in self.types.items() if t.endswith("[]") or t.startswith(("STRUCT", "MAP", "UNION"))]
        if nested:
            raise InputError(f"'{source.describe()}': column '{nested[0]}' is nested ({self.types[nested[0]]}); "
                             "clinsynth reads flat tables: flatten it into plain columns first")
        self.release: Any = None

    # -- plumbing ------------------------------------------------------------------------------
    def query(self, text: str) -> list[tuple[Any, ...]]:
        return self.con.execute(text).fetchall()

    def close(self) -> None:
        self.con.close()
        release = getattr(self.source, "close", None)  # a source that copied its rows (PostgreSQL) removes them
        if release is not None:
            release()
        if self._tmp is not None:
            self._tmp.cleanup()

    def cell_counts(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        got = self.con.execute(text).fetchnumpy()
        return np.asarray(got["cell"], dtype=np.int64), np.asarray(got["k"], dtype=float)

    def _view(self, name: str, select: str) -> None:
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {select}")

    def _store_states(self, rows: str, columns: str, fold: Callable[[str], str] | None) -> None:
        """The states as a temporary table; a row's position is its number in file order (DuckDB
        keeps insertion order)."""
        f = fold("row_number() OVER () - 1") if fold is not None else "0"
        self.con.execute("DROP TABLE IF EXISTS states")
        self.con.execute(f"CREATE TEMP TABLE states AS SELECT CAST({f} AS TINYINT) AS f, {columns} FROM {rows}")

    # -- the sample and the schema --------------------------------------------------------------
    def sample(self, rows: int = SAMPLE_ROWS, seed: int = 0, view: str = "src") -> pd.DataFrame:
        """A reservoir sample of ``rows`` rows (all of them when the table is smaller), the same
        rows for the same seed: drawn on one thread, as DuckDB's repeatable sampling needs."""
        self.con.execute("SET threads = 1")
        try:
            return self.con.execute(
                f"SELECT * FROM {view} USING SAMPLE reservoir({int(rows)} ROWS) REPEATABLE ({int(seed)})").df()
        finally:
            self.con.execute(f"SET threads = {int(self.threads)}")
