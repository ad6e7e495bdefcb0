"""Tables in and out: CSV and Parquet, every write atomic.

A run that is interrupted must never leave a half-written file where a finished one is expected,
so each writer goes to a temporary file in the same directory and renames it into place.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinsynth.errors import InputError

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; the result gets a normal file's mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def jsonable(obj: Any) -> Any:
    """Numpy scalars and arrays, dataclasses, paths and non-finite floats to what ``json`` writes (NaN → null)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # plain data (a Privacy budget)
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Atomic write through any function that writes to a path (``torch.save``, ``savefig``…)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def table_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"'{path}': unknown table format '{suffix or '(none)'}'; use .csv or .parquet")
    return TABLE_SUFFIXES[suffix]


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, refusing empty files, duplicate headers and non-tables clearly."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"file '{path}' does not exist")
    if path.is_dir():
        raise InputError(f"'{path}' is a directory, not a table file")
    if path.stat().st_size == 0:
        raise InputError(f"file '{path}' is empty")
    fmt = table_format(path)
    if fmt == "parquet":
        _check_flat_parquet(path)
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises many types for a non-parquet file
            raise InputError(f"file '{path}' is not a readable Parquet table ({type(e).__name__}: {e})") from None
    else:
        df = _read_csv(path)
    if df.shape[1] == 0:
        raise InputError(f"file '{path}' has no columns")
    if df.shape[0] == 0:
        raise InputError(f"file '{path}' has a header but no rows")
    return df


