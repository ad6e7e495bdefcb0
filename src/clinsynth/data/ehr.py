"""EHR code data: patients × codes as a sparse matrix, read from and written back to long format.

Code models (medGAN, corGAN) see a patient as a vector over a vocabulary of diagnosis or
procedure codes: 0/1 ("had the code") or a count ("had it at this many visits"). Real extracts
hold a few to a few dozen codes per patient out of thousands, so the matrix is kept as a
``scipy.sparse.csr_array`` (float32) and only ever made dense a batch of rows at a time
(:meth:`CodeMatrix.batches`).

Long format is one row per (patient, code) with an optional count column::

    patient_id,code,count
    P1,250.01,3
    P1,401.9,1
    P2,V58.61,2

:func:`read_long` turns that into a :class:`CodeMatrix`; :func:`to_long` / :func:`write_long`
turn one back. Rules of :func:`read_long`:

* Codes are compared as text with surrounding whitespace removed (``" 250.1"`` is ``"250.1"``;
  case is kept, ``"v01"`` is not ``"V01"``). From a CSV file the patient and code columns are
  read as text, so ``"038"`` keeps its leading zero and ``"250.10"`` its trailing one. A
  DataFrame or Parquet column of numbers is turned into text as it is (``250.0`` → ``"250"``);
  zeros lost before that cannot be recovered — read codes as text.
* Patient ids keep their type (text ids are stripped); rows are in order of first appearance.
  A patient whose every code is dropped by the filters below keeps an all-zero row, so
  prevalences keep the whole population as denominator. Long format cannot hold a patient with
  no codes, so :func:`to_long` leaves such rows out.
* ``truncate=k`` removes dots and keeps the first ``k`` characters (``"250.01"`` → ``"250"`` for
  ``k=3``, as the medGAN work did with ICD-9), merging the codes that become equal.
* Duplicates of one (patient, code) are summed (rows without a count column count 1 each);
  a count of 0 means "not present". ``binary=True`` clips to 1.
* ``min_count=m`` drops codes present in fewer than ``m`` patients (after truncation).
* ``vocabulary=[...]`` declares the columns instead of reading them from the data: codes outside
  it are dropped, codes in it that never occur are kept as empty columns, in the given order.
  Under differential privacy the vocabulary must come from public knowledge (e.g. the ICD code
  list), never from the data, which is why it cannot be combined with ``min_count > 1``.
* Without a declared vocabulary the columns are the codes in sorted order.

Size: ~610 lines: reading long format in (truncation, minimum counts, vocabulary, the static
columns) is most of it, and its checks are the one-line refusals a steward meets first.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from clinsynth.data.io import read_table, table_format, write_table
from clinsynth.errors import ConfigError, InputError

__all__ = [
    "CodeMatrix",
    "attach_static",
    "read_long",
    "read_vocabulary",
    "to_long",
    "write_long",
    "synthetic_ids",
    "from_dense_rows",
]

#: float32 holds every whole number up to 2**24 exactly; larger summed counts would be rounded.
MAX_EXACT_COUNT = 2**24


@dataclass(frozen=True, eq=False)
class CodeMatrix:
    """Patients × codes, sparse.

    Attributes:
        matrix: ``scipy.sparse.csr_array``, float32, one row per patient, one column per code;
            canonical (sorted indices, no duplicates, no stored zeros). 0/1 when ``binary``,
            otherwise non-negative counts. Treat it as read-only.
        vocabulary: the code of each column, in column order (tuple of str, unique).
        patient_ids: the id of each row, in row order (numpy array, unique).
        binary: whether entries are presence (0/1) rather than counts.
        static: optional ordinary columns per patient (age, sex, …), one row per matrix row in
            the same order, without the id column; with a schema's ``codes`` block this is a
            mixed table (see :func:`attach_static`).

    Any scipy sparse matrix or array is accepted and converted (copied only when it must be).
    """

    matrix: sp.csr_array
    vocabulary: tuple[str, ...]
    patient_ids: np.ndarray
    binary: bool
    static: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        m = self.matrix
        if not sp.issparse(m):
            raise TypeError(f"matrix must be a scipy sparse matrix, got {type(m).__name__}")
        m = sp.csr_array(m, dtype=np.float32)
        try:  # a malformed index structure (e.g. from a buggy generator) would crash scipy later
            m.check_format(full_check=True)
        except ValueError as e:
            raise InputError(f"code matrix is not a valid CSR matrix: {e}") from None
        if m.indptr.dtype != np.int32 and max(m.nnz, *m.shape) < np.iinfo(np.int32).max:
            # scipy keeps int64 indices if any input had them; int32 halves their memory
            m = sp.csr_array((m.data, m.indices.astype(np.int32, copy=False),
                              m.indptr.astype(np.int32, copy=False)), shape=m.shape)
        if not m.has_canonical_format or (m.nnz and not np.all(m.data != 0)):
            m = m.copy()
            m.sum_duplicates()
            m.eliminate_zeros()
        if m.nnz and not np.all(np.isfinite(m.data)):
            raise InputError("code matrix holds NaN or infinite values")
        if m.nnz and m.data.min() < 0:
            raise InputError("code matrix holds negative values; entries are presence (0/1) or counts")
        binary = bool(self.binary)
        if binary and m.nnz and not np.all(m.data == 1):
            raise InputError("binary code matrix holds values other than 0 and 1")
        vocab = tuple(self.vocabulary)
        if not all(isinstance(c, str) for c in vocab):
            raise InputError("vocabulary entries must be strings")
        if len(set(vocab)) != len(vocab):
            dupes = sorted({c for c in vocab if vocab.count(c) > 1})[:5]
            raise InputError(f"vocabulary has duplicate codes: {', '.join(dupes)}")
        ids = np.asarray(self.patient_ids)
        if ids.ndim != 1:
            raise InputError(f"patient_ids must be one-dimensional, got shape {ids.shape}")
        if ids.dtype.kind == "U":  # numpy fixed-width strings: keep python str objects
            ids = ids.astype(object)
        if m.shape != (ids.shape[0], len(vocab)):
            raise InputError(f"matrix shape {m.shape} does not match {ids.shape[0]} patient ids × "
                             f"{len(vocab)} codes")
        if not pd.Index(ids).is_unique:
            dupes = pd.Index(ids)[pd.Index(ids).duplicated()].unique()[:5]
            raise InputError(f"patient ids must be unique; repeated: {', '.join(map(str, dupes))}")
        static = self.static
        if static is not None:
            if not isinstance(static, pd.DataFrame):
                raise InputError(f"static must be a DataFrame, got {type(static).__name__}")
            if len(static) != ids.shape[0]:
                raise InputError(f"static columns have {len(static)} rows for {ids.shape[0]} patients")
            static = static.reset_index(drop=True)
        object.__setattr__(self, "static", static)
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "vocabulary", vocab)
        object.__setattr__(self, "patient_ids", ids)
        object.__setattr__(self, "binary", binary)

    # --- sizes ----------------------------------------------------------------------------------

    @property
    def n_patients(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_codes(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def nnz(self) -> int:
        """Number of (patient, code) entries present."""
        return int(self.matrix.nnz)

    def __len__(self) -> int:
        return self.n_patients

    def __repr__(self) -> str:
        kind = "binary" if self.binary else "counts"
        return (f"CodeMatrix({self.n_patients} patients × {self.n_codes} codes, {kind}, "
                f"{self.nnz} entries)")

    # --- summaries (sparse, never dense) ------------------------------------------------------------

    def prevalence(self) -> np.ndarray:
        """Share of patients with each code (float64, one per column); NaN when there are no patients."""
        if self.n_patients == 0:
            return np.full(self.n_codes, np.nan)
        per_code = np.bincount(self.matrix.indices, minlength=self.n_codes)
        return per_code / self.n_patients

    def codes_per_patient(self) -> np.ndarray:
        """Number of distinct codes of each patient (int64, one per row)."""
        return np.diff(self.matrix.indptr).astype(np.int64)

    # --- access -------------------------------------------------------------------------------------

    def batches(self, batch_size: int, rng: np.random.Generator | int | None = None, *,
                drop_last: bool = False) -> Iterator[np.ndarray]:
        """Dense float32 blocks of at most ``batch_size`` rows; every row once per pass.

        ``rng`` (a ``numpy.random.Generator`` or a seed) shuffles the rows; ``None`` keeps row
        order. Only one block is dense at a time. ``drop_last`` skips a final short block.
        """
        batch_size = _positive_int(batch_size, "batch_size")
        n = self.n_patients
        order = None if rng is None else np.random.default_rng(rng).permutation(n)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if drop_last and stop - start < batch_size:
                return
            block = self.matrix[start:stop] if order is None else self.matrix[order[start:stop]]
            yield block.toarray().astype(np.float32, copy=False)

    def widened_to(self, vocabulary: tuple[str, ...] | list[str]) -> CodeMatrix:
        """The same patients over ``vocabulary`` (a superset of this one, in its order): a code this
        matrix lacks is a column of zeros. A DP release keeps only the codes its noisy counts
        find, and the evaluation compares column by column with the real vocabulary."""
        vocabulary = tuple(vocabulary)
        index = {c: j for j, c in enumerate(vocabulary)}
        extra = [c for c in self.vocabulary if c not in index]
        if extra:
            raise InputError(f"codes not in the vocabulary to widen to: {', '.join(extra[:3])}")
        if vocabulary == self.vocabulary:
            return self
        m = self.matrix
        cols = np.array([index[c] for c in self.vocabulary], dtype=np.int64)[m.indices]
        widened = sp.csr_array((m.data, cols, m.indptr), shape=(m.shape[0], len(vocabulary)))
        return CodeMatrix(widened, vocabulary, self.patient_ids, self.binary, self.static)

    def subset(self, rows) -> CodeMatrix:
        """The patients at ``rows`` (integer positions, a boolean mask or a slice), same vocabulary."""
        if isinstance(rows, slice):
            idx: slice | np.ndarray = rows
        else:
            arr = np.asarray(rows)
            if arr.dtype == bool:
                if arr.shape != (self.n_patients,):
                    raise InputError(f"boolean row mask has length {arr.size}, "
                                     f"expected {self.n_patients}")
                idx = np.flatnonzero(arr)
            elif arr.size == 0:
                idx = np.zeros(0, dtype=np.int64)
            elif arr.dtype.kind in "iu":
                idx = arr.astype(np.int64).ravel()
                if idx.min() < -self.n_patients or idx.max() >= self.n_patients:
                    raise InputError(f"row positions must lie in 0..{self.n_patients - 1}")
            else:
                raise InputError(f"rows must be integer positions, a boolean mask or a slice, "
                                 f"got dtype {arr.dtype}")
        static = None if self.static is None else self.static.iloc[idx]
        return CodeMatrix(self.matrix[idx], self.vocabulary, self.patient_ids[idx], self.binary, static)


def attach_static(codes: CodeMatrix, frame: pd.DataFrame, id_col: str = "patient_id") -> CodeMatrix:
    """Codes plus per-patient ordinary columns (demographics), matched by patient id: a mixed table.

    No patient is lost: one in ``frame`` without any code gets an all-zero code row (long format
    cannot hold such a patient, a demographics table can); one with codes but no row in
    ``frame`` is an error, since its ordinary columns would be invented.
    """
    if id_col not in frame.columns:
        raise InputError(f"the static table has no id column '{id_col}'; columns: {', '.join(map(str, frame.columns[:20]))}")
    ids = frame[id_col]
    if ids.isna().any():
        raise InputError(f"the static table has {int(ids.isna().sum())} rows without a patient id in '{id_col}'")
    if not ids.is_unique:
        raise InputError(f"the static table repeats patient ids in '{id_col}', e.g. {ids[ids.duplicated()].iloc[0]!r}")
    frame_ids = pd.Index(ids.to_numpy(dtype=object))
    code_ids = pd.Index(np.asarray(codes.patient_ids, dtype=object))
    absent = code_ids.difference(frame_ids)
    if len(absent):
        raise InputError(f"{len(absent)} patients with codes have no row in the static table (e.g. {absent[0]!r})")
    extra = frame_ids.difference(code_ids, sort=False)
    matrix, all_ids = codes.matrix, code_ids
    if len(extra):
        matrix = sp.vstack([matrix, sp.csr_array((len(extra), codes.n_codes), dtype=np.float32)], format="csr")
        all_ids = code_ids.append(extra)
    static = frame.drop(columns=[id_col]).iloc[frame_ids.get_indexer(all_ids)]
    return CodeMatrix(matrix, codes.vocabulary, np.asarray(all_ids, dtype=object) if len(extra) else codes.patient_ids,
                      codes.binary, static)


# --- long format in -----------------------------------------------------------------------------

def read_long(
    path_or_frame: str | Path | pd.DataFrame,
    patient_col: str = "patient_id",
    code_col: str = "code",
    count_col: str | None = None,
    binary: bool | None = None,
    truncate: int | None = None,
    min_count: int = 1,
    vocabulary: Sequence[str] | None = None,
) -> CodeMatrix:
    """Read long-format codes ``(patient, code[, count])`` into a :class:`CodeMatrix`.

    Args:
        path_or_frame: a CSV/TSV/Parquet file (read with :func:`clinsynth.data.io.read_table`)
            or a DataFrame.
        patient_col, code_col: the id and code columns.
        count_col: optional column of non-negative counts (e.g. visits); without it each row
            counts 1.
        binary: ``True`` presence (0/1), ``False`` summed counts, ``None`` (default) counts when
            ``count_col`` is given and presence otherwise — decided by the arguments, never by
            the data.
        truncate: keep the first ``truncate`` characters of each code after removing dots.
        min_count: drop codes present in fewer than this many patients.
        vocabulary: declared columns (see the module docstring); incompatible with
            ``min_count > 1``.

    See the module docstring for every rule. Raises :class:`InputError` for missing columns,
    an empty table, missing ids or codes, bad counts or when no code is left.
    """
    if truncate is not None:
        truncate = _positive_int(truncate, "truncate")
    min_count = _positive_int(min_count, "min_count")
    declared = None if vocabulary is None else _declared_vocabulary(vocabulary, truncate)
    if declared is not None and min_count > 1:
        raise ConfigError("min_count > 1 chooses codes from the data, which a declared vocabulary "
                          "exists to avoid; filter the vocabulary itself instead")
    if binary is None:
        binary = count_col is None

    df, source = _load(path_or_frame, [patient_col, code_col], count_col)
    n_rows = len(df)

    # patients: factorize, then normalise only the distinct values
    pat_raw, pat_uniques = pd.factorize(df[patient_col], sort=False)
    pat_norm, pat_blank = _normalise_ids(pd.Index(pat_uniques))
    pat_map, patient_ids = pd.factorize(pat_norm.where(~pat_blank), sort=False)  # blank → -1
    rows = _take(pat_map, pat_raw)
    _refuse_missing(rows < 0, "no patient id", patient_col, n_rows, source)

    # codes
    code_raw, code_uniques = pd.factorize(df[code_col], sort=False)
    code_text = _normalise_codes(pd.Index(code_uniques), truncate)
    code_blank = np.asarray(code_text == "")
    if declared is not None:
        vocab = list(declared)
        code_map = pd.Index(vocab).get_indexer(code_text)  # -1: outside the vocabulary
    else:
        code_map, vocab_index = pd.factorize(code_text.where(~code_blank), sort=True)
        vocab = [str(c) for c in vocab_index]
    code_map = np.where(code_blank, -2, code_map)
    cols = _take(code_map, code_raw, missing=-2)
    _refuse_missing(cols == -2, "no code", code_col, n_rows, source)

    # counts
    if count_col is None:
        counts = np.ones(n_rows, dtype=np.float32)
        keep = cols >= 0
    else:
        counts = _counts(df[count_col], count_col, source)  # float64: sums stay exact
        keep = (cols >= 0) & (counts > 0)
    del df
    n_patients, n_vocab = len(patient_ids), len(vocab)
    if not keep.any():
        if declared is not None and not (cols >= 0).any():
            examples = ", ".join(repr(str(c)) for c in code_text[~code_blank][:3])
            raise InputError(f"{source}: none of the codes in column '{code_col}' is in the declared "
                             f"vocabulary of {n_vocab} codes (table codes e.g. {examples}); "
                             "check the vocabulary's code format (dots, truncation)")
        raise InputError(f"{source}: no codes left: every count in column '{count_col}' is 0")
    if not keep.all():
        counts, rows, cols = counts[keep], rows[keep], cols[keep]
    matrix = sp.coo_array((counts, (rows, cols)), shape=(n_patients, n_vocab)).tocsr()
    del counts, rows, cols, keep
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    if binary:
        matrix.data[:] = 1.0
    elif matrix.data.max() > MAX_EXACT_COUNT:
        raise InputError(f"{source}: a summed count reaches {matrix.data.max():.0f}, more than float32 "
                         f"holds exactly ({MAX_EXACT_COUNT}); rescale the counts")

    if min_count > 1:
        per_code = np.bincount(matrix.indices, minlength=n_vocab)
        kept = per_code >= min_count
        if not kept.any():
            raise InputError(f"{source}: no codes left: min_count={min_count} drops all {n_vocab} codes "
                             f"(the most common is in {per_code.max()} patients)")
        if not kept.all():
            matrix = matrix[:, np.flatnonzero(kept)]
            vocab = [c for c, k in zip(vocab, kept) if k]
    return CodeMatrix(matrix, tuple(vocab), np.asarray(patient_ids.to_numpy()), binary)


def read_vocabulary(path: str | Path) -> list[str]:
    """A declared code list: one code per line (blank lines and ``#`` comments skipped).

    A vocabulary read this way is public knowledge (e.g. the ICD-10 list), so under DP it costs
    nothing — which is only true if the file was not made from the patients' own codes.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"vocabulary file '{path}' does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"vocabulary file '{path}' is not UTF-8 text (one code per line)") from None
    codes = [line.split("#", 1)[0].strip() for line in lines]
    codes = [c for c in codes if c]
    if not codes:
        raise InputError(f"vocabulary file '{path}' lists no code (one code per line)")
    return codes


def _load(path_or_frame, text_cols: list[str], count_col: str | None) -> tuple[pd.DataFrame, str]:
    """The needed columns, ids and codes as text when they come from CSV; and a name for messages."""
    needed = list(dict.fromkeys(text_cols + ([count_col] if count_col is not None else [])))
    if isinstance(path_or_frame, pd.DataFrame):
        df, source, path = path_or_frame, "table", None
    elif isinstance(path_or_frame, (str, Path)):
        path = Path(path_or_frame)
        df, source = read_table(path), f"file '{path}'"
    else:
        raise InputError(f"expected a file path or a DataFrame, got {type(path_or_frame).__name__}")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        have = ", ".join(map(str, list(df.columns)[:20]))
        raise InputError(f"{source}: missing column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(repr(c) for c in missing)}; the table has: {have}")
    if len(df) == 0:
        raise InputError(f"{source} has no rows")
    df = df[needed]
    if path is not None and table_format(path) == "csv":
        numeric = [c for c in text_cols if not pd.api.types.is_string_dtype(df[c].dtype)]
        if numeric:  # pandas parsed ids or codes as numbers: re-read them as written
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            text = pd.read_csv(path, sep=sep, usecols=numeric, dtype=str)
            df = df.assign(**{c: text[c].to_numpy() for c in numeric})
    return df, source


def _normalise_ids(uniques: pd.Index) -> tuple[pd.Index, np.ndarray]:
    """Strip text ids; return them with a mask of ids that are blank after stripping."""
    if pd.api.types.is_string_dtype(uniques.dtype) and uniques.dtype != object:
        norm = uniques.str.strip()
        return norm, np.asarray(norm == "")
    if uniques.dtype == object:
        values = [v.strip() if isinstance(v, str) else v for v in uniques]
        blank = np.array([v == "" for v in values], dtype=bool)
        return pd.Index(values, dtype=object), blank
    return uniques, np.zeros(len(uniques), dtype=bool)


def _normalise_codes(uniques: pd.Index, truncate: int | None) -> pd.Index:
    """Distinct codes as stripped text (numbers written without a spurious '.0'), then truncated."""
    if uniques.dtype.kind == "f":
        text = [str(int(v)) if float(v).is_integer() else str(v) for v in uniques]
    elif uniques.dtype.kind in "iub":
        text = [str(v) for v in uniques]
    else:
        text = [v if isinstance(v, str) else str(v) for v in uniques]
    codes = pd.Index(text, dtype="str").str.strip()
    if truncate is not None:
        codes = codes.str.replace(".", "", regex=False).str[:truncate]
    return codes


def _declared_vocabulary(vocabulary: Sequence[str], truncate: int | None) -> tuple[str, ...]:
    if isinstance(vocabulary, str):
        raise ConfigError("vocabulary must be a list of codes, not one string")
    vocab = []
    for c in vocabulary:
        if not isinstance(c, str):
            raise ConfigError(f"vocabulary entries must be strings, got {c!r}")
        vocab.append(c.strip())
    if not vocab:
        raise ConfigError("the declared vocabulary is empty")
    if "" in vocab:
        raise ConfigError("the declared vocabulary has a blank code")
    seen: set[str] = set()
    dupes = sorted({c for c in vocab if c in seen or seen.add(c)})
    if dupes:
        raise ConfigError(f"the declared vocabulary repeats {', '.join(dupes[:5])}")
    if truncate is not None:
        bad = [c for c in vocab if "." in c or len(c) > truncate]
        if bad:
            raise ConfigError(f"vocabulary code {bad[0]!r} can never match codes truncated to {truncate} "
                              "characters without dots; declare the truncated codes")
    return tuple(vocab)


def _take(mapping: np.ndarray, raw: np.ndarray, missing: int = -1) -> np.ndarray:
    """``mapping[raw]`` (int32) with ``missing`` where ``raw`` is the factorize NA sentinel (-1)."""
    # the sentinel -1 indexes the appended last slot: one pass, no temporaries
    extended = np.append(np.asarray(mapping, dtype=np.int64), missing).astype(np.int32)
    return extended[raw]


def _refuse_missing(bad: np.ndarray, what: str, col: str, n_rows: int, source: str) -> None:
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        first = int(np.argmax(bad)) + 1
        raise InputError(f"{source}: {n_bad} of {n_rows} rows have {what} in column '{col}' "
                         f"(first at data row {first}); fill or drop them")


def _counts(column: pd.Series, col: str, source: str) -> np.ndarray:
    """Counts as float64, refusing missing, non-numeric, non-finite and negative values."""
    missing = column.isna().to_numpy()
    if missing.any():
        raise InputError(f"{source}: {int(missing.sum())} rows have no count in column '{col}' "
                         f"(first at data row {int(np.argmax(missing)) + 1}); counts must be numbers ≥ 0")
    if pd.api.types.is_bool_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64)
    else:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values)
    if bad.any():
        example = column.iloc[int(np.argmax(bad))]
        raise InputError(f"{source}: {int(bad.sum())} rows have a non-numeric count in column '{col}' "
                         f"(e.g. {example!r}); counts must be numbers ≥ 0")
    if not np.isfinite(values).all():
        raise InputError(f"{source}: column '{col}' has infinite counts")
    negative = values < 0
    if negative.any():
        raise InputError(f"{source}: {int(negative.sum())} rows have a negative count in column '{col}' "
                         f"(e.g. {values[negative][0]:g}); counts must be ≥ 0")
    return values


