"""A table the engine reads in place: a CSV or Parquet file, a glob of Parquet files, or a table
of a DuckDB database file. Opening one checks it exists and names what is wrong in one line."""
from __future__ import annotations

import glob as globbing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinsynth.errors import InputError

#: URL schemes of a PostgreSQL database (read by ``engines/postgres.py``)
SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(data: Any) -> bool:
    """Whether ``data`` names a PostgreSQL database (``postgresql://…`` or ``postgres://…``)."""
    return isinstance(data, str) and data.lower().startswith(SCHEMES)


_FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_DATABASE_SUFFIXES = (".duckdb", ".ddb", ".db")


def quote(name: str) -> str:
    """A SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class TableSource:
    """Where the rows are: ``path`` (a file or a glob), and for a database file its ``table``."""

    path: str
    table: str | None = None

    @property
    def kind(self) -> str:
        """``csv``, ``parquet`` or ``duckdb``."""
        suffix = Path(self.path).suffix.lower()
        if suffix in _FILE_FORMATS:
            return _FILE_FORMATS[suffix]
        return "duckdb" if self.table is not None or suffix in _DATABASE_SUFFIXES else ""

    @property
    def files(self) -> list[str]:
        """The files a glob matches (sorted, the order rows are read in), or the one path."""
        return sorted(globbing.glob(self.path)) if globbing.has_magic(self.path) else [self.path]

    def check(self) -> TableSource:
        """Refuse, in one line, what cannot be read: no such file, no match, an unknown format."""
        if self.kind == "":
            raise InputError(f"'{self.path}': unknown table format '{Path(self.path).suffix or '(none)'}'; "
                             "use .csv, .parquet (a glob of Parquet files too) or a .duckdb file with --table")
        files = self.files
        if globbing.has_magic(self.path):
            if not files:
                raise InputError(f"'{self.path}' matches no file; check the pattern and the folder")
            if self.kind != "parquet":
                raise InputError(f"'{self.path}': a glob reads Parquet files only; name the files .parquet")
        elif not Path(self.path).is_file():
            raise InputError(f"file '{self.path}' does not exist")
        if self.kind == "duckdb" and self.table is None:
            raise InputError(f"'{self.path}' is a DuckDB database: name the table to read with --table")
        if self.kind != "duckdb" and self.table is not None:
            raise InputError(f"--table {self.table!r} reads a DuckDB database file, but '{self.path}' is "
                             f"{self.kind.upper()}; drop --table, or pass a .duckdb file")
        return self

    def relation(self) -> str:
        """The rows as a SQL relation (a DuckDB table function or a table of the attached database)."""
        if self.kind == "parquet":
            return f"read_parquet({text(self.path)})"
        if self.kind == "csv":
            delim = "\\t" if Path(self.path).suffix.lower() == ".tsv" else ","
            return f"read_csv({text(self.path)}, header = true, delim = {text(delim)})"
        return f"source_db.{quote(self.table or '')}"

    def attach(self, con: Any) -> None:
        """Make :meth:`relation` readable on ``con`` (a database file is attached read-only)."""
        if self.kind != "duckdb":
            return
        con.execute(f"ATTACH {text(str(Path(self.path)))} AS source_db (READ_ONLY)")
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'source_db' "
            "UNION SELECT view_name FROM duckdb_views() WHERE database_name = 'source_db'").fetchall()]
        if self.table not in tables:
            listed = ", ".join(sorted(tables)) or "none"
            raise InputError(f"database '{self.path}' has no table '{self.table}' (its tables: {listed}); "
                             "pass one of them with --table")

    def describe(self) -> str:
        return f"{self.path} (table {self.table})" if self.table else self.path


def is_engine_input(path: str | Path, table: str | None = None) -> bool:
    """Whether ``path`` (with ``table``) is read by the engine rather than loaded into pandas: a
    glob, a database file or URL, or any file when a table is named."""
    p = str(path)
    return is_postgres_url(p) or table is not None or globbing.has_magic(p) or Path(p).suffix.lower() in _DATABASE_SUFFIXES
