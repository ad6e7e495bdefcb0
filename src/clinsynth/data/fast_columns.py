"""The fast column path: compiled loops, Arrow buffers and pandas blocks (see :mod:`.columns`).

Each step gives what :class:`~clinsynth.data.columns.PlainColumns` gives, to the bit, in less
time per draw:

* text columns: numba loops write the label bytes straight from the category codes into Arrow
  buffers (no Python strings, no int64 copy of the codes), wrapped as pandas strings without a cast;
* Arrow memory from one process-wide pool (the system allocator; see :data:`SAMPLE_POOL`);
* numeric columns: clip, round and blank in one compiled pass;
* the frame: pandas' block constructor on the float block the columns were decoded into, matched
  by array address, instead of a constructor that validates and copies every column.

Used only through :func:`~clinsynth.data.columns.column_paths`; numba is optional (the ``fast``
extra) and compiles lazily (:mod:`clinsynth.compiled`).
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from clinsynth.compiled import compile_loops
from clinsynth.data.columns import Rounding

try:  # pandas >= 3: a frame from ready-made blocks
    from pandas.api.internals import create_dataframe_from_blocks
except ImportError:  # pragma: no cover - pandas 2
    create_dataframe_from_blocks = None


def _finish_numeric(x, lo, hi, mode, factor, missing, blank):  # pragma: no cover (compiled)
    """:meth:`FastColumns.finish_numeric`: ``x`` clipped, rounded (``mode`` 1: to whole numbers, 2:
    to 1/factor, as ``np.round`` computes them) and NaN where ``missing`` or ``blank`` (nonzero;
    empty: none), in place.

    In place rather than into a second array: a loop reading one array and writing another that
    may overlap it is not vectorised (1.6x slower on 31 columns of 20,000 rows). Every row is
    computed and the NaN chosen after, not branched to: where a sixth of the values are missing, a
    branch mispredicts often enough to double the pass."""
    with_missing, with_blank = missing.shape[0] > 0, blank.shape[0] > 0
    for i in range(x.shape[0]):
        v = x[i]
        if v < lo:
            v = lo
        if v > hi:
            v = hi
        if mode == 1:
            v = np.rint(v)
        elif mode == 2:
            v = np.rint(v * factor) / factor
        gone = (with_missing and missing[i] != 0) or (with_blank and blank[i] != 0)
        x[i] = np.nan if gone else v


#: Arrow memory for decoded columns: the system allocator, not Arrow's default mimalloc pool, whose
#: first large buffers in a process stalled a cold draw by ~4.5 ms (a fresh process's first
#: 20,000-row FLCHAIN draw: 7 ms in 5 of 12 processes, else 2.9; from this pool 2.4-3.1 in 12 of 12).
SAMPLE_POOL = pa.system_memory_pool()


def arrow_text(loops: tuple[Any, ...], index: np.ndarray, labels: tuple[str, ...],
               missing: np.ndarray | None = None) -> pa.Array:
    """``labels[index]`` as an Arrow large-string array (null where ``missing``), without Python strings.

    ``index`` outside ``[0, len(labels))`` is clipped into it (the missing slot reads as the last
    label, under a null). One compiled pass writes the bytes straight from the codes, whatever their
    integer type: no int64 copy of the index, no gather temporaries — each a fresh array whose first
    touch costs page faults. ``loops``: the compiled :func:`_label_offsets`, :func:`_label_bytes`,
    :func:`_label_words` and :func:`_label_packed`.
    """
    table = _label_table(labels)
    n = len(index)
    validity = None if missing is None else pa.py_buffer(np.packbits(~missing, bitorder="little"))
    nulls = 0 if missing is None else int(missing.sum())
    offsets_of, write_bytes, write_words, write_packed = loops
    if table.words is not None:  # each label one machine word: a plain gather of words
        data = np.empty(n, dtype=table.words.dtype)
        write_words(index, table.words, data)
        return pa.LargeStringArray.from_buffers(n, _fixed_offsets(n, table.width), pa.py_buffer(data), validity, nulls)
    if table.packed is not None:  # labels of up to 8 bytes: packed into words, one pass
        offsets_array = np.empty(n + 1, dtype=np.int64)
        words = np.empty(n * int(table.lengths.max()) // 8 + 1, dtype=np.uint64)
        total = int(write_packed(index, table.packed, table.lengths, offsets_array, words))
        data_buffer = pa.py_buffer(words.view(np.uint8)[:total])
        return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets_array), data_buffer, validity, nulls)
    if table.width:
        offsets, total = _fixed_offsets(n, table.width), n * table.width
    else:
        offsets_array = np.empty(n + 1, dtype=np.int64)
        total = int(offsets_of(index, table.lengths, offsets_array))
        offsets = pa.py_buffer(offsets_array)
    data = np.empty(total, dtype=np.uint8)
    write_bytes(index, table.blob, table.starts, table.lengths, data)
    return pa.LargeStringArray.from_buffers(n, offsets, pa.py_buffer(data), validity, nulls)


#: label byte width -> the unsigned word that holds one label ("0", "no", "1995"): one load and
#: one store a row instead of a byte loop (7x faster for four-byte labels)
_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@dataclass(frozen=True)
class _LabelTable:
    """A column's labels as the byte tables the writers read: built once per label list, not per
    draw (encoding, lengths and word tables cost ~20 µs a column, a tenth of a small draw)."""

    encoded: tuple[bytes, ...]
    width: int                    # the labels' common byte length; 0 if they differ (or are all empty)
    lengths: np.ndarray           # int64 byte length of each label
    starts: np.ndarray            # int64 offset of each label in ``blob``
    blob: np.ndarray              # uint8: the labels back to back
    words: np.ndarray | None      # one width of 1, 2, 4 or 8 bytes: each label as one such word
    packed: np.ndarray | None     # else, labels of at most 8 bytes: each zero-padded in a
                                  # little-endian uint64 (None on a big-endian machine)


@functools.lru_cache(maxsize=256)
def _label_table(labels: tuple[str, ...]) -> _LabelTable:
    encoded = tuple(label.encode() for label in labels)
    joined = b"".join(encoded)
    lengths = np.array([len(b) for b in encoded], dtype=np.int64)
    width = len(encoded[0]) if encoded and all(len(b) == len(encoded[0]) for b in encoded) else 0
    words = np.frombuffer(joined, dtype=_WORDS[width]) if width in _WORDS else None
    packed = None
    if words is None and encoded and lengths.max() <= 8 and sys.byteorder == "little":
        packed = np.array([int.from_bytes(b, "little") for b in encoded], dtype=np.uint64)
    return _LabelTable(encoded, width, lengths, np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
                       np.frombuffer(joined or b"\0", dtype=np.uint8), words, packed)


def _label_offsets(index, lengths, offsets):  # pragma: no cover (compiled)
    """Arrow offsets of ``labels[index]`` (index clipped into the labels); returns the byte total."""
    last, total = lengths.shape[0] - 1, 0
    offsets[0] = 0
    for i in range(index.shape[0]):
        total += lengths[min(max(np.int64(index[i]), 0), last)]
        offsets[i + 1] = total
    return total


def _label_bytes(index, blob, starts, lengths, data):  # pragma: no cover (compiled)
    """The bytes of ``labels[index]``, back to back (index clipped into the labels)."""
    last, at = lengths.shape[0] - 1, 0
    for i in range(index.shape[0]):
        label = min(max(np.int64(index[i]), 0), last)
        start, size = starts[label], lengths[label]
        for k in range(size):
            data[at + k] = blob[start + k]
        at += size


def _label_words(index, table, data):  # pragma: no cover (compiled)
    """``data[i] = table[index[i]]`` (index clipped into the table), for labels of one word each."""
    last = table.shape[0] - 1
    for i in range(index.shape[0]):
        data[i] = table[min(max(np.int64(index[i]), 0), last)]


def _label_packed(index, packed, lengths, offsets, words):  # pragma: no cover (compiled)
    """Offsets and bytes of ``labels[index]`` (index clipped) in one pass, for labels of at most 8
    bytes: each label's word is shifted into a 64-bit accumulator that is stored whole, so a row
    costs one word store instead of a loop over its bytes (5x faster for "no"/"yes"). Returns the
    byte total; ``words`` needs ``n · longest // 8 + 1`` entries."""
    last, at, j, bit = lengths.shape[0] - 1, 0, 0, 0
    acc = np.uint64(0)
    offsets[0] = 0
    for i in range(index.shape[0]):
        label = min(max(np.int64(index[i]), 0), last)
        word, size = packed[label], lengths[label]
        acc |= word << np.uint64(bit)
        words[j] = acc  # stored every row: no branch on whether the word is full
        spill = (word >> np.uint64(1)) >> np.uint64(63 - bit)  # its bytes past this word (shifts < 64)
        bit += 8 * size
        if bit >= 64:
            j += 1
            acc = spill
            bit -= 64
        at += size
        offsets[i + 1] = at
    words[j] = acc
    return at