# --- long format out ----------------------------------------------------------------------------

def to_long(codes: CodeMatrix, *, patient_col: str = "patient_id", code_col: str = "code",
            count_col: str = "count") -> pd.DataFrame:
    """One row per present (patient, code), in row then column order; a count column unless binary.

    Counts are int64 when all are whole numbers, float64 otherwise. Patients without codes do
    not appear (long format cannot hold them).
    """
    m = codes.matrix
    rows = np.repeat(np.arange(codes.n_patients, dtype=np.int64), np.diff(m.indptr))
    # arrow takes: no Python object per entry (a million patients hold ~15 million entries)
    columns = {code_col: pa.array(codes.vocabulary, type=pa.string()).take(pa.array(m.indices))}
    if not codes.binary:
        counts = m.data.astype(np.float64)
        columns[count_col] = counts.astype(np.int64) if np.all(counts == np.round(counts)) else counts
    frame = pa.table(columns).to_pandas()
    ids = codes.patient_ids
    try:
        base = pa.array(ids, type=pa.string()) if ids.dtype == object else pa.array(ids)
        id_column = pa.table({patient_col: base.take(pa.array(rows))}).to_pandas()[patient_col]
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # ids of mixed types: kept as Python objects
        id_column = pd.Series(ids[rows], dtype=object)
    frame.insert(0, patient_col, id_column)
    return frame