def _check_flat_parquet(path: Path) -> None:
    """Refuse struct, list and map columns by their Parquet schema, before reading any row: a
    clinical table here is flat, one value per cell."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:  # not Parquet at all: read_parquet reports it
        return
    nested = [f"column '{f.name}' is nested ({f.type})" for f in schema if pa.types.is_nested(f.type)]
    if nested:
        raise InputError(f"file '{path}': {'; '.join(nested)}; clinsynth reads flat tables: "
                         "flatten each into plain columns (one per field) first")


_DECIMAL_COMMA = re.compile(r"^\s*[+-]?\d+,\d+\s*$")
_DECIMAL_POINT = re.compile(r"^\s*[+-]?\d*\.\d+\s*$")


def _encoding(path: Path) -> str:
    """UTF-8 (a byte-order mark, as spreadsheets write it, dropped), or Windows-1252 for a text
    file that is not UTF-8 — the default export of spreadsheets in Western European locales
    (a name like ``Größe`` made the table "not a text table"). A file with NUL bytes is binary."""
    with open(path, "rb") as fh:
        raw = fh.read(1 << 20)
    if b"\x00" in raw:
        raise InputError(f"file '{path}' is not a text table (it holds NUL bytes; is it a binary file?)")
    try:
        raw.decode("utf-8")
        return "utf-8-sig"
    except UnicodeDecodeError as e:
        if e.start >= len(raw) - 3:  # a character cut by the 1 MiB read
            return "utf-8-sig"
        return "cp1252"


def _dialect(path: Path, encoding: str) -> tuple[str, str]:
    """(separator, decimal mark) of a CSV: ``,`` and ``.``; a tab for ``.tsv``; and the
    spreadsheet export of many European locales — ``;`` between cells, ``,`` in numbers — when
    the header holds no comma but splits on semicolons (read as one column it gave "target column
    'y' is not in the table; columns are: age;sex;bmi;…"). Its numbers use the comma when cells of
    the first rows look like ``4,86`` and none like ``4.86``."""
    if path.suffix.lower() == ".tsv":
        return "\t", "."
    with open(path, newline="", encoding=encoding) as fh:
        head = [line for _, line in zip(range(200), fh)]
    first = head[0] if head else ""
    if "," in first or first.count(";") == 0:
        return ",", "."
    cells = [c for line in head[1:] for c in next(csv.reader([line], delimiter=";"), [])]
    comma = any(_DECIMAL_COMMA.match(c) for c in cells) and not any(_DECIMAL_POINT.match(c) for c in cells)
    return ";", "," if comma else "."


def _read_csv(path: Path) -> pd.DataFrame:
    encoding = _encoding(path)
    try:
        sep, decimal = _dialect(path, encoding)
        with open(path, newline="", encoding=encoding) as fh:
            header = next(csv.reader(fh, delimiter=sep), [])
    except UnicodeDecodeError:
        raise InputError(f"file '{path}' is not a text table (it is not UTF-8 text; is it a binary file?)") from None
    names = [h.strip() for h in header]
    if not any(names):
        raise InputError(f"file '{path}' has no header row")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"file '{path}' has duplicate column names: {', '.join(dupes)}; every column needs a unique name")
    try:
        df = pd.read_csv(path, sep=sep, decimal=decimal, encoding=encoding, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"file '{path}' is not a readable CSV table: {str(e).splitlines()[0]}") from None
    if df.shape[1] == 1 and len(names) == 1 and df.shape[0] > 0:
        # a single column is a legal table, but a single column of prose is not what anyone meant
        first = str(names[0])
        if len(first) > 60 or " " in first.strip() and df.iloc[:, 0].astype(str).str.len().mean() > 60:
            raise InputError(f"file '{path}' does not look like a table (one column, header {first[:40]!r}…)")
    return df


def write_table(df: pd.DataFrame, path: str | Path, *, csv_safe: bool = True) -> Path:
    """Write CSV or Parquet (by suffix) atomically; returns the path written.

    ``csv_safe`` (CSV only, on by default): a text cell or column name that a spreadsheet would
    run as a formula — it begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return —
    is written with a leading ``'`` (OWASP's rule against CSV injection), e.g. ``=HYPERLINK(…)``
    as ``'=HYPERLINK(…)``. Numbers are never touched, neither numeric columns nor text that is a
    plain number such as ``-1`` or ``+2.5`` (a spreadsheet opens those as numbers). Reading such
    a file back gives the quoted text. ``csv_safe=False`` writes every cell as it is; Parquet is
    always written as it is (no spreadsheet runs it).
    """
    path = Path(path)
    fmt = table_format(path)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            frame = csv_safe_frame(df) if csv_safe else df
            # one column: a text cell of spaces alone on its line reads back as a blank line, and
            # its row is lost; quoting every text cell keeps it
            frame.to_csv(tmp, index=False, sep="\t" if path.suffix.lower() == ".tsv" else ",",
                         lineterminator="\r\n" if _has_carriage_return(frame) else "\n",
                         quoting=csv.QUOTE_NONNUMERIC if frame.shape[1] == 1 else csv.QUOTE_MINIMAL)
    return path


def _has_carriage_return(df: pd.DataFrame) -> bool:
    """Whether a text cell or name holds a carriage return. Python's CSV writer quotes a cell only
    for the characters of its line terminator, so with ``\n`` alone a ``\r`` went out bare and
    split the row in two on reading; such tables are written with ``\r\n`` (RFC 4180's)."""
    if any("\r" in str(c) for c in df.columns):
        return True
    for _, s in df.items():
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = pd.Series(s.cat.categories)
        if pd.api.types.is_string_dtype(s.dtype) or s.dtype == object:
            try:
                if s.str.contains("\r", regex=False).fillna(False).to_numpy(dtype=bool).any():
                    return True
            except (AttributeError, TypeError):
                continue
    return False


#: What a spreadsheet runs as a formula when a cell begins with it (OWASP, CSV injection).
FORMULA_START = r"[=+\-@\t\r]"
#: ... unless the whole cell is a plain number, which it opens as that number.
_PLAIN_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


def _formula_mask(s: pd.Series) -> np.ndarray | None:
    """Cells of a text column a spreadsheet would run (True), or None when there are none.

    Two vectorised matches (Arrow's regex engine for Arrow strings): the first character, then
    the plain-number test on the few cells that start like a formula."""
    try:
        starts = s.str.match(FORMULA_START)
    except (AttributeError, TypeError):  # an object column holding no text at all
        return None
    starts = starts.fillna(False).to_numpy(dtype=bool, copy=True)
    if not starts.any():
        return None
    number = s[starts].str.fullmatch(_PLAIN_NUMBER).fillna(False).to_numpy(dtype=bool)
    starts[np.flatnonzero(starts)[number]] = False
    return starts if starts.any() else None


def _quote_column(s: pd.Series) -> pd.Series | None:
    """``s`` with formula cells prefixed by ``'``, or None when nothing needs it."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        categories = s.cat.categories
        if not (pd.api.types.is_string_dtype(categories) or categories.dtype == object):
            return None
        quoted = _quote_column(pd.Series(categories, dtype=object))
        if quoted is None:
            return None
        if quoted.is_unique:  # a category list is short: rename it, not the cells
            return s.cat.rename_categories(quoted.tolist())
        s = s.astype(object)  # '=a' and "'=a" both present: the cells, as text
    elif not (pd.api.types.is_string_dtype(s.dtype) or s.dtype == object):
        return None
    mask = _formula_mask(s)
    if mask is None:
        return None
    out = s.copy()
    out[mask] = "'" + s[mask].astype(str)
    return out


def csv_safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every formula-like text cell and column name quoted (see :func:`write_table`).

    Returns ``df`` itself when nothing needs quoting, else a shallow copy with only the quoted
    columns replaced; the caller's frame is never modified."""
    out = df
    for j, (_, column) in enumerate(df.items()):
        quoted = _quote_column(column)
        if quoted is not None:
            if out is df:
                out = df.copy(deep=False)
            out.isetitem(j, quoted)
    names = _quote_column(pd.Series([str(c) for c in df.columns], dtype=object))
    if names is not None:
        out = out.copy(deep=False) if out is df else out
        out.columns = names.tolist()
    return out


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """A JSON document, or an ``InputError`` that names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} '{path}' does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{what} '{path}' is not valid JSON: {e}") from None