@functools.lru_cache(maxsize=8)
def _fixed_offsets(n: int, width: int) -> pa.Buffer:
    """Offsets 0, width, 2·width … for ``n`` labels: immutable, so one buffer serves every column
    (and draw) of that length — instead of a fresh array, and its page faults, per column."""
    return pa.py_buffer(np.arange(0, (n + 1) * width, width, dtype=np.int64))


def string_array(arrow: pa.Array, dtype: Any) -> Any:
    """An Arrow string array as the pandas string ``dtype`` without a copy or a cast.

    ``pd.array`` re-validates and casts (tens of µs a column); pandas ≥ 3 takes the Arrow data
    as it is when the dtype is a pyarrow ``StringDtype``."""
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        try:
            return pd.arrays.ArrowStringArray(pa.chunked_array([arrow]), dtype=dtype)
        except TypeError:  # pandas 2: no dtype argument
            pass
    return pd.array(arrow, dtype=dtype)


def frame_of(columns: dict[str, Any], n: int, block: np.ndarray | None, names: pd.Index | None) -> pd.DataFrame:
    """``pd.DataFrame(columns)``, built without copies when the float columns are rows of ``block``.

    Why: decoding in column units writes each numeric column into its own row of one (columns × n)
    float64 array, which is already the 2-D block pandas keeps for them; the plain constructor
    validates every column and copies the floats into a new block of its own (0.12 ms of a
    2 ms FLCHAIN draw, 0.02 ms this way). The frame keeps ``block``'s memory. Any other layout — a
    column that is not a row of it, a row no column holds, types the constructor would infer — takes
    the constructor. ``names``: ``pd.Index(list(columns))``, when the caller keeps one (an Index of
    text infers its type, ~0.1 ms)."""
    if create_dataframe_from_blocks is None or block is None or block.ndim != 2 or not block.flags.c_contiguous \
            or block.dtype != np.float64 or block.shape[1] != n:
        return pd.DataFrame(columns, copy=False)
    row_of = {block[j].__array_interface__["data"][0]: j for j in range(block.shape[0])}
    placement = np.full(block.shape[0], -1, dtype=np.intp)
    blocks: list[tuple[Any, np.ndarray]] = []
    for position, column in enumerate(columns.values()):
        if isinstance(column, np.ndarray) and column.dtype == np.float64 and column.ndim == 1 \
                and column.strides == (8,) and len(column) == n:
            j = row_of.get(column.__array_interface__["data"][0])
            if j is None or placement[j] >= 0:
                return pd.DataFrame(columns, copy=False)
            placement[j] = position
        elif isinstance(column, pd.api.extensions.ExtensionArray) and len(column) == n:
            blocks.append((column, np.array([position], dtype=np.intp)))
        else:
            return pd.DataFrame(columns, copy=False)
    if (placement < 0).any():
        return pd.DataFrame(columns, copy=False)
    if len(placement):
        blocks.append((block, placement))
    return create_dataframe_from_blocks(blocks, index=pd.RangeIndex(n),
                                        columns=pd.Index(list(columns)) if names is None else names)



