"""Reversible encoders: a table to a float matrix a network can learn, and back.

One description drives both directions (after CTGAN's ``SpanInfo``): each column contributes
*spans* of the encoded vector, each either ``linear`` (a number) or ``softmax`` (a one-hot choice:
a category, "missing or not", a dropout visit). A generator applies activations span by span;
``decode`` walks the same spans back, vectorised per column, and always returns values the schema
allows (categories, bounds, integer rounding, missing codes).

Missingness is data, not noise to drop: a column whose policy is ``indicator`` gets a
two-way span (observed / missing); longitudinal groups sharing visits get one *dropout* span (the
last visit attended), and decoding blanks every later visit so a synthetic participant never comes
back after leaving.
"""
from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import ndtri

from clinsynth.compiled import compile_loops
from clinsynth.errors import NotFittedError, SchemaError
from clinsynth.schema import ColumnSpec, LongitudinalGroup, Schema, last_observed_visit, parse_datetimes, wall_clock

Activation = Literal["linear", "softmax"]
NumericTransform = Literal["standard", "quantile"]
NUMERIC_TRANSFORMS: tuple[str, ...] = ("standard", "quantile")
_N_KNOTS = 1000
_P_EPS = 1e-6
_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Span:
    """A slice ``[start, start + dim)`` of the encoded vector and how a network should emit it."""

    name: str
    dim: int
    activation: Activation
    start: int = 0

    @property
    def stop(self) -> int:
        return self.start + self.dim


