"""Privacy attacks for a synthetic-data release: what could someone holding the synthetic table learn
about the people in the real training table?

Every attack compares the training records (``real_train``, which the model saw) with a real
holdout (``real_test``, which it never saw): synthetic data that leaks treats the two differently,
synthetic data that does not cannot tell them apart. Pure functions of frames and a schema.

**The distance.** Records are compared on every model column (identifiers excluded, the target
included) in a :class:`RecordSpace`, fitted on ``real_train`` only, where the squared Euclidean
distance adds up column by column:

* a number (continuous, integer, datetime as days) is scaled to [0, 1] by the training range
  (values outside it are clipped), so it contributes ``(Δ scaled value)²`` ≤ 1; a missing number
  sits at the training median and a 0/1 missing indicator adds 1 when one side is missing;
* a category is one-hot (missing its own level; values compared as text so ``1``, ``1.0`` and
  ``"1"`` agree; values never seen in training share an "other" level), scaled by 1/√2, so a
  mismatch contributes exactly 1 and a match 0.

So d² ≈ "number of categorical mismatches + missingness mismatches + squared relative numeric
differences": one unit is one column's worth of difference.

**Nearest neighbours** (:func:`nearest_distances`) are found by blocked float32 GEMM on the CPU
(torch), never an n × m matrix; the winner's distance is then recomputed exactly in float64 and a
query that has an identical reference row gets exactly 0.

**The attacks** (each also a function of its own; :func:`privacy_attacks` runs all with one fitted
space and shares the encoded matrices):

* exact copies — share of synthetic rows identical to a training row, next to the same share for
  the holdout (real tables have duplicates too);
* distance to closest record (DCR) — share of synthetic rows nearer to the training set than to
  an equally large holdout (0.5 = no preference, → 1 = copies);
* membership inference after medGAN (Choi et al. 2017) and corGAN (Torfi et al. 2020) — can the
  distance to the nearest synthetic record tell training records from holdout records?
* attribute inference — knowing a real record's non-sensitive columns, how well does the nearest
  synthetic record guess its sensitive ones, for training records versus holdout records?
* k-anonymity of the quasi-identifiers — how many training records share the quasi-identifier
  combination of a synthetic record?

The DCR protocol (:func:`dcr_protocol`) and the membership numbers
(:func:`membership_from_distances`) take distances rather than records, so
:mod:`clinsynth.evaluate.codes` runs the same attacks on code matrices with the Hamming distance.

Size: ~850 lines, one section per attack after three shared ones (normalised values, the record
space, nearest neighbours). The shared sections exist for the attacks alone, and each attack is
~100 lines of protocol plus its result class; a file per attack would scatter what a reviewer of
the attack results reads together.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from clinsynth.data.transforms import numeric_values
from clinsynth.errors import SchemaError
from clinsynth.schema import DISCRETE_KINDS, NUMERIC_KINDS, ColumnSpec, Schema

#: At most this many query records per nearest-neighbour search (synthetic rows for DCR, real
#: records, half members and half non-members, for membership and attribute inference).
MAX_QUERIES = 20_000
#: Nearest-neighbour blocks are at most ``CHUNK`` queries × ``REF_CHUNK`` references of float32:
#: 64 MiB, whatever the table sizes.
CHUNK = 2048
REF_CHUNK = 8192
#: The attacker's known share of the training set in the medGAN presence-disclosure protocol.
KNOWN_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5)
#: The membership attack's threshold lets through this share of non-members (its false-positive rate).
MIA_FPR = 0.1
#: Numbers are compared as equal (exact copies, quasi-identifiers) when they agree to this many
#: significant digits, so float noise from a CSV round trip is not a difference.
SIGNIFICANT_DIGITS = 9

_MISSING = "\x00missing"  # category level for a missing value; cannot clash with real text
_OTHER = "\x00other"  # category level for values the training set never showed
_HALF = np.float32(math.sqrt(0.5))
_Z95 = 1.959963984540054


# --- normalised values ---------------------------------------------------------------------
def _label(value: Any) -> str:
    """A category as text; integral numbers without a decimal point so ``1``, ``1.0``, ``"1"`` agree."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    return str(value)