_LOOPS = (_finish_numeric, _label_offsets, _label_bytes, _label_words, _label_packed)
_NONE = np.zeros(0, dtype=bool)  # the numeric loop reads an empty flag array as "none"


class FastColumns:
    """The fast path (see the module's docstring); :class:`~clinsynth.data.columns.ColumnPaths`."""

    memory_pool = SAMPLE_POOL

    def __init__(self, loops: tuple[Any, ...]):
        self.loops = loops

    def text(self, index: np.ndarray, labels: tuple[str, ...], missing: np.ndarray | None, dtype: Any) -> Any:
        return string_array(arrow_text(self.loops[1:], index, labels, missing), dtype)

    def finish_numeric(self, x: np.ndarray, rounding: Rounding, missing: np.ndarray | None,
                       blank: np.ndarray | None) -> None:
        mode = 0 if rounding.decimals is None else 1 if rounding.decimals == 0 else 2
        self.loops[0](x, float(rounding.lo), float(rounding.hi), mode, 10.0 ** (rounding.decimals or 0),
                      _NONE if missing is None else missing, _NONE if blank is None else blank)

    def frame(self, columns: dict[str, Any], n: int, block: np.ndarray | None, names: pd.Index | None) -> pd.DataFrame:
        return frame_of(columns, n, block, names)


_FAST: list[FastColumns] = []  # the one instance, for the loops compile_loops gave


def fast_columns() -> FastColumns | None:
    """The fast path, or None where numba is missing, fails, or ``CLINSYNTH_NUMBA=0``."""
    loops = compile_loops(*_LOOPS)
    if loops is None:
        return None
    if not _FAST or _FAST[0].loops is not loops:
        _FAST[:] = [FastColumns(loops)]
    return _FAST[0]