# ---------------------------------------------------------------------------------------
class NumericCodec:
    """Continuous, integer and datetime columns: a scaled value plus an optional missing span."""

    def __init__(self, spec: ColumnSpec, transform: NumericTransform = "standard"):
        self.spec = spec
        self.transform = transform
        self.state: dict[str, Any] | None = None

    @property
    def has_missing(self) -> bool:
        return self.spec.missing == "indicator"

    def spans(self) -> list[tuple[str, int, Activation]]:
        out: list[tuple[str, int, Activation]] = [(self.spec.name, 1, "linear")]
        if self.has_missing:
            out.append((f"{self.spec.name}:missing", 2, "softmax"))
        return out

    def _raw(self, s: pd.Series) -> np.ndarray:
        return numeric_values(s, self.spec.kind)

    def fit(self, s: pd.Series) -> NumericCodec:
        x = self._raw(s)
        x = x[np.isfinite(x)]
        if x.size == 0:
            raise SchemaError(f"column '{self.spec.name}' has no observed values to learn from")
        if self.transform == "quantile":
            values, counts = np.unique(x, return_counts=True)
            if values.size > _N_KNOTS:
                values = np.unique(np.quantile(x, np.linspace(0, 1, _N_KNOTS)))
                probs = np.linspace(_P_EPS, 1 - _P_EPS, values.size)
            else:
                cum = np.cumsum(counts)
                probs = (cum - counts / 2) / cum[-1]
            if values.size == 1:
                values, probs = np.repeat(values, 2), np.array([0.25, 0.75])
            # piecewise linear between (knot, normal score) pairs: exact inverse, no ndtr at sampling time
            self.state = {"knots": values.tolist(), "scores": ndtri(np.clip(probs, _P_EPS, 1 - _P_EPS)).tolist()}
        else:
            scale = float(x.std())
            self.state = {"loc": float(x.mean()), "scale": scale if scale > 0 else 1.0}
        return self

    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        """The quantile knots and normal scores as arrays, converted once from the JSON state."""
        assert self.state is not None
        if getattr(self, "_cached", (None,))[0] is not self.state:
            knots = np.asarray(self.state["knots"], float)
            scores = np.asarray(self.state["scores"], float)
            self._cached = (self.state, knots, scores, PiecewiseLinear(scores, knots))
        return self._cached[1], self._cached[2]

    def _forward(self, x: np.ndarray) -> np.ndarray:
        assert self.state is not None
        if self.transform == "quantile":
            knots, scores = self._table()
            return np.interp(x, knots, scores)
        return (x - self.state["loc"]) / self.state["scale"]

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        assert self.state is not None
        if self.transform == "quantile":
            self._table()
            return self._cached[3](z)
        z *= self.state["scale"]
        z += self.state["loc"]
        return z

    @functools.cached_property
    def _clip_bounds(self) -> tuple[float, float]:
        """:func:`decode_bounds`, worked out once per codec (decoding runs per draw)."""
        return decode_bounds(self.spec) if self.spec.bounds is not None else (-np.inf, np.inf)

    def encode(self, s: pd.Series) -> np.ndarray:
        x = self._raw(s)
        miss = ~np.isfinite(x)
        z = np.where(miss, 0.0, self._forward(np.where(miss, 0.0, x)))
        if not self.has_missing:
            return z[:, None]
        return np.column_stack([z, ~miss, miss]).astype(float)

    def affine(self) -> tuple[float, float] | None:
        """(scale, loc) when the encoding is affine (column = scale · encoded + loc), else None.

        A model that draws values piecewise-linearly can fold this in and hand ``decode`` column
        units (``scaled=False``), sparing two passes and a copy per column."""
        assert self.state is not None
        return None if self.transform == "quantile" else (self.state["scale"], self.state["loc"])

    def decode(self, value: np.ndarray, missing_code: np.ndarray | None = None,
               blank: np.ndarray | None = None, scaled: bool = True) -> pd.Series | np.ndarray:
        """Values back to the column; ``missing_code`` 1 marks missing, ``blank`` marks after-dropout.

        ``scaled=False``: ``value`` is in column units already (decoded in place when float64)."""
        x = self._inverse(value.astype(np.float64)) if scaled else np.asarray(value, dtype=np.float64)
        spec = self.spec
        loops = compile_loops(_finish_numeric) if spec.kind != "datetime" and x.ndim == 1 else None
        if loops is not None:  # bounds, rounding and missing values in one pass (the same numbers)
            lo, hi = self._clip_bounds
            mode, factor = (1, 1.0) if spec.kind == "integer" else (0, 1.0) if spec.decimals is None else \
                (2, 10.0 ** spec.decimals)  # the schema holds decimals to 0..15
            none = np.zeros(0, dtype=bool)
            loops[0](x, float(lo), float(hi), mode, factor,  # flags read as they are: no bool copies
                     none if missing_code is None else np.asarray(missing_code),
                     none if blank is None else np.asarray(blank))
            return _restore_numeric_dtype(x, spec.dtype)
        if spec.bounds is not None:
            np.clip(x, *self._clip_bounds, out=x)
        if spec.kind == "integer":
            np.round(x, out=x)
        elif spec.decimals is not None:
            np.round(x, spec.decimals, out=x)
        missing = missing_code.astype(bool) if missing_code is not None else None
        if blank is not None:
            missing = blank if missing is None else np.logical_or(missing, blank, out=missing)
        if spec.kind == "datetime":
            unit_ns = _DAY_NS if spec.decimals == 0 else 10**9
            ns = np.round(x * _DAY_NS / unit_ns) * unit_ns
            ts = pd.to_datetime(ns.astype("int64"), unit="ns")
            zone = _datetime_zone(spec.dtype)
            if spec.dtype and spec.dtype.startswith("datetime64[") and "," not in spec.dtype:
                ts = ts.astype(spec.dtype)  # the input's resolution: pandas 3 reads dates as datetime64[us]
            elif zone is not None:  # wall-clock times back into their zone (see schema.wall_clock)
                ts = localize(ts, spec.dtype)
                return pd.Series(ts).mask(missing).array if missing is not None and missing.any() else ts.array
            return pd.Series(ts).mask(missing).to_numpy() if missing is not None and missing.any() else ts.to_numpy()
        if missing is not None:
            np.copyto(x, np.nan, where=missing)  # one pass; an any() check and a masked write are three
        return _restore_numeric_dtype(x, spec.dtype)


def _datetime_zone(dtype: str | None) -> Any:
    """The zone of a zone-aware datetime dtype string (``datetime64[us, Europe/Paris]``), else None."""
    if not dtype or "," not in dtype:
        return None
    try:
        return getattr(pd.api.types.pandas_dtype(dtype), "tz", None)
    except TypeError:
        return None


def localize(ts: pd.DatetimeIndex, dtype: str) -> pd.DatetimeIndex:
    """Naive wall-clock times as the zone-aware ``dtype``: a time a DST change skips moves forward
    past the gap, a time it repeats is read as standard time, so every row gets a valid time."""
    target = pd.api.types.pandas_dtype(dtype)
    ts = ts.as_unit(target.unit)
    return ts.tz_localize(target.tz, ambiguous=np.zeros(len(ts), dtype=bool), nonexistent="shift_forward")