def _category_text(s: pd.Series) -> np.ndarray:
    """Each value's text (object array), missing as ``_MISSING``; labels computed once per distinct value."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    labels = np.array([_label(u) for u in uniques] + [_MISSING], dtype=object)
    return labels[codes]


def _rounded(x: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """``x`` rounded to ``digits`` significant digits (NaN kept, −0 made 0)."""
    out = x.astype(float) + 0.0
    nz = np.isfinite(out) & (out != 0)
    if nz.any():
        scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(out[nz]))))
        out[nz] = np.round(out[nz] * scale) / scale
    return out


def _column_keys(s: pd.Series, spec: ColumnSpec) -> np.ndarray:
    """Values as compared for equality: rounded floats (NaN = missing) or category text."""
    if spec.kind in NUMERIC_KINDS:
        return _rounded(numeric_values(s, spec.kind))
    return _category_text(s)


def _row_groups(frames: Sequence[pd.DataFrame], specs: Sequence[ColumnSpec]) -> list[np.ndarray]:
    """Per frame, an integer per row, equal exactly when the rows agree on every column of ``specs``.

    Exact (column codes combined pairwise with ``factorize``), so no hash can collide.
    """
    sizes = [len(f) for f in frames]
    key = np.zeros(sum(sizes), dtype=np.int64)
    for spec in specs:
        values = np.concatenate([_column_keys(f[spec.name], spec) for f in frames])
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        key, _ = pd.factorize(key * (len(uniques) + 1) + codes)
    return np.split(key.astype(np.int64), np.cumsum(sizes)[:-1])


def _check_frames(columns: Sequence[str], **frames: pd.DataFrame) -> None:
    problems = []
    for what, df in frames.items():
        if not isinstance(df, pd.DataFrame) or len(df) == 0:
            problems.append(f"{what} must be a non-empty DataFrame")
            continue
        absent = [c for c in columns if c not in df.columns]
        if absent:
            problems.append(f"{what} lacks column(s): {', '.join(absent)}")
    if problems:
        raise SchemaError("cannot run the privacy attacks:", problems)


# --- the record space ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Numeric:
    spec: ColumnSpec
    low: float
    span: float
    fill: float  # the training median, scaled


@dataclass(frozen=True)
class _Discrete:
    spec: ColumnSpec
    levels: pd.Index  # known texts, then _MISSING, then _OTHER


class RecordSpace:
    """Records of mixed type as float32 vectors whose squared Euclidean distance means something.

    Numbers: ``clip((x − train min) / train range, 0, 1)`` plus a missing indicator (missing
    values at the training median). Categories: one-hot × 1/√2 over the training levels (and the
    schema's), a missing level and an "other" level. So a category mismatch adds exactly 1 to d²,
    a missing/observed mismatch at least 1, a number at most 1. Fitted on real training data only.
    """

    def __init__(self, axes: Sequence[_Numeric | _Discrete]) -> None:
        self._axes = list(axes)
        self.slices: dict[str, slice] = {}
        start = 0
        for a in self._axes:
            width = 2 if isinstance(a, _Numeric) else len(a.levels)
            self.slices[a.spec.name] = slice(start, start + width)
            start += width
        self.dim = start

    @property
    def columns(self) -> list[str]:
        return [a.spec.name for a in self._axes]

    @classmethod
    def fit(cls, real_train: pd.DataFrame, schema: Schema, columns: Sequence[str] | None = None,
            max_levels: int | None = None) -> RecordSpace:
        """Learn ranges, medians and levels from ``real_train``; ``columns`` defaults to the model columns.

        ``max_levels`` bounds the width of a category: only its ``max_levels`` most common training
        levels get their own axis, the others share the "other" level (as unseen values do)."""
        specs = _specs(schema, columns)
        _check_frames([s.name for s in specs], real_train=real_train)
        axes: list[_Numeric | _Discrete] = []
        for spec in specs:
            if spec.kind in NUMERIC_KINDS:
                x = numeric_values(real_train[spec.name], spec.kind)
                x = x[np.isfinite(x)]
                if x.size == 0:
                    axes.append(_Numeric(spec, 0.0, 1.0, 0.0))
                    continue
                low, high = float(x.min()), float(x.max())
                span = high - low if high > low else 1.0
                axes.append(_Numeric(spec, low, span, (float(np.median(x)) - low) / span))
            else:
                text = _category_text(real_train[spec.name])
                seen = set(text) | {_label(c) for c in spec.categories or []}
                seen -= {_MISSING, _OTHER}
                if max_levels is not None and len(seen) > max_levels:
                    from clinsynth.evaluate.bounds import top_levels

                    observed = pd.Series(text[text != _MISSING], dtype=object)
                    seen = set(top_levels(observed, max_levels))
                axes.append(_Discrete(spec, pd.Index([*sorted(seen), _MISSING, _OTHER], dtype=object)))
        return cls(axes)

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """The records of ``df`` as a float32 matrix (rows × ``dim``)."""
        _check_frames(self.columns, frame=df)
        out = np.zeros((len(df), self.dim), dtype=np.float32)
        for a in self._axes:
            sl = self.slices[a.spec.name]
            if isinstance(a, _Numeric):
                x = numeric_values(df[a.spec.name], a.spec.kind)
                missing = ~np.isfinite(x)
                scaled = np.clip((x - a.low) / a.span, 0.0, 1.0)
                out[:, sl.start] = np.where(missing, a.fill, scaled)
                out[:, sl.start + 1] = missing
            else:
                idx = a.levels.get_indexer(_category_text(df[a.spec.name]))
                idx[idx < 0] = len(a.levels) - 1  # unseen value → "other"
                out[np.arange(len(df)), sl.start + idx] = _HALF
        return out

    def indices(self, columns: Sequence[str]) -> np.ndarray:
        """The vector positions of ``columns`` (to compare records on a subset of columns)."""
        return np.concatenate([np.arange(self.slices[c].start, self.slices[c].stop) for c in columns]
                              or [np.zeros(0, dtype=np.intp)])


def _specs(schema: Schema, columns: Sequence[str] | None = None) -> list[ColumnSpec]:
    if columns is None:
        return list(schema.model_columns)
    return [schema.column(c) for c in columns]


# --- nearest neighbours ----------------------------------------------------------------------
def _as_matrix(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D matrix, got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} has non-finite values; encode missing values first (RecordSpace does)")
    return x


def _row_hash(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes (−0 made 0 first, so equal rows hash alike)."""
    x = np.ascontiguousarray(x + np.float32(0.0))
    return pd.util.hash_pandas_object(pd.DataFrame(x.view(np.uint32), copy=False), index=False).to_numpy()


def nearest_neighbors(queries: np.ndarray, reference: np.ndarray, k: int = 1, chunk: int = CHUNK,
                      ref_chunk: int = REF_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest reference rows of each query row: (Euclidean distances, row indices), nearest first.

    Memory stays bounded by blocks, not by the table sizes: the reference is walked in slices of
    ``ref_chunk`` rows and the queries in slices of ``chunk`` rows; each block of
    ``q·r − ‖r‖²/2`` (one float32 GEMM, whose row maximum is the nearest neighbour) is at most
    ``chunk × ref_chunk`` floats, and a running best of ``k`` per query is kept across slices.
    Extra memory: that block, two float32 copies of both inputs, and O(queries × k).

    float32 ranks the candidates; the chosen neighbours' distances are then recomputed in float64
    from the inputs, and a query with an identical reference row (found by row hashing) gets that
    row at distance exactly 0.
    """
    import torch

    q, r = _as_matrix(queries, "queries"), _as_matrix(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} columns but the reference has {r.shape[1]}")
    if len(r) == 0:
        raise ValueError("the reference set is empty")
    if k < 1 or chunk < 1 or ref_chunk < 1:
        raise ValueError("k, chunk and ref_chunk must be at least 1")
    n, m, k = len(q), len(r), min(k, len(r))
    if n == 0:
        return np.zeros((0, k)), np.zeros((0, k), dtype=np.int64)
    # columns constant across both sets add nothing; centring on the reference mean keeps the
    # float32 norms small, so the GEMM ranks near neighbours accurately
    keep = np.flatnonzero(np.minimum(q.min(0), r.min(0)) < np.maximum(q.max(0), r.max(0)))
    q, r = q[:, keep], r[:, keep]
    d = len(keep)
    centre = r.mean(0, dtype=np.float64).astype(np.float32)
    qa = np.ones((n, d + 1), dtype=np.float32)
    qa[:, :d] = q - centre
    ra = np.empty((m, d + 1), dtype=np.float32)
    ra[:, :d] = r - centre
    ra[:, d] = -0.5 * np.einsum("ij,ij->i", ra[:, :d], ra[:, :d], dtype=np.float64)

    qt = torch.from_numpy(qa)
    buffer = torch.empty(min(chunk, n) * min(ref_chunk, m))
    if k == 1:
        best_v, best_i = np.full(n, -np.inf, dtype=np.float32), np.zeros(n, dtype=np.int64)
    else:
        top_v, top_i = torch.full((n, k), -math.inf), torch.zeros((n, k), dtype=torch.int64)
    with torch.inference_mode():
        for j0 in range(0, m, ref_chunk):
            rt = torch.from_numpy(ra[j0:j0 + ref_chunk]).T.contiguous()
            for i0 in range(0, n, chunk):
                qi = qt[i0:i0 + chunk]
                block = buffer[:qi.shape[0] * rt.shape[1]].view(qi.shape[0], rt.shape[1])
                torch.mm(qi, rt, out=block)
                rows = slice(i0, i0 + qi.shape[0])
                if k == 1:  # numpy's argmax is several times faster than torch's max(dim)
                    b = block.numpy()
                    i = b.argmax(axis=1)
                    v = b[np.arange(len(b)), i]
                    better = v > best_v[rows]  # strict: ties keep the lower reference index
                    best_v[rows] = np.where(better, v, best_v[rows])
                    best_i[rows] = np.where(better, i + j0, best_i[rows])
                else:
                    v, i = block.topk(min(k, block.shape[1]), dim=1)
                    cand_v = torch.cat([top_v[rows], v], dim=1)
                    cand_i = torch.cat([top_i[rows], i + j0], dim=1)
                    v, pos = cand_v.topk(k, dim=1)
                    top_v[rows], top_i[rows] = v, cand_i.gather(1, pos)
    index = best_i[:, None] if k == 1 else top_i.numpy()

    # exact distances of the chosen neighbours, in row slices of bounded size
    d2 = np.empty((n, k))
    step = max(1, (1 << 21) // max(1, k * d))
    for i0 in range(0, n, step):
        diff = q[i0:i0 + step, None, :].astype(np.float64) - r[index[i0:i0 + step]]
        d2[i0:i0 + step] = np.einsum("ijk,ijk->ij", diff, diff)

    # A query with an identical reference row must come out at exactly 0. float32 may have ranked
    # another row first only if that row is within the GEMM's rounding error of the copy, so only
    # queries whose best distance is that small are looked up (rows hashed, matches verified).
    r_max = float(np.sqrt(ra[:, d].min() * -2.0))
    q_norm = np.sqrt(np.einsum("ij,ij->i", qa[:, :d], qa[:, :d], dtype=np.float64))
    slack = 16 * (d + 2) * float(np.finfo(np.float32).eps) * (q_norm * r_max + r_max**2 + q_norm**2)
    need = (d2.min(axis=1) > 0) & (d2.min(axis=1) <= slack)
    if need.any():
        hashes, first = np.unique(_row_hash(r), return_index=True)
        qh = _row_hash(q[need])
        pos = np.minimum(np.searchsorted(hashes, qh), len(hashes) - 1)
        hit = hashes[pos] == qh
        cand, match = np.flatnonzero(need)[hit], first[pos[hit]]
        same = (q[cand] == r[match]).all(axis=1)
        cand, match = cand[same], match[same]
        d2[cand, -1], index[cand, -1] = 0.0, match  # replaces the farthest; re-sorted below
    if k > 1:  # nearest first, ties by reference index
        order = np.lexsort((index, d2), axis=1)
        d2, index = np.take_along_axis(d2, order, axis=1), np.take_along_axis(index, order, axis=1)
    return np.sqrt(d2), index


def nearest_distances(queries: np.ndarray, reference: np.ndarray, chunk: int = CHUNK,
                      ref_chunk: int = REF_CHUNK) -> np.ndarray:
    """Euclidean distance from each query row to its nearest reference row (see :func:`nearest_neighbors`)."""
    return nearest_neighbors(queries, reference, 1, chunk, ref_chunk)[0][:, 0]


# --- sampling --------------------------------------------------------------------------------
def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def _sample(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``size`` distinct row positions out of ``n`` (all of them, in order, when ``size >= n``)."""
    return np.arange(n) if size >= n else np.sort(rng.choice(n, size, replace=False))


def _split(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """A boolean mask of ``size`` rows out of ``n`` drawn at random (all when ``size >= n``)."""
    mask = np.zeros(n, dtype=bool)
    mask[_sample(rng, n, size)] = True
    return mask


def _member_pools(n_train: int, n_test: int, max_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Equally many training (member) and holdout (non-member) rows, in random order."""
    rng = _rng(seed, 2)
    size = max(1, min(n_train, n_test, max_queries // 2))
    return rng.permutation(n_train)[:size], rng.permutation(n_test)[:size]


def _wilson(p: float, n: float, z: float = _Z95) -> tuple[float, float]:
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _share_nearer(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows with ``a < b``, ties counting half."""
    return float(np.mean(a < b) + 0.5 * np.mean(a == b))


# --- 1. exact copies ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ExactCopyResult:
    """Share of rows identical to some training row on all model columns."""

    synthetic_rate: float
    holdout_rate: float  # the baseline: real tables have duplicates too
    n_synthetic: int
    n_holdout: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def exact_copies(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame,
                 schema: Schema) -> ExactCopyResult:
    """Synthetic rows (all of them) equal to a training row; numbers to 9 significant digits,
    categories as text, missing equal to missing. The holdout's rate is what chance looks like."""
    specs = _specs(schema)
    _check_frames([s.name for s in specs], real_train=real_train, real_test=real_test, synthetic=synthetic)
    train, test, syn = _row_groups([real_train, real_test, synthetic], specs)
    return ExactCopyResult(float(np.isin(syn, train).mean()), float(np.isin(test, train).mean()), len(syn), len(test))


# --- 2. distance to closest record ---------------------------------------------------------------
@dataclass(frozen=True)
class DCRResult:
    """Is a synthetic record nearer to the training set than to the holdout?

    The headline, ``share_closer_to_train``, reads as if the holdout were as large as the
    training set: 0.5 is ideal, 1.0 means every synthetic row sits on a training row. It is
    computed on the whole sets (a copy of *any* training row counts): the raw share ``p`` of
    synthetic rows whose nearest real record is a training record has chance level
    ``c = n_train / (n_train + n_holdout)`` when the synthetic rows know nothing of who was
    trained on; the odds are then rescaled by the size ratio, ``p / (p + (1 − p)·c/(1 − c))``,
    which maps chance to 0.5 and copies to 1. The 95 % interval is Wilson's on ``p``, mapped the
    same way (the map is increasing). The raw share and its chance level are kept
    (``share_closer_to_full_train``, ``chance_full_train``), and so is the textbook variant on a
    training subsample as large as the holdout (``share_closer_to_train_subsample``), which
    is 0.5 at chance but reads only 0.5 + 0.5/k for a copy when training is k times larger.
    Medians are distances to the equal-size reference sets; the holdout's own median distance to
    the training subsample is the baseline a real, unseen record shows.

    **The interval counts real records, not only synthetic rows.** Synthetic rows that share their
    nearest real record share its side: whether that record fell in training or the holdout is one
    coin flip of the random split, whatever the number of rows on it. A model that over-produces a
    rare pattern (a DP model's noise on a rare category does) piles many rows on the few real
    records that hold it, and Wilson's interval on ``n_queries`` independent rows would read a
    handful of coin flips as evidence. So ``p``'s interval is Wilson's on the effective number of
    queries ``effective_queries = n² / Σ_j n_j²`` (Kish's; ``n_j`` rows nearest the real record
    ``j`` over both whole sets, ``nearest_records`` such records): the split's own variance of
    ``p`` when the synthetic rows know nothing of it (it equals ``n_queries`` when every row has
    its own nearest record, as copies of distinct training rows do). ``None`` for both when the
    distance does not say which record is nearest; the interval then treats rows as independent.
    """

    share_closer_to_train: float
    ci_low: float
    ci_high: float
    share_closer_to_full_train: float
    chance_full_train: float
    share_closer_to_train_subsample: float
    n_queries: int
    n_reference: int
    median_dcr_train: float
    median_dcr_holdout: float
    median_dcr_holdout_to_train: float
    nearest_records: int | None = None
    effective_queries: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Near(NamedTuple):
    """What a :data:`Nearest` callback may return: each query's distance to its nearest reference
    row, optionally how many reference rows lie at that distance (``count``) and which row is
    nearest (``index``, a position in the reference rows asked about)."""

    distance: np.ndarray
    count: np.ndarray | None = None
    index: np.ndarray | None = None


#: ``nearest(query_set, query_rows, reference_set, reference_rows)``: for each query row, the distance
#: to its nearest reference row, or (distances, how many reference rows lie at that distance), or
#: a :class:`Near`; sets are named ``"train"``, ``"test"`` and ``"synthetic"``.
Nearest = Callable[[str, np.ndarray, str, np.ndarray], "np.ndarray | tuple[np.ndarray, np.ndarray] | Near"]


class _Found(NamedTuple):
    distance: np.ndarray
    count: np.ndarray | None
    record: np.ndarray | None  # the nearest real record, numbered across training then holdout


def _found(result: np.ndarray | tuple[np.ndarray, np.ndarray] | Near, rows: np.ndarray | None = None,
           offset: int = 0) -> _Found:
    """A callback's answer; ``rows`` (the reference rows asked about) and ``offset`` (0 for training,
    ``n_train`` for the holdout) turn its ``index`` into a real-record number."""
    if isinstance(result, Near):
        count = None if result.count is None else np.asarray(result.count, dtype=float)
        record = None if result.index is None or rows is None else rows[np.asarray(result.index)] + offset
        return _Found(result.distance, count, record)
    if isinstance(result, tuple):
        return _Found(result[0], np.asarray(result[1], dtype=float), None)
    return _Found(result, None, None)


def _nearer_of(a: _Found, b: _Found) -> _Found:
    """The nearest over two reference sets; tied rows on both sides add up (the record: ``a``'s)."""
    d = np.minimum(a.distance, b.distance)
    count = None if a.count is None or b.count is None else (
        np.where(a.distance == d, a.count, 0.0) + np.where(b.distance == d, b.count, 0.0))
    record = None if a.record is None or b.record is None else np.where(a.distance <= b.distance, a.record, b.record)
    return _Found(d, count, record)


def _effective_queries(record: np.ndarray) -> tuple[int, float]:
    """(distinct nearest real records, Kish's effective number of queries ``n² / Σ_j n_j²``)."""
    counts = np.unique(record, return_counts=True)[1].astype(float)
    return len(counts), float(counts.sum() ** 2 / np.sum(counts**2))


def _share_nearer_of(a: _Found, b: _Found) -> float:
    """Share of queries nearer to ``a``'s set than ``b``'s. A tie counts half, or, when the number of
    tied rows is known on both sides, ``k_a / (k_a + k_b)``: the chance that a row drawn at random
    among all those at the nearest distance is ``a``'s, which keeps the share at its chance level
    ``n_a / (n_a + n_b)`` for sets of unequal size even when distances tie often (whole-number
    distances such as Hamming's)."""
    (d_a, k_a, _), (d_b, k_b, _) = a, b
    if k_a is None or k_b is None:
        return _share_nearer(d_a, d_b)
    tie = d_a == d_b
    weight = np.divide(k_a, k_a + k_b, out=np.full(len(d_a), 0.5), where=tie & (k_a + k_b > 0))
    return float(np.mean(d_a < d_b) + np.mean(np.where(tie, weight, 0.0)))


def dcr_protocol(nearest: Nearest, n_train: int, n_test: int, n_synthetic: int, max_queries: int,
                 seed: int) -> DCRResult:
    """The DCR protocol on any record distance (see :class:`DCRResult`): draws the reference
    subsamples and queries, asks ``nearest`` for the distances and computes the headline.

    Shared by tables (the mixed-type distance) and code matrices (Hamming), so both read alike.
    Distances that tie count half, or in proportion to the tied rows when ``nearest`` counts
    them (see :func:`_share_nearer_of`). When ``nearest`` names the nearest row (:class:`Near`'s
    ``index``), the interval counts the real records the queries land on (see :class:`DCRResult`).
    """
    rng = _rng(seed, 1)
    n_ref = min(n_train, n_test)
    in_train, in_test = _split(rng, n_train, n_ref), _split(rng, n_test, n_ref)
    queries = _sample(rng, n_synthetic, max_queries)
    holdout_queries = _sample(rng, n_test, max_queries)
    train_ref, test_ref = np.flatnonzero(in_train), np.flatnonzero(in_test)
    near_train = _found(nearest("synthetic", queries, "train", train_ref), train_ref)
    near_test = _found(nearest("synthetic", queries, "test", test_ref), test_ref, n_train)
    # the whole sets: the subsample's distance, or a nearer one among the rows left out
    rest_train, rest_test = np.flatnonzero(~in_train), np.flatnonzero(~in_test)
    full_train = near_train if in_train.all() else _nearer_of(
        near_train, _found(nearest("synthetic", queries, "train", rest_train), rest_train))
    full_test = near_test if in_test.all() else _nearer_of(
        near_test, _found(nearest("synthetic", queries, "test", rest_test), rest_test, n_train))
    d_baseline = _found(nearest("test", holdout_queries, "train", train_ref)).distance
    raw = _share_nearer_of(full_train, full_test)
    chance = n_train / (n_train + n_test)
    record = _nearer_of(full_train, full_test).record
    n_records, n_eff = _effective_queries(record) if record is not None else (None, None)
    low, high = _wilson(raw, n_eff if n_eff is not None else len(queries))
    share, low, high = (_size_adjusted(v, chance) for v in (raw, low, high))
    return DCRResult(share, low, high, raw, chance, _share_nearer_of(near_train, near_test), len(queries), n_ref,
                     float(np.median(near_train.distance)), float(np.median(near_test.distance)),
                     float(np.median(d_baseline)), n_records, n_eff)


def _dcr(x_train: np.ndarray, x_test: np.ndarray, x_syn: np.ndarray, max_queries: int, seed: int) -> DCRResult:
    sets = {"train": x_train, "test": x_test, "synthetic": x_syn}

    def nearest(q: str, qi: np.ndarray, r: str, ri: np.ndarray) -> Near:
        d, i = nearest_neighbors(sets[q][qi], sets[r][ri])
        return Near(d[:, 0], index=i[:, 0])

    return dcr_protocol(nearest, len(x_train), len(x_test), len(x_syn), max_queries, seed)


def _size_adjusted(p: float, chance: float) -> float:
    """A share nearer training, as if training and holdout were the same size (see DCRResult)."""
    odds_ratio = chance / (1 - chance)
    return float(p / (p + (1 - p) * odds_ratio)) if p > 0 else 0.0


def distance_to_closest_record(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame,
                               schema: Schema, max_queries: int = MAX_QUERIES, seed: int = 0) -> DCRResult:
    """DCR share for at most ``max_queries`` synthetic rows (see :class:`DCRResult`)."""
    _, (x_train, x_test, x_syn) = _encode(real_train, real_test, synthetic, schema, max_queries)
    return _dcr(x_train, x_test, x_syn, max_queries, seed)


# --- 3. membership inference ---------------------------------------------------------------------
@dataclass(frozen=True)
class KnownFractionAttack:
    """The thresholded attack when the attacker holds ``fraction`` of the training set."""

    fraction: float
    n_members: int
    n_non_members: int
    n_flagged: int
    precision: float  # NaN when nothing is flagged
    recall: float


@dataclass
class MembershipInferenceResult:
    """Distance-to-synthetic membership attack; AUROC and precision ≈ 0.5 mean it fails.

    Score: minus the distance from a real record to its nearest synthetic record. ``auroc`` ranks
    members against non-members. The thresholded attack flags "member" when that distance is at
    most ``threshold``, the distance below which ``target_fpr`` of the non-members fall (a fixed
    false-positive rate, so failure reads precision ≈ 0.5 and recall ≈ ``target_fpr``; a copy reads
    recall 1 and precision 1/(1 + ``target_fpr``)). ``by_known_fraction`` repeats it as in medGAN:
    the attacker holds ``fraction`` × n_train training records plus as many holdout records
    (nested subsets of the pools; fractions needing more records than the pools hold are left out).
    """

    auroc: float
    n_members: int
    n_non_members: int
    threshold: float
    target_fpr: float
    precision: float
    recall: float
    fpr: float
    median_distance_members: float
    median_distance_non_members: float
    by_known_fraction: list[KnownFractionAttack] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _precision(flag_members: np.ndarray, flag_non: np.ndarray) -> float:
    flagged = int(flag_members.sum() + flag_non.sum())
    return float(flag_members.sum() / flagged) if flagged else float("nan")


def membership_from_distances(d_members: np.ndarray, d_non_members: np.ndarray, n_train: int,
                              known_fractions: Sequence[float] = KNOWN_FRACTIONS, fpr: float = MIA_FPR,
                              rng: np.random.Generator | None = None) -> MembershipInferenceResult:
    """The membership attack's numbers from each record's distance to its nearest synthetic record
    (members first in their pool's random order, as :func:`_member_pools` draws them).

    The AUROC counts ties half. The threshold flags every record at most ``threshold`` away, so
    when many distances tie at the threshold (integer distances do) the false-positive rate can
    overshoot ``fpr``; with ``rng`` the records exactly at the threshold are flagged at random, each
    with the probability that brings the non-members' expected rate to ``fpr`` — the point of the
    ROC curve at ``fpr``, interpolated across the tie as the AUROC does.
    """
    from sklearn.metrics import roc_auc_score

    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be between 0 and 1, got {fpr}")
    d_mem, d_non = np.asarray(d_members, dtype=float), np.asarray(d_non_members, dtype=float)
    labels = np.r_[np.ones(len(d_mem)), np.zeros(len(d_non))]
    auroc = float(roc_auc_score(labels, -np.r_[d_mem, d_non]))
    threshold = float(np.quantile(d_non, fpr, method="inverted_cdf"))
    flag_mem, flag_non = d_mem <= threshold, d_non <= threshold
    if rng is not None:
        at = np.mean(d_non == threshold)  # > 0: the threshold is a non-member's distance
        keep = (fpr - np.mean(d_non < threshold)) / at
        flag_mem = (d_mem < threshold) | ((d_mem == threshold) & (rng.random(len(d_mem)) < keep))
        flag_non = (d_non < threshold) | ((d_non == threshold) & (rng.random(len(d_non)) < keep))
    rows = []
    for f in known_fractions:
        r = round(f * n_train)
        if 1 <= r <= min(len(d_mem), len(d_non)):
            flagged = int(flag_mem[:r].sum() + flag_non[:r].sum())
            rows.append(KnownFractionAttack(float(f), r, r, flagged, _precision(flag_mem[:r], flag_non[:r]),
                                            float(flag_mem[:r].mean())))
    return MembershipInferenceResult(auroc, len(d_mem), len(d_non), threshold, float(fpr),
                                     _precision(flag_mem, flag_non), float(flag_mem.mean()), float(flag_non.mean()),
                                     float(np.median(d_mem)), float(np.median(d_non)), rows)


def _membership(x_members: np.ndarray, x_non: np.ndarray, x_syn: np.ndarray, n_train: int,
                known_fractions: Sequence[float], fpr: float) -> MembershipInferenceResult:
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be between 0 and 1, got {fpr}")
    d_mem, d_non = np.split(nearest_distances(np.concatenate([x_members, x_non]), x_syn), [len(x_members)])
    return membership_from_distances(d_mem, d_non, n_train, known_fractions, fpr)


def membership_inference(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame,
                         schema: Schema, max_queries: int = MAX_QUERIES, seed: int = 0,
                         known_fractions: Sequence[float] = KNOWN_FRACTIONS,
                         fpr: float = MIA_FPR) -> MembershipInferenceResult:
    """medGAN/corGAN membership attack: equally many training and holdout records (at most
    ``max_queries // 2`` each), each scored by its distance to the nearest synthetic record."""
    _, (x_train, x_test, x_syn) = _encode(real_train, real_test, synthetic, schema, max_queries)
    members, non = _member_pools(len(x_train), len(x_test), max_queries, seed)
    return _membership(x_train[members], x_test[non], x_syn, len(x_train), known_fractions, fpr)


# --- 4. attribute inference ----------------------------------------------------------------------
@dataclass(frozen=True)
class AttributeScore:
    """One sensitive column guessed from the nearest synthetic record(s).

    ``metric`` is ``accuracy`` (categories; higher = better guess) or ``nmae`` (numbers: mean
    absolute error over the training range, on records where the value is observed; lower =
    better). ``baseline`` guesses the synthetic mode / median for everyone. ``leak`` is how much
    better members are guessed than holdout records (positive = the synthetic data remembers).
    """

    column: str
    kind: str
    metric: str
    members: float
    holdout: float
    baseline: float
    leak: float


@dataclass
class AttributeInferenceResult:
    """Per sensitive column, how well its value is guessed for members and for holdout records."""

    known_columns: list[str]
    k: int
    n_members: int
    n_non_members: int
    columns: list[AttributeScore] = field(default_factory=list)  # empty: no sensitive column

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _guess_discrete(neighbour_text: np.ndarray) -> np.ndarray:
    """Majority of each row's neighbours (ties to the nearest)."""
    if neighbour_text.shape[1] == 1:
        return neighbour_text[:, 0]
    counts = (neighbour_text[:, :, None] == neighbour_text[:, None, :]).sum(axis=2)
    return neighbour_text[np.arange(len(neighbour_text)), counts.argmax(axis=1)]


_Pair = tuple[np.ndarray, np.ndarray]  # (members, holdout records)


def _score_discrete(spec: ColumnSpec, truth: _Pair, syn_values: np.ndarray, neighbours: _Pair) -> AttributeScore:
    levels, counts = np.unique(syn_values.astype(str), return_counts=True)
    mode = levels[counts.argmax()]
    acc_mem, acc_non = (float(np.mean(_guess_discrete(syn_values[idx]) == t))
                        for t, idx in zip(truth, neighbours, strict=True))
    base = float(np.mean(np.concatenate(truth).astype(str) == mode))
    return AttributeScore(spec.name, spec.kind, "accuracy", acc_mem, acc_non, base, acc_mem - acc_non)


def _score_numeric(spec: ColumnSpec, truth: _Pair, syn_values: np.ndarray, neighbours: _Pair,
                   train_values: np.ndarray) -> AttributeScore:
    """Mean of the neighbours' observed values (the synthetic median when none is observed)."""
    observed = train_values[np.isfinite(train_values)]
    span = float(np.ptp(observed)) if observed.size and np.ptp(observed) > 0 else 1.0
    syn_observed = syn_values[np.isfinite(syn_values)]
    median = float(np.median(syn_observed)) if syn_observed.size else float("nan")

    def nmae(t: np.ndarray, guess: np.ndarray) -> float:
        ok = np.isfinite(t)
        return float(np.mean(np.abs(t[ok] - guess[ok])) / span) if ok.any() else float("nan")

    errors = []
    for t, idx in zip(truth, neighbours, strict=True):
        v = syn_values[idx]
        n_obs = np.isfinite(v).sum(axis=1)
        mean = np.where(np.isfinite(v), v, 0.0).sum(axis=1) / np.maximum(n_obs, 1)
        errors.append(nmae(t, np.where(n_obs > 0, mean, median)))
    all_truth = np.concatenate(truth)
    base = nmae(all_truth, np.full(len(all_truth), median))
    return AttributeScore(spec.name, spec.kind, "nmae", errors[0], errors[1], base, errors[1] - errors[0])


def _attribute(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema,
               space: RecordSpace, x_train: np.ndarray, x_test: np.ndarray, x_syn: np.ndarray, members: np.ndarray,
               non: np.ndarray, k: int) -> AttributeInferenceResult:
    sensitive = [c for c in schema.model_columns if c.sensitive]
    in_space = set(space.columns)  # the known columns are those the record space compares
    known = [c.name for c in schema.model_columns if not c.sensitive and c.name in in_space]
    if not sensitive or not known:
        return AttributeInferenceResult(known if sensitive else [], k, 0, 0, [])
    dims = space.indices(known)
    queries = np.concatenate([x_train[members][:, dims], x_test[non][:, dims]])
    idx_mem, idx_non = np.split(nearest_neighbors(queries, x_syn[:, dims], k)[1], [len(members)])
    scores = []
    for spec in sensitive:
        truth = (_column_keys(real_train[spec.name].iloc[members], spec),
                 _column_keys(real_test[spec.name].iloc[non], spec))
        syn_values = _column_keys(synthetic[spec.name], spec)
        if spec.kind in DISCRETE_KINDS:
            scores.append(_score_discrete(spec, truth, syn_values, (idx_mem, idx_non)))
        else:
            train_values = numeric_values(real_train[spec.name], spec.kind)
            scores.append(_score_numeric(spec, truth, syn_values, (idx_mem, idx_non), train_values))
    return AttributeInferenceResult(known, k, len(members), len(non), scores)


def attribute_inference(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame,
                        schema: Schema, max_queries: int = MAX_QUERIES, k: int = 1,
                        seed: int = 0) -> AttributeInferenceResult:
    """Guess each ``sensitive`` column of a real record from its ``k`` nearest synthetic records on
    the other columns, for the membership pools' training and holdout records (empty without
    sensitive columns). The gap between the two is what the synthetic data gives away."""
    space, (x_train, x_test, x_syn) = _encode(real_train, real_test, synthetic, schema, max_queries)
    members, non = _member_pools(len(x_train), len(x_test), max_queries, seed)
    return _attribute(real_train, real_test, synthetic, schema, space, x_train, x_test, x_syn, members, non, k)


# --- 5. k-anonymity --------------------------------------------------------------------------------
@dataclass(frozen=True)
class KAnonymityResult:
    """Training equivalence classes (records sharing the quasi-identifiers) met by synthetic records.

    ``min_k`` and ``median_k`` are over synthetic records whose quasi-identifier combination occurs
    in training (None when none does); ``unique_match_share`` is the share of all synthetic
    records whose combination belongs to exactly one training record (k = 1). ``real_min_k`` and
    ``real_unique_share`` describe the training table itself, for comparison.
    """

    quasi_identifiers: list[str]
    n_synthetic: int
    matched_share: float
    min_k: int | None
    median_k: float | None
    unique_match_share: float
    real_min_k: int | None
    real_unique_share: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def k_anonymity(real_train: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> KAnonymityResult:
    """k-anonymity of the ``quasi_identifier`` columns (empty result when there are none).

    Values are compared exactly (numbers to 9 significant digits: an age of 70 matches 70.0, not
    70.4; categories as text; missing as a value), so coarsen numbers in the data, not here.
    """
    qi = [c for c in schema.model_columns if c.quasi_identifier]
    if not qi:
        return KAnonymityResult([], len(synthetic), 0.0, None, None, 0.0, None, 0.0)
    _check_frames([c.name for c in qi], real_train=real_train, synthetic=synthetic)
    train, syn = _row_groups([real_train, synthetic], qi)
    class_size = np.bincount(train)  # codes are given in order of appearance: training classes first
    k = np.zeros(len(syn), dtype=np.int64)
    known = syn < len(class_size)
    k[known] = class_size[syn[known]]
    matched = k[k > 0]
    return KAnonymityResult([c.name for c in qi], len(syn), float(matched.size / len(syn)),
                            int(matched.min()) if matched.size else None,
                            float(np.median(matched)) if matched.size else None,
                            float(np.mean(k == 1)), int(class_size.min()), float(np.mean(class_size[train] == 1)))


# --- all of them -----------------------------------------------------------------------------------
@dataclass
class PrivacyAttackResult:
    """Every attack of one synthetic table; ``to_dict`` is what ``metrics.json`` stores."""

    exact_copies: ExactCopyResult
    dcr: DCRResult
    membership: MembershipInferenceResult
    attribute: AttributeInferenceResult
    k_anonymity: KAnonymityResult

    def to_dict(self) -> dict[str, Any]:
        return {"exact_copies": self.exact_copies.to_dict(), "distance_to_closest": self.dcr.to_dict(),
                "membership_inference": self.membership.to_dict(), "attribute_inference": self.attribute.to_dict(),
                "k_anonymity": self.k_anonymity.to_dict()}


def _encode(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema,
            max_queries: int, columns: Sequence[str] | None = None,
            max_levels: int | None = None) -> tuple[RecordSpace, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    if max_queries < 2:
        raise ValueError(f"max_queries must be at least 2, got {max_queries}")
    _check_frames([c.name for c in schema.model_columns], real_train=real_train, real_test=real_test,
                  synthetic=synthetic)
    space = RecordSpace.fit(real_train, schema, columns, max_levels)
    return space, (space.transform(real_train), space.transform(real_test), space.transform(synthetic))


def privacy_attacks(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema,
                    max_queries: int = MAX_QUERIES, seed: int = 0, attribute_k: int = 1,
                    known_fractions: Sequence[float] = KNOWN_FRACTIONS, fpr: float = MIA_FPR,
                    distance_columns: Sequence[str] | None = None,
                    max_levels: int | None = None) -> PrivacyAttackResult:
    """Every attack with one record space fitted on ``real_train``; same numbers as the single
    functions with the same arguments, deterministic for a ``seed``.

    ``distance_columns`` and ``max_levels`` bound the record space of the distance attacks (DCR,
    membership and attribute inference; see :class:`RecordSpace`) on wide tables and many-level
    categories; exact copies and k-anonymity still compare every column exactly."""
    space, (x_train, x_test, x_syn) = _encode(real_train, real_test, synthetic, schema, max_queries,
                                              distance_columns, max_levels)
    members, non = _member_pools(len(x_train), len(x_test), max_queries, seed)
    return PrivacyAttackResult(
        exact_copies(real_train, real_test, synthetic, schema),
        _dcr(x_train, x_test, x_syn, max_queries, seed),
        _membership(x_train[members], x_test[non], x_syn, len(x_train), known_fractions, fpr),
        _attribute(real_train, real_test, synthetic, schema, space, x_train, x_test, x_syn, members, non,
                   attribute_k),
        k_anonymity(real_train, synthetic, schema),
    )
