"""A PostgreSQL table as the DuckDB engine's input, read through ADBC.

DuckDB's own postgres scanner is an extension downloaded at run time, which a hospital's network
(and our CI) often cannot reach; the ADBC driver is a wheel (``pip install "clinsynth[postgres]"``).
:class:`PostgresSource` is a :class:`~clinsynth.engines.source.TableSource` for the engine: on
``attach`` it streams the table once, as Arrow record batches, into a DuckDB table in a temporary
database file (memory bounded by a batch and DuckDB's ``memory_limit``, not by the rows), and from
then on :class:`~clinsynth.engines.duckdb_engine.DuckDBTable` reads that copy as it reads any
database table — every count is computed in DuckDB, only aggregates leave it. The server is asked
for one ``SELECT`` of the table and the list of its tables, nothing else.

A password in the URL never appears in a message, the manifest or the fingerprint (:func:`mask`).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from clinsynth.engines.source import SCHEMES, is_postgres_url, quote, text  # noqa: F401 (re-exported)
from clinsynth.errors import InputError

DEFAULT_PORT = 5432
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
#: PostgreSQL types ADBC hands over as text (an opaque Arrow extension) that are numbers: read as DOUBLE
_NUMERIC_TYPES = ("numeric", "money")


class PostgresError(InputError):
    """A PostgreSQL input that cannot be read: driver, server, database or table."""


def mask(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        if ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{host}"
    query = "&".join(("password=***" if q.lower().startswith("password=") else q)
                     for q in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_SECRET = re.compile(r"(postgres(?:ql)?:/+[^:/@\s'\"]*:)[^\s'\"]+@|(password=)[^&\s'\"]+", re.IGNORECASE)


def mask_text(message: str) -> str:
    """``message`` with the password of any PostgreSQL URL in it masked — the last guard for a URL
    given where a file was expected (a path keeps it, as ``postgresql:/user:pw@…``)."""
    return _SECRET.sub(lambda m: (m.group(1) + "***@") if m.group(1) else m.group(2) + "***", message)


def server(url: str) -> str:
    """``host:port`` of ``url`` as libpq reads it (``localhost`` and 5432 when absent)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or ["localhost"])[0]
    try:
        port = parts.port or int((query.get("port") or [DEFAULT_PORT])[0])
    except ValueError:
        port = DEFAULT_PORT
    return f"{host}:{port}"


def database(url: str) -> str:
    """The database ``url`` names (libpq's default: the user's name)."""
    parts = urlsplit(url)
    return unquote(parts.path.lstrip("/")) or (parse_qs(parts.query).get("dbname") or [parts.username or "postgres"])[0]


def _driver() -> Any:
    try:
        import adbc_driver_postgresql.dbapi as dbapi
    except ImportError:
        raise PostgresError('reading a PostgreSQL table needs the ADBC PostgreSQL driver, which is not installed: '
                            'pip install "clinsynth[postgres]"') from None
    return dbapi


def _reason(error: Exception, url: str) -> str:
    """libpq's one-line reason, without the driver's prefixes (and never the password)."""
    message = str(error).strip()
    message = message.split("failed: ", 1)[-1] if "failed: " in message else message.split("] ", 1)[-1]
    message = message.replace("FATAL:  ", "").splitlines()[0].strip()
    password = urlsplit(url).password
    return message.replace(password, "***") if password else message