def write_long(codes: CodeMatrix, path: str | Path, *, csv_safe: bool = True, **names: str) -> Path:
    """Write :func:`to_long` to CSV or Parquet (by suffix) atomically; returns the path.

    ``csv_safe``: codes and ids a spreadsheet would run as formulas get a leading ``'`` in CSV
    (see :func:`clinsynth.data.io.write_table`)."""
    table_format(path)  # refuse an unknown suffix before doing any work
    return write_table(to_long(codes, **names), path, csv_safe=csv_safe)


# --- generated patients -------------------------------------------------------------------------

def synthetic_ids(n: int, prefix: str = "syn", *, start: int = 1,
                  avoid: Iterable | None = None) -> np.ndarray:
    """``n`` new ids ``"<prefix>-000001"``, … (object array of str), unique by construction.

    Synthetic patients never carry a real patient's id. ``avoid`` (e.g. the real ids) makes a
    clash an error instead of a silent coincidence.
    """
    n = int(n)
    if n < 0:
        raise ConfigError(f"n must be ≥ 0, got {n}")
    if not isinstance(prefix, str) or not prefix.strip() or prefix != prefix.strip():
        raise ConfigError(f"prefix must be a non-blank string without surrounding spaces, got {prefix!r}")
    start = int(start)
    width = max(6, len(str(start + n - 1)))
    ids = np.array([f"{prefix}-{i:0{width}d}" for i in range(start, start + n)], dtype=object)
    if avoid is not None and n:
        clash = pd.Index(ids).intersection(pd.Index(np.asarray(list(avoid), dtype=object)))
        if len(clash):
            raise ConfigError(f"synthetic id {clash[0]!r} is also a real id; choose another prefix")
    return ids