def _finish_numeric(x, lo, hi, mode, factor, missing, blank):  # pragma: no cover (compiled)
    """:meth:`NumericCodec.decode`'s clip, round (``mode`` 1: to whole numbers, 2: to 1/factor,
    as ``np.round`` computes them) and NaN where ``missing`` or
    ``blank`` (nonzero; empty: none), in place. Every row is computed and the NaN chosen after, not
    branched to: where a sixth of the values are missing, a branch mispredicts often enough to
    double the pass."""
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


class PiecewiseLinear:
    """``np.interp(x, xp, fp)`` for a fixed increasing ``xp``, several times faster on unsorted x.

    A uniform grid of buckets over ``xp`` gives each point its segment in a few vector steps
    instead of a binary search per point; the value is the same segment formula, so knots map
    exactly onto their values (the encoders' round trip depends on that).
    """

    def __init__(self, xp: np.ndarray, fp: np.ndarray, buckets: int = 4096):
        self.xp, self.fp = np.asarray(xp, float), np.asarray(fp, float)
        m = self.xp.size
        self.lo, self.hi = self.xp[0], self.xp[-1]
        self.buckets = buckets
        self.scale = buckets / (self.hi - self.lo)
        self.slope = np.diff(self.fp) / np.diff(self.xp)
        edges = self.lo + np.arange(buckets) / self.scale
        self.first = np.clip(np.searchsorted(self.xp, edges, side="right") - 1, 0, m - 2)
        last = np.clip(np.searchsorted(self.xp, edges + 1 / self.scale, side="right") - 1, 0, m - 2)
        self.steps = int((last - self.first).max(initial=0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Interpolate at ``x`` (left untouched): the same values as ``np.interp(x, xp, fp)``."""
        xc = np.clip(x, self.lo, self.hi)
        b = ((xc - self.lo) * self.scale).astype(np.intp)
        np.minimum(b, self.buckets - 1, out=b)
        k = self.first[b]
        for _ in range(self.steps):
            k += xc >= self.xp[k + 1]
            np.minimum(k, self.xp.size - 2, out=k)
        top = xc >= self.hi
        xc -= self.xp[k]
        xc *= self.slope[k]
        xc += self.fp[k]
        xc[top] = self.fp[-1]
        return xc


def decode_bounds(spec: ColumnSpec) -> tuple[float, float]:
    """The bounds decoded values are clipped to before rounding: the schema's, moved inward onto
    the rounding grid (whole numbers for integers, multiples of 10^-decimals), so that rounding a
    clipped value cannot take it outside them (bounds 2.42 with decimals 0 gave 2.0)."""
    lo, hi = numeric_bounds(spec)
    digits = 0 if spec.kind == "integer" else spec.decimals
    if digits is None:
        return lo, hi
    factor = 10.0 ** digits

    def onto_grid(bound: float, inward: Any) -> float:
        k = bound * factor
        nearest = round(k)
        # a bound on the grid up to float error (float32 holds 128.12 as 128.11999…) stays where it is
        return (nearest if abs(k - nearest) <= 1e-6 * max(1.0, abs(k)) else inward(k)) / factor

    inner_lo, inner_hi = onto_grid(lo, math.ceil), onto_grid(hi, math.floor)
    return (inner_lo, inner_hi) if inner_lo <= inner_hi else (lo, hi)


def datetime_days(value: Any) -> float:
    """A date or timestamp as days since 1970-01-01, the scale numeric codecs work in (a time with
    a zone or offset on its wall clock, as :func:`numeric_values` reads zone-aware columns)."""
    ts = pd.Timestamp(value)
    return (ts.tz_localize(None) if ts.tz is not None else ts).value / _DAY_NS


def numeric_bounds(spec: ColumnSpec) -> tuple[float, float]:
    """A numeric column's bounds as numbers (days since 1970 for dates), as its values are encoded."""
    lo, hi = spec.bounds
    if spec.kind == "datetime":
        return datetime_days(lo), datetime_days(hi)
    return float(lo), float(hi)


def numeric_values(s: pd.Series, kind: str) -> np.ndarray:
    """A numeric column as float64 with NaN for missing; dates (kind ``datetime``) as days since
    1970. The one reading of numbers that encoders, DP statistics and fidelity metrics share."""
    if kind == "datetime":
        ts = wall_clock(parse_datetimes(s)).astype("datetime64[ns]")  # a zone's local time (see wall_clock)
        out = ts.to_numpy().astype("int64").astype(float) / _DAY_NS
        out[ts.isna().to_numpy()] = np.nan
        return out
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _restore_numeric_dtype(x: np.ndarray, dtype: str | None) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """``x`` (float64, NaN for missing) in the input's dtype: nullable types get <NA>; numpy ints
    cannot hold NaN, so a column with missing values stays float64."""
    if not dtype or dtype == "float64":
        return x
    try:
        if dtype.startswith(("Int", "UInt", "Float")):
            return pd.array(x, dtype=dtype)
        if not dtype.startswith("float") and np.isnan(x).any():
            return x
        return x.astype(dtype)
    except (TypeError, ValueError):
        return x


#: Arrow memory for decoded columns: the system allocator, not Arrow's default mimalloc pool, whose
#: first large buffers in a process stalled a cold draw by ~4.5 ms (a fresh process's first
#: 20,000-row FLCHAIN draw: 7 ms in 5 of 12 processes, else 2.9; from this pool 2.4-3.1 in 12 of 12).
SAMPLE_POOL = pa.system_memory_pool()


def arrow_text(index: np.ndarray, labels: list[str], missing: np.ndarray | None = None) -> pa.Array:
    """``labels[index]`` as an Arrow large-string array (null where ``missing``), without Python strings.

    ``index`` outside ``[0, len(labels))`` is clipped into it (the missing slot reads as the last
    label, under a null). Where numba is installed one compiled pass writes the bytes straight from
    the codes, whatever their integer type: no int64 copy of the index, no gather temporaries — each a
    fresh array whose first touch costs page faults. Without it, numpy and Arrow give the same array:
    labels of one byte length (``"0"``/``"1"``) as one gather of fixed-width items, others through
    Arrow's ``take`` (from :data:`SAMPLE_POOL`).
    """
    table = _label_table(tuple(labels))
    n = len(index)
    validity = None if missing is None else pa.py_buffer(np.packbits(~missing, bitorder="little"))
    nulls = 0 if missing is None else int(missing.sum())
    width = table.width
    loops = compile_loops(_label_offsets, _label_bytes, _label_words, _label_packed)
    if loops is not None:
        if table.words is not None:  # each label one machine word: a plain gather of words
            data = np.empty(n, dtype=table.words.dtype)
            loops[2](index, table.words, data)
            return pa.LargeStringArray.from_buffers(n, _fixed_offsets(n, width), pa.py_buffer(data), validity, nulls)
        if table.packed is not None:  # labels of up to 8 bytes: packed into words, one pass
            offsets_array = np.empty(n + 1, dtype=np.int64)
            words = np.empty(n * int(table.lengths.max()) // 8 + 1, dtype=np.uint64)
            total = int(loops[3](index, table.packed, table.lengths, offsets_array, words))
            data_buffer = pa.py_buffer(words.view(np.uint8)[:total])
            return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets_array), data_buffer, validity, nulls)
        if width:
            offsets, total = _fixed_offsets(n, width), n * width
        else:
            offsets_array = np.empty(n + 1, dtype=np.int64)
            total = int(loops[0](index, table.lengths, offsets_array))
            offsets = pa.py_buffer(offsets_array)
        data = np.empty(total, dtype=np.uint8)
        loops[1](index, table.blob, table.starts, table.lengths, data)
        return pa.LargeStringArray.from_buffers(n, offsets, pa.py_buffer(data), validity, nulls)
    index = np.clip(index, 0, len(labels) - 1)
    if width:
        data = np.take(table.blob.view(f"V{width}"), index).view(np.uint8)
        return pa.LargeStringArray.from_buffers(n, _fixed_offsets(n, width), pa.py_buffer(data), validity, nulls)
    taken = pc.take(pa.array(table.encoded, pa.large_binary(), memory_pool=SAMPLE_POOL),
                    pa.array(index.astype(np.int64, copy=False), memory_pool=SAMPLE_POOL), memory_pool=SAMPLE_POOL)
    _, offsets, data = taken.buffers()
    return pa.LargeStringArray.from_buffers(n, offsets, data, validity, nulls)


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


class CategoricalCodec:
    """Binary and categorical columns: a softmax over the categories (+ a slot for missing)."""

    def __init__(self, spec: ColumnSpec):
        self.spec = spec
        self.categories = list(spec.categories or [])
        self.state: dict[str, Any] | None = {}

    @property
    def has_missing(self) -> bool:
        return self.spec.missing == "indicator"

    @property
    def n_levels(self) -> int:
        return len(self.categories) + int(self.has_missing)

    def spans(self) -> list[tuple[str, int, Activation]]:
        return [(self.spec.name, self.n_levels, "softmax")]

    def fit(self, s: pd.Series) -> CategoricalCodec:
        return self

    def codes(self, s: pd.Series) -> np.ndarray:
        """Category index per row; the missing slot is the last index."""
        codes = pd.Index(self.categories).get_indexer(s)
        isna = s.isna().to_numpy()
        unknown = (codes < 0) & ~isna
        if unknown.any():
            bad = s[unknown].iloc[0]
            raise SchemaError(f"column '{self.spec.name}' has value {bad!r} not in its categories {self.categories}")
        if isna.any():
            if not self.has_missing:
                raise SchemaError(f"column '{self.spec.name}' has missing values but its missing policy is 'none'")
            codes = np.where(isna, len(self.categories), codes)
        return codes

    def encode(self, s: pd.Series) -> np.ndarray:
        out = np.zeros((len(s), self.n_levels))
        out[np.arange(len(s)), self.codes(s)] = 1.0
        return out

    def labels(self, codes: np.ndarray) -> Any:
        """Codes back to the column's values, in the input's dtype where it can hold them."""
        n_cats = len(self.categories)
        missing = codes == n_cats if self.has_missing else None
        if missing is not None and not missing.any():
            missing = None
        dtype = self.spec.dtype or "object"
        if dtype == "object" and self._text_only and pd.get_option("future.infer_string"):
            dtype = "str"  # what a DataFrame makes of Python strings anyway, built in Arrow without them
        if dtype in ("str", "string"):
            arrow = arrow_text(codes, [str(c) for c in self.categories], missing)
            return string_array(arrow, pd.StringDtype("pyarrow", na_value=np.nan) if dtype == "str" else dtype)
        if dtype == "category":  # a pandas categorical stays one: codes as they are, no labels built
            index = np.minimum(codes, n_cats - 1) if missing is None else np.where(missing, -1, codes)
            return pd.Categorical.from_codes(index, categories=self.categories)
        lookup = np.array(self.categories + [None], dtype=object)
        if dtype == "boolean" or dtype.startswith(("Int", "UInt", "Float")):
            return pd.array(lookup[codes], dtype=dtype)  # nullable: missing as <NA>
        if dtype.startswith(("int", "uint", "float", "bool")):
            typed = np.asarray(self.categories)[np.minimum(codes, n_cats - 1)]
            if missing is None:
                return typed.astype(dtype)
            return np.where(missing, np.nan, typed.astype(dtype if dtype.startswith("float") else float))
        return lookup[codes]

    @property
    def _text_only(self) -> bool:
        return bool(self.categories) and all(isinstance(c, str) for c in self.categories)

    def decode(self, code: np.ndarray) -> Any:
        return self.labels(code)


class TimelineCodec:
    """One dropout variable for the longitudinal groups that share a visit list.

    The encoded value is the last visit with any observed measure (0 = none observed), as a
    softmax over ``n_visits + 1`` states; decoding turns it into a mask of visits to blank.
    """

    def __init__(self, groups: list[LongitudinalGroup]):
        self.groups = groups
        self.visits = list(groups[0].visits)
        self.name = "dropout:" + "+".join(g.name for g in groups)

    def spans(self) -> list[tuple[str, int, Activation]]:
        return [(self.name, len(self.visits) + 1, "softmax")]

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        last = last_observed_visit(df, self.groups)
        out = np.zeros((len(df), len(self.visits) + 1))
        out[np.arange(len(df)), last] = 1.0
        return out

    def blank_mask(self, last: np.ndarray) -> np.ndarray:
        """(n_visits, n) boolean: True where the visit falls after the participant left (visit-major:
        each visit's row is contiguous, as the columns decoded from it are)."""
        return np.arange(1, len(self.visits) + 1)[:, None] > last[None, :]


def synthetic_ids(n: int, prefix: str = "syn-", start: int = 0) -> pd.api.extensions.ExtensionArray:
    """Fresh identifiers ``syn-000001``…, built in Arrow (fast); never a real participant's id."""
    numbers = pc.cast(pa.array(np.arange(start + 1, start + n + 1, dtype=np.int64), memory_pool=SAMPLE_POOL),
                      pa.string(), memory_pool=SAMPLE_POOL)
    padded = pc.utf8_lpad(numbers, width=6, padding="0", memory_pool=SAMPLE_POOL)
    ids = pc.binary_join_element_wise(prefix, padded, "", memory_pool=SAMPLE_POOL)
    return pd.array(ids, dtype=pd.StringDtype("pyarrow", na_value=np.nan))


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridLayout:
    """Where the primary timeline's cells sit in the encoded vector, for convolutional models.

    ``channels[c, v]`` is the encoded index of channel ``c`` at visit ``v``: each measure
    contributes its value channel and, if it has one, its two missing-indicator channels.
    """

    channels: np.ndarray
    visits: int


try:  # pandas >= 3: a frame from ready-made blocks
    from pandas.api.internals import create_dataframe_from_blocks
except ImportError:  # pragma: no cover - pandas 2
    create_dataframe_from_blocks = None


def frame_of(columns: dict[str, Any], n: int, block: np.ndarray | None = None,
             names: pd.Index | None = None) -> pd.DataFrame:
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


class TableEncoder:
    """Encode a whole table by its schema; ``decode(encode(df))`` gives ``df`` back.

    Parameters
    ----------
    schema : the table's schema; identifiers are kept out and re-made fresh on decode.
    numeric_transform : ``"standard"`` (mean/sd) or ``"quantile"`` (to a normal through the
        empirical quantiles; better for skewed labs, but stores data quantiles, so not for DP).
    """

    def __init__(self, schema: Schema, numeric_transform: NumericTransform = "standard"):
        if numeric_transform not in NUMERIC_TRANSFORMS:
            raise SchemaError(f"numeric_transform must be 'standard' or 'quantile', not {numeric_transform!r}")
        self.schema = schema
        self.numeric_transform = numeric_transform
        self.codecs: dict[str, NumericCodec | CategoricalCodec] = {}
        for spec in schema.model_columns:
            if spec.kind in ("binary", "categorical"):
                self.codecs[spec.name] = CategoricalCodec(spec)
            else:
                self.codecs[spec.name] = NumericCodec(spec, numeric_transform)
        self.timelines = [TimelineCodec(groups) for _, groups in schema.timelines() if all(g.dropout for g in groups)]
        self.spans: list[Span] = []
        start = 0
        for part in [*self.codecs.values(), *self.timelines]:
            for name, dim, act in part.spans():
                self.spans.append(Span(name, dim, act, start))
                start += dim
        self.dim = start
        self.fitted_ = False
        linear = [s for s in self.spans if s.activation == "linear"]
        softmax = [s for s in self.spans if s.activation == "softmax"]
        self._linear_idx = np.array([s.start for s in linear], dtype=np.intp)
        self._value_col = {s.name: j for j, s in enumerate(linear)}
        self._code_col = {s.name: k for k, s in enumerate(softmax)}
        self._n_codes = len(softmax)
        self._softmax_groups = [
            (dim, np.array([s.start for s in softmax if s.dim == dim], dtype=np.intp),
             np.array([k for k, s in enumerate(softmax) if s.dim == dim], dtype=np.intp))
            for dim in sorted({s.dim for s in softmax})
        ]

    # -- fitting ---------------------------------------------------------------------
    def fit(self, df: pd.DataFrame) -> TableEncoder:
        for name, codec in self.codecs.items():
            codec.fit(df[name])
        self.fitted_ = True
        return self

    def fit_from_statistics(self, numeric: dict[str, dict[str, Any]]) -> TableEncoder:
        """Fit without reading records: each numeric column's scaling from released statistics
        (``loc``/``scale`` for ``standard``, ``knots``/``scores`` for ``quantile``), as DP mode needs."""
        keys = ("knots", "scores") if self.numeric_transform == "quantile" else ("loc", "scale")
        for name, codec in self.codecs.items():
            if isinstance(codec, NumericCodec):
                if name not in numeric:
                    raise SchemaError(f"no released statistics for numeric column '{name}'")
                codec.state = {k: numeric[name][k] for k in keys}
        self.fitted_ = True
        return self

    def _check_fitted(self) -> None:
        if not self.fitted_:
            raise NotFittedError("the encoder is not fitted; call fit(df) first")

    # -- lookup ----------------------------------------------------------------------
    def span(self, name: str) -> Span:
        for s in self.spans:
            if s.name == name:
                return s
        raise KeyError(name)

    def grid_layout(self) -> GridLayout | None:
        """The primary timeline as a (channel × visit) grid, or None when there is none."""
        if not self.schema.longitudinal:
            return None
        _, groups = self.schema.timelines()[0]
        rows: list[list[int]] = []
        for g in groups:
            value = [self.span(c).start for c in g.columns]
            rows.append(value)
            if any(self.codecs[c].has_missing for c in g.columns):
                # columns without intermittent missingness still get indicator channels: fixed "observed"
                rows.append([self.span(f"{c}:missing").start if self.codecs[c].has_missing else -1 for c in g.columns])
                rows.append([self.span(f"{c}:missing").start + 1 if self.codecs[c].has_missing else -1 for c in g.columns])
        channels = np.array(rows, dtype=np.int64)
        return GridLayout(channels=channels, visits=len(groups[0].visits))

    # -- transforms ------------------------------------------------------------------
    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """The table as a float32 matrix (rows × ``dim``)."""
        self._check_fitted()
        blocks = [codec.encode(df[name]) for name, codec in self.codecs.items()]
        blocks += [t.encode(df) for t in self.timelines]
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs (rows × ``dim``) to (values of the linear spans, argmax code of each softmax span)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"expected a matrix with {self.dim} columns, got shape {X.shape}")
        values, codes = self.split_features_major(X.T)
        return values.T, codes.T

    def split_features_major(self, XT: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``split`` for a feature-major matrix (``dim`` × rows): every step reads whole rows.

        This is the expensive half of decoding; samplers call it on cache-sized chunks and
        ``decode_parts`` once per large block (pass the transposes: column-major is fastest there).
        """
        values = XT[self._linear_idx]
        codes = np.empty((self._n_codes, XT.shape[1]), dtype=np.int16)
        for dim, starts, code_cols in self._softmax_groups:
            if dim == 2:
                codes[code_cols] = XT[starts + 1] > XT[starts]
            else:
                codes[code_cols] = XT[starts[:, None] + np.arange(dim)].argmax(axis=1)
        return values, codes

    def decode(self, X: np.ndarray, id_prefix: str = "syn-", id_start: int = 0) -> pd.DataFrame:
        """A matrix back to a table in the schema's column order, every value within the schema.

        Identifier columns get fresh ids (``syn-000001``…), never real ones.
        """
        self._check_fitted()
        return self.decode_parts(*self.split(X), id_prefix=id_prefix, id_start=id_start)

    def decode_parts(self, values: np.ndarray, codes: np.ndarray, id_prefix: str = "syn-",
                     id_start: int = 0, scaled: bool = True) -> pd.DataFrame:
        """``decode`` from ``split``'s output (column-major arrays make this fastest).

        ``scaled=False``: ``values`` (float64) are in column units already (see
        :meth:`NumericCodec.affine`) and are overwritten while decoding."""
        self._check_fitted()
        blank: dict[str, np.ndarray] = {}
        keep: dict[str, np.ndarray] = {}
        for t in self.timelines:
            last = codes[:, self._code_col[t.name]].astype(np.intp)
            mask = t.blank_mask(last)
            for g in t.groups:
                for j, c in enumerate(g.columns):
                    blank[c] = mask[j]
            keep.update(self._observed_at_last_visit(t, last, codes))
        n = values.shape[0]
        out: dict[str, Any] = {}
        for spec in self.schema.columns:
            name = spec.name
            if spec.kind == "id":
                out[name] = synthetic_ids(n, id_prefix, id_start)
                continue
            codec = self.codecs[name]
            if isinstance(codec, CategoricalCodec):
                out[name] = codec.decode(codes[:, self._code_col[name]])
            else:
                missing = codes[:, self._code_col[f"{name}:missing"]] if codec.has_missing else None
                if missing is not None and name in keep:
                    missing = missing.astype(bool) & ~keep[name]
                out[name] = codec.decode(values[:, self._value_col[name]], missing, blank.get(name), scaled)
        return frame_of(out, n, values.T, self._column_index)

    @functools.cached_property
    def _column_index(self) -> pd.Index:
        """The decoded frame's column names (Index objects are immutable: one serves every draw)."""
        return pd.Index([spec.name for spec in self.schema.columns])

    def _observed_at_last_visit(self, timeline: TimelineCodec, last: np.ndarray,
                                codes: np.ndarray) -> dict[str, np.ndarray]:
        """Cells whose missing flag must be overruled: the last visit a participant attended has, by
        definition, an observed measure, so where every flag there says "missing" all are kept."""
        n = len(last)
        all_missing = np.ones((len(timeline.visits), n), dtype=bool)  # visit-major, as blank_mask
        for g in timeline.groups:
            for j, c in enumerate(g.columns):
                key = f"{c}:missing"
                if key in self._code_col:
                    np.logical_and(all_missing[j], codes[:, self._code_col[key]], out=all_missing[j])
                else:
                    all_missing[j] = False
        fix = (last > 0) & all_missing[np.maximum(last - 1, 0), np.arange(n)]
        if not fix.any():
            return {}
        return {c: fix & (last == j + 1) for g in timeline.groups for j, c in enumerate(g.columns)}

    def activate(self, X: np.ndarray) -> np.ndarray:
        """Softmax spans to one-hot (argmax), as the decoder reads them; for comparisons and tests."""
        X = np.array(X, dtype=np.float32, copy=True)
        _, codes = self.split(X)
        for s in self.spans:
            if s.activation == "softmax":
                block = np.zeros((X.shape[0], s.dim), dtype=np.float32)
                block[np.arange(X.shape[0]), codes[:, self._code_col[s.name]]] = 1.0
                X[:, s.start:s.stop] = block
        return X

    # -- persistence -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "numeric_transform": self.numeric_transform,
            "columns": {name: codec.state for name, codec in self.codecs.items()},
        }

    @classmethod
    def from_state_dict(cls, schema: Schema, state: dict[str, Any]) -> TableEncoder:
        """The fitted encoder from :meth:`state_dict`; a state that does not fit ``schema`` column for
        column (a column dropped or added on either side, a scaling that is not a finite number)
        raises ``SchemaError`` here rather than failing at sampling time."""
        columns = state.get("columns") if isinstance(state, dict) else None
        if not isinstance(columns, dict):
            raise SchemaError("encoder state has no 'columns' object")
        enc = cls(schema, state.get("numeric_transform", "standard"))
        missing = [n for n in enc.codecs if n not in columns]
        if missing:
            raise SchemaError("encoder state does not fit the schema; no state for: " + ", ".join(missing))
        extra = [n for n in columns if n not in enc.codecs]
        if extra:
            raise SchemaError("encoder state does not fit the schema; it has columns the schema lacks: " + ", ".join(extra))
        for name, codec in enc.codecs.items():
            if isinstance(codec, NumericCodec):
                _check_numeric_state(name, columns[name], enc.numeric_transform)
            codec.state = columns[name]
        enc.fitted_ = True
        return enc


def _check_numeric_state(name: str, state: Any, transform: str) -> None:
    """A numeric column's saved scaling: finite numbers of the right shape, or ``SchemaError``."""
    keys = ("knots", "scores") if transform == "quantile" else ("loc", "scale")
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise SchemaError(f"encoder state of column '{name}' lacks {' and '.join(keys)}")
    try:
        values = [np.asarray(state[k], dtype=float) for k in keys]
    except (TypeError, ValueError):
        raise SchemaError(f"encoder state of column '{name}' holds a {'/'.join(keys)} that is not numeric") from None
    if not all(np.isfinite(v).all() for v in values):
        raise SchemaError(f"encoder state of column '{name}' holds a {'/'.join(keys)} that is not finite")
    if transform == "quantile":
        knots, scores = values
        if knots.ndim != 1 or knots.shape != scores.shape or knots.size < 2 or np.any(np.diff(knots) < 0) \
                or np.any(np.diff(scores) < 0):
            raise SchemaError(f"encoder state of column '{name}': knots and scores must be increasing lists of one length")
    elif values[0].ndim or values[1].ndim or not values[1] > 0:
        raise SchemaError(f"encoder state of column '{name}': loc must be a number and scale a positive number")