@dataclass(repr=False)
class PostgresSource:
    """The table ``table`` (``name`` or ``schema.name``) of the PostgreSQL database at ``url``;
    with ``columns`` (a schema's), only those are streamed."""

    url: str
    table: str | None = None
    columns: tuple[str, ...] | None = None
    batch_bytes: int = 16 << 20  # ADBC's batch size hint: what one streamed batch holds in memory
    rows: int = field(default=0, init=False)         # rows copied
    seconds: float = field(default=0.0, init=False)  # time the copy took
    content: str = field(default="", init=False)     # an order-free hash of the copied rows
    _tmp: Any = field(default=None, init=False, repr=False)
    _cleanup: Any = field(default=None, init=False, repr=False)

    kind = "postgres"

    @property
    def files(self) -> list[str]:
        return []

    def describe(self) -> str:
        return f"{mask(self.url)} (table {self.table})" if self.table else mask(self.url)

    def __repr__(self) -> str:  # a traceback (--debug) or a log shows the URL masked too
        return f"PostgresSource({mask(self.url)!r}, table={self.table!r})"

    def check(self) -> PostgresSource:
        """Refuse, in one line, a URL without ``--table`` or without the driver (before connecting)."""
        if not self.table:
            raise PostgresError(f"'{mask(self.url)}' is a PostgreSQL database: name the table to read with --table")
        _driver()
        return self

    def connect(self) -> Any:
        """An ADBC connection, or one line naming the server (or database) and libpq's reason."""
        dbapi = _driver()
        try:
            return dbapi.connect(self.url)
        except dbapi.Error as e:
            reason = _reason(e, self.url)
            if "does not exist" in reason and "database" in reason:
                raise PostgresError(f"the PostgreSQL server at {server(self.url)} has no database "
                                    f"'{database(self.url)}'; fix the database name in the URL") from None
            raise PostgresError(f"cannot connect to the PostgreSQL server at {server(self.url)} ({reason}); start "
                                "the server or fix the host, port, user or password in the URL") from None

    def tables(self, con: Any) -> list[tuple[str, str]]:
        """The (schema, name) of every table and view outside the system schemas."""
        with con.cursor() as cur:
            cur.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN "
                        f"({', '.join(text(s) for s in _SYSTEM_SCHEMAS)}) ORDER BY 1, 2")
            return [(str(s), str(t)) for s, t in cur.fetchall()]

    def resolve(self, con: Any) -> tuple[str, str]:
        """The schema and name ``table`` means: exact first, then as PostgreSQL folds an unquoted
        name (lower case); an unqualified name found in several schemas must be qualified."""
        name = self.table or ""
        found = self.tables(con)
        schema, _, bare = name.rpartition(".")
        for fold in (lambda s: s, str.lower):
            hits = [(s, t) for s, t in found if t == fold(bare) and (not schema or s == fold(schema))]
            if len(hits) > 1:
                hits = [h for h in hits if h[0] == "public"] or hits
            if len(hits) > 1:
                listed = ", ".join(f"{s}.{t}" for s, t in hits)
                raise PostgresError(f"table '{name}' is in several schemas of database '{database(self.url)}' "
                                    f"({listed}); pass --table schema.{bare}")
            if hits:
                return hits[0]
        listed = ", ".join(t if s == "public" else f"{s}.{t}" for s, t in found) or "none"
        raise PostgresError(f"database '{database(self.url)}' at {server(self.url)} has no table '{name}' "
                            f"(its tables: {listed}); pass one of them with --table")

    def relation(self) -> str:
        return f"source_db.{quote('rows')}"

    def attach(self, duck: Any) -> None:
        """Stream the table into ``source_db.rows`` of a temporary DuckDB file attached to ``duck``."""
        self._tmp = tempfile.mkdtemp(prefix="clinsynth-postgres-")
        # removed by close(), or when the source is dropped (a table the engine then refuses never gets a close())
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        try:
            duck.execute(f"ATTACH {text(self._tmp + '/copy.duckdb')} AS source_db")
            start = time.perf_counter()
            con = self.connect()
            try:
                schema, name = self.resolve(con)
                wanted = self._wanted(con, schema, name)
                with con.cursor() as cur:
                    cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(self.batch_bytes)})
                    cur.execute(f"SELECT {wanted} FROM {quote(schema)}.{quote(name)}")
                    reader = cur.fetch_record_batch()
                    columns = ", ".join(self._column(f) for f in reader.schema)
                    duck.register("postgres_stream", reader)
                    duck.execute(f"CREATE TABLE {self.relation()} AS SELECT {columns} FROM postgres_stream")
                    duck.unregister("postgres_stream")
            finally:
                con.close()
            self.seconds = time.perf_counter() - start
            self.rows = int(duck.execute(f"SELECT count(*) FROM {self.relation()}").fetchone()[0])
            every = ", ".join(quote(f.name) for f in reader.schema)
            digest = duck.execute(f"SELECT sum(hash({every})::HUGEINT) FROM {self.relation()}").fetchone()[0]
            self.content = str(digest)
        except BaseException:
            self.close()
            raise

    def _wanted(self, con: Any, schema: str, name: str) -> str:
        """The select list: every column, or the ``columns`` asked for (each must exist)."""
        if self.columns is None:
            return "*"
        with con.cursor() as cur:
            cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                        f"{text(schema)} AND table_name = {text(name)}")
            present = {str(r[0]) for r in cur.fetchall()}
        absent = [c for c in self.columns if c not in present]
        if absent:
            raise PostgresError(f"table '{self.table}' of database '{database(self.url)}' has no column(s) "
                                f"{', '.join(absent)} that the schema describes; pass the table the schema was made for")
        return ", ".join(quote(c) for c in self.columns)

    @staticmethod
    def _column(field_: Any) -> str:
        """A streamed column as DuckDB keeps it: numbers PostgreSQL sends as text become DOUBLE."""
        meta = {k.decode(): v.decode() for k, v in (field_.metadata or {}).items()}
        if meta.get("POSTGRESQL:type") in _NUMERIC_TYPES:
            return f"CAST({quote(field_.name)} AS DOUBLE) AS {quote(field_.name)}"
        return quote(field_.name)

    def fingerprint(self) -> str:
        """What ties a run to its input: the server, database and table (no password), the row count
        and a hash of the rows' values (order-free)."""
        key = [server(self.url), database(self.url), self.table, self.rows, self.content]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def manifest(self) -> dict[str, Any]:
        """The input as the manifest names it (the URL masked)."""
        return {"name": f"{database(self.url)}.{self.table}", "path": mask(self.url), "table": self.table,
                "via": "PostgreSQL through ADBC, copied into a temporary DuckDB file",
                "streamed_rows": self.rows, "streamed_seconds": round(self.seconds, 3)}

    def close(self) -> None:
        """Remove the temporary copy."""
        if self._tmp is not None:
            self._cleanup()
            self._tmp = None