def from_dense_rows(rows: np.ndarray | Iterable[np.ndarray], vocabulary: Sequence[str], binary: bool,
                    prefix: str = "syn") -> CodeMatrix:
    """A :class:`CodeMatrix` of generated patients from dense rows, with new ids (:func:`synthetic_ids`).

    ``rows`` is one 2-D array or an iterable of 2-D blocks (e.g. a generator sampling a batch at a
    time): each block is made sparse before the next is read, so memory stays bounded by one block
    plus the sparse result. Binary rows must hold exactly 0 and 1 (sample or threshold first);
    count rows must be finite and ≥ 0.
    """
    vocab = tuple(vocabulary)
    blocks = [rows] if isinstance(rows, np.ndarray) else rows
    indptr_parts = [np.zeros(1, dtype=np.int64)]
    index_parts, data_parts = [], []
    n_rows = nnz = 0
    for i, block in enumerate(blocks):
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != len(vocab):
            raise InputError(f"block {i}: expected rows × {len(vocab)} codes, got shape {block.shape}")
        if block.dtype.kind not in "biuf":
            raise InputError(f"block {i}: expected numbers, got dtype {block.dtype}")
        block = np.ascontiguousarray(block)
        # a 1-D scan of the flat block is ~7× a 2-D np.nonzero on sparse rows; its row-major order
        # keeps rows sorted and columns sorted within a row
        flat = np.flatnonzero(block if block.dtype == bool else block != 0)
        r, c = np.divmod(flat, block.shape[1])
        values = block.ravel()[flat].astype(np.float64)
        if not np.isfinite(values).all():
            raise InputError(f"block {i}: rows hold NaN or infinite values")
        if binary and not np.all(values == 1):
            bad = values[values != 1][0]
            raise InputError(f"block {i}: binary rows must hold only 0 and 1 (found {bad:g}); "
                             "sample or threshold the model's output first")
        if values.size and values.min() < 0:
            raise InputError(f"block {i}: counts must be ≥ 0 (found {values.min():g})")
        per_row = np.bincount(r, minlength=block.shape[0])
        indptr_parts.append(nnz + np.cumsum(per_row))
        index_parts.append(c.astype(np.int32))
        data_parts.append(values.astype(np.float32))
        n_rows += block.shape[0]
        nnz += r.size
    indptr = np.concatenate(indptr_parts)
    if max(nnz, n_rows) < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    indices = np.concatenate(index_parts) if index_parts else np.zeros(0, dtype=np.int32)
    data = np.concatenate(data_parts) if data_parts else np.zeros(0, dtype=np.float32)
    matrix = sp.csr_array((data, indices, indptr), shape=(n_rows, len(vocab)))
    return CodeMatrix(matrix, vocab, synthetic_ids(n_rows, prefix), binary)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a whole number ≥ 1, got {value!r}")
    return int(value)
