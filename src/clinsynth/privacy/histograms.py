"""Where a column's values are, from one noisy histogram on two public grids — and what to do
when they cannot be found.

A number column's *value query* (see :mod:`clinsynth.privacy.statistics`) counts each observed
value twice: with weight ``w_f`` on the **fine grid** (buckets of 0.1 in ``t = asinh(x / 1e-3)``:
~linear below 1e-3, 10 % per bucket above; 30 days for dates) and with weight ``w_c`` on the
**coarse grid** (16 fine buckets: a factor of ~5 per bucket, 480 days for dates). ``w_f² + w_c²
= 1``, so one record moves the pair by at most 1 in L2, as one histogram did; both get the
release's Gaussian noise, so the fine counts have noise sd ``noise_std / w_f`` and the coarse
ones ``noise_std / w_c``. ``w_c`` is 0.6 on a table with few records per unit of noise, less on
a large one (:func:`coarse_weight`, from ``n`` and the noise alone).

Why two grids: the fine grid gives precise bounds and quantiles when a bucket of 10 % holds
enough records to clear the noise; on a small or wide table none does, and a sum of fine buckets
carries the noise of all of them (16 buckets: 4 × the sd), while one coarse bucket carries it
once. Everything below is post-processing of the two noisy histograms.

**Levels.** Four views, finest first: the fine grid, sums of 4 fine buckets, the coarse grid, sums
of 4 coarse buckets (all aligned on ``t = 0``, so every coarser edge is a finer edge). A bucket is
*bulk* at its level when its noisy count clears :func:`bulk_threshold` for its own noise sd, with
the false-alarm rate 1e-4 split between the levels, most of it to the fine grid (a stray noise
bucket would stretch bounds). Exact 0 is a public location of its own (:func:`zero_spike`).

**Composite.** The *base* level is the finest whose bulk holds at least :data:`COVER` of the
largest bulk mass of any level (a fine grid that only finds a spike at 0 while the coarse grid
finds the rest is not the base). Its bulk range, with the buckets below the cut inside it set to
0, is extended by every coarser level's bulk bucket outside it whose noisy count, less what the
composite already holds there (its noisy counts as drawn), clears :data:`EXTEND_SIGMAS` sds of
the difference (a bucket past both ends is skipped: its extra could lie on either side). When
the column's observed count (from its format histogram) evidently exceeds what the composite
holds, the coarse buckets next to it that add most join it (:func:`locate`); an end segment of the
coarsest level sheds outer coarse buckets that show nothing (:func:`_trim_ends`). Bounds
are the base range widened by half its width, or the extensions' outer edges where they reach
further (never across 0 for one-signed values); the encoder's loc/scale and quantile knots come
from the composite's masses, spread inside each coarse bucket by a unimodal fit to the fine
grid's noisy counts there (evenly in ``t`` where the fit finds nothing).

**Public default.** When no level finds any bulk (all values missing, or spread so thin that no
bucket of a factor of ~5 clears the noise), the column gets :func:`public_default`: a wide range
by kind, chosen without looking at the data. The release records that it did.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri

from clinsynth.data.transforms import datetime_days
from clinsynth.schema import ColumnSpec

_ASINH_UNIT = 1e-3        # t = asinh(x / unit): ~linear below 1e-3, ~log (10 %/bucket) above
_ASINH_STEP = 0.1
_ASINH_HALF_SPAN = 300    # buckets each side of 0: t in [-30, 30], |x| up to ~5e9
_DAY_NS = 86_400 * 10**9
_DATE_STEP_DAYS = 30
_DATE_SPAN = ("1800-01-01", "2200-01-01")
_BULK_SIGMAS = 4.0        # a bucket is "bulk" when its noisy count clears ≥ 4 noise sds …
_BULK_FALSE_ALARM = 1e-4  # … and so many that a pure-noise bucket anywhere on the grid clears it this rarely
_WIDEN = 0.5              # released bounds: bulk range widened by half its width on each side
_P_EPS = 1e-6             # as NumericCodec: normal scores stay within ±4.75
_PUBLIC_PROBS = (0.02, 0.98)

#: Fine buckets per coarse bucket.
COARSE_FACTOR = 16
#: A record's largest weight on the coarse grid (the fine grid's is √(1 − w²)): on a table with
#: few records per unit of noise, where the refusal and comfort bars of
#: :mod:`clinsynth.privacy.facts_budget` are decided; see :func:`coarse_weight`.
COARSE_WEIGHT = 0.6
FINE_WEIGHT = math.sqrt(1.0 - COARSE_WEIGHT ** 2)
_COARSE_FULL_UNTIL = 40.0  # records per noise sd up to which the coarse grid gets its full weight
_COARSE_LEAST = 0.3
#: The levels, as (grid, buckets of that grid summed, share of the false-alarm rate), finest first:
#: the fine grid keeps most of it, so its cut stays near the one-grid cut (5.2 sds, not 5.1).
LEVELS: tuple[tuple[str, int, float], ...] = (("fine", 1, 0.7), ("fine", 4, 0.1), ("coarse", 1, 0.1),
                                              ("coarse", 4, 0.1))
#: Exact 0 is a public location for numbers (counts, lab values below detection): the fine bucket
#: at 0 has its own cut at this many sds (a false alarm of 3e-6) and joins the located range.
ZERO_SIGMAS = 4.5
#: The base level's bulk must hold this share of the largest bulk mass of any level.
COVER = 0.75
#: A coarser level's bucket extends the composite when what it adds clears this many sds.
EXTEND_SIGMAS = 3.0
#: The column's observed count (format histogram) exceeds what was located by this many sds of
#: the difference, and by this share of the count, before the coarse buckets next to it are searched.
UNLOCATED_SIGMAS = 3.0
UNLOCATED_SHARE = 0.1
#: Then the coarse levels' buckets nearest each end (this many per end and level) are searched, and
#: the one adding most (in sds, above this many) joins; at most this many rounds.
NEAR_BUCKETS = 2
NEAR_SIGMAS = 2.5
UNLOCATED_ROUNDS = 3
#: An end segment spanning several coarse buckets sheds the outer ones whose noisy count is under this many sds.
TRIM_SIGMAS = 1.0
#: The public defaults: a wide range by kind, used when the data show nothing.
PUBLIC_NUMBER_RANGE = (0.0, 1e6)
PUBLIC_DATE_RANGE = ("1900-01-01", "2100-01-01")


def coarse_weight(n: int, noise_std: float) -> float:
    """The coarse grid's weight, from public facts only: :data:`COARSE_WEIGHT` while ``n`` is at
    most 40 noise sds (where the coarse grid is what locates values), then falling as
    ``√(40 sd / n)`` to 0.3, so a large table keeps most of its weight on the fine grid (at
    0.6 the fine counts carry 25 % more noise, at 0.3 5 %). The bars of
    :mod:`clinsynth.privacy.facts_budget` assume the full weight; beyond 40 sds they hold anyway."""
    if n <= _COARSE_FULL_UNTIL * noise_std or not noise_std > 0:
        return COARSE_WEIGHT
    return max(_COARSE_LEAST, COARSE_WEIGHT * math.sqrt(_COARSE_FULL_UNTIL * noise_std / n))


def grid_edges(kind: str) -> np.ndarray:
    """The fine grid's public bucket edges (x space; days since 1970 for dates), strictly increasing."""
    if kind == "datetime":
        lo, hi = (datetime_days(d) for d in _DATE_SPAN)
        n = math.ceil((hi - lo) / _DATE_STEP_DAYS)
        return lo + _DATE_STEP_DAYS * np.arange(n + 1, dtype=float)
    # integer steps keep the t = 0 edge exactly 0, so non-negative data never spills below 0
    t = np.arange(-_ASINH_HALF_SPAN, _ASINH_HALF_SPAN + 1) * _ASINH_STEP
    return _ASINH_UNIT * np.sinh(t)


def number_grid() -> tuple[float, float, int]:
    """The number grid's formula ``(unit, step, half)``: fine edge ``i`` is ``unit·sinh(step·(i − half))``,
    ``i = 0 … 2·half`` — what an engine computes a bucket from arithmetically
    (:func:`clinsynth.engines.sql.bucket`) instead of searching the edges."""
    return _ASINH_UNIT, _ASINH_STEP, _ASINH_HALF_SPAN


def _anchor(kind: str) -> int:
    """The fine edge every coarser grid keeps: x = 0 for numbers, the grid's start for dates."""
    return 0 if kind == "datetime" else _ASINH_HALF_SPAN


def group_starts(n_edges: int, anchor: int, factor: int) -> np.ndarray:
    """Indices of the edges kept when buckets are grouped ``factor`` at a time around ``anchor``
    (the ends are always kept, so the end buckets may be partial)."""
    kept = np.arange(anchor % factor, n_edges, factor)
    return np.unique(np.concatenate([[0], kept, [n_edges - 1]]))


def coarse_edges(kind: str) -> np.ndarray:
    """The coarse grid's public edges: every :data:`COARSE_FACTOR`-th fine edge around the anchor."""
    fine = grid_edges(kind)
    return fine[group_starts(fine.size, _anchor(kind), COARSE_FACTOR)]


def step_label(kind: str, grid: str, factor: int) -> str:
    """What a level's bucket is, in words (for the release's record)."""
    fine = COARSE_FACTOR if grid == "coarse" else 1
    if kind == "datetime":
        return f"{_DATE_STEP_DAYS * fine * factor} days"
    ratio = math.exp(_ASINH_STEP * fine * factor)
    return f"×{ratio:.3g}" if ratio >= 1.5 else f"{ratio - 1:.0%}"


def bulk_threshold(noise_std: float | np.ndarray, n_buckets: int, false_alarm: float = _BULK_FALSE_ALARM):
    """The noisy count a bucket must exceed to be bulk: ≥ 4 sds, and high enough that the
    largest of ``n_buckets`` pure-noise counts clears it with probability ≤ ``false_alarm`` (5.1
    sds on the 600-bucket number grid at 1e-4); else one stray bucket in ~60 would stretch bounds
    to absurd values."""
    return noise_std * max(_BULK_SIGMAS, float(-ndtri(false_alarm / n_buckets)))


def bucket(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bucket index per value (``edges[i] <= x < edges[i + 1]``); values off the grid go to its ends."""
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)


# -- levels ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Level:
    """One view of the noisy histogram: bucket edges, noisy counts, each count's noise sd and cut."""

    name: str
    edges: np.ndarray
    counts: np.ndarray
    sd: np.ndarray
    cut: np.ndarray

    @property
    def bulk(self) -> np.ndarray:
        return np.flatnonzero(self.counts > self.cut)

    @property
    def mass(self) -> float:
        return float(self.counts[self.bulk].sum())


def _grouped(edges: np.ndarray, counts: np.ndarray, sd: float, anchor: int, factor: int,
             name: str, false_alarm: float) -> Level:
    starts = group_starts(edges.size, anchor, factor)
    sums = np.add.reduceat(counts, starts[:-1])
    sds = sd * np.sqrt(np.diff(starts).astype(float))
    return Level(name, edges[starts], sums, sds, bulk_threshold(sds, sums.size, false_alarm))


def levels(kind: str, fine_counts: np.ndarray, fine_sd: float, coarse_counts: np.ndarray,
           coarse_sd: float) -> list[Level]:
    """The :data:`LEVELS` of one value query, finest first (noisy counts in records)."""
    fine, coarse = grid_edges(kind), coarse_edges(kind)
    out = []
    for grid, factor, part in LEVELS:
        edges, counts, sd = (fine, fine_counts, fine_sd) if grid == "fine" else (coarse, coarse_counts, coarse_sd)
        anchor = _anchor(kind) if grid == "fine" else int(np.searchsorted(coarse, 0.0)) if kind != "datetime" else 0
        out.append(_grouped(edges, counts, sd, anchor, factor, step_label(kind, grid, factor), part * _BULK_FALSE_ALARM))
    return out


def zero_spike(kind: str, fine_counts: np.ndarray, fine_sd: float) -> tuple[float, float, float, float] | None:
    """The fine bucket at exact 0 — (lo, hi, noisy count, sd) — when its count clears
    :data:`ZERO_SIGMAS` sds: a pre-set location, so no cut for searching 600 buckets."""
    if kind == "datetime":
        return None
    edges, at = grid_edges(kind), _anchor(kind)
    count = float(fine_counts[at])
    return (float(edges[at]), float(edges[at + 1]), count, fine_sd) if count > ZERO_SIGMAS * fine_sd else None


# -- the composite --------------------------------------------------------------------------
@dataclass(frozen=True)
class Composite:
    """Where the values are: segments (``edges``), their noisy ``counts`` (the base level's as drawn,
    what a coarser bucket adds for an extension, 0 for a gap between them) with the ``sd`` of each,
    the ``mass`` the encoder uses (counts below the cut inside the base range set to 0), and the
    levels that made them."""

    edges: np.ndarray
    counts: np.ndarray
    mass: np.ndarray
    sd: np.ndarray
    base: str
    extended_by: tuple[str, ...]
    base_range: tuple[float, float]


def locate(found: list[Level], spike: tuple[float, float, float, float] | None = None,
           observed: tuple[float, float] | None = None) -> Composite | None:
    """The composite of the module docstring (with the ``spike`` at 0 of :func:`zero_spike`
    joined when it lies outside), or None when no level has any bulk.

    ``observed`` — the column's noisy count of observed cells and its sd, from the format
    histogram (post-processing, no new query) — catches mass that no bucket could show: when the
    composite holds evidently less (:data:`UNLOCATED_SIGMAS`, and :data:`UNLOCATED_SHARE` of it), the
    coarse levels' bucket adding most next to the composite joins it (:func:`_nearest`), while
    the gap stays evident. Without this a count column
    with half its cells at 0 and the rest spread over 1–16 was located as the zeros alone and
    released with bounds [0, 1] (sklearn's digits at ε = 1: 8 of 64 pixels, 15–34 % of their
    values clipped to 1)."""
    with_bulk = [lv for lv in found if lv.bulk.size]
    if not with_bulk:
        return None
    best = max(lv.mass for lv in with_bulk)
    base = next(lv for lv in with_bulk if lv.mass >= COVER * best)
    first, last = int(base.bulk[0]), int(base.bulk[-1])
    edges = list(base.edges[first:last + 2])
    base_range = (float(edges[0]), float(edges[-1]))
    counts = list(base.counts[first:last + 1])
    mass = list(np.where(base.counts > base.cut, base.counts, 0.0)[first:last + 1])
    sd = list(base.sd[first:last + 1])
    built = (edges, counts, mass, sd)
    extended: list[str] = []
    for lv in found[found.index(base) + 1:]:
        for i in lv.bulk:
            gain = _gain(lv, int(i), built)
            if gain is not None and gain[0] > EXTEND_SIGMAS * gain[1]:
                _attach(float(lv.edges[i]), float(lv.edges[i + 1]), (gain[0], float(lv.sd[i])), built)
                if lv.name not in extended:
                    extended.append(lv.name)
    if spike is not None and (spike[1] <= edges[0] or spike[0] >= edges[-1]):
        lo, hi, count, spread = spike
        _attach(lo, hi, (count, spread), built)
        extended.append("the bucket at 0")
    for _ in range(UNLOCATED_ROUNDS):
        if observed is None or not _unlocated(observed, counts, sd):
            break
        near = [(g[0] / g[1], k, i, g) for k, lv in enumerate(found[2:], 2) for i, g in _nearest(lv, built)]
        if not near or max(near)[0] <= NEAR_SIGMAS:
            break
        _, k, i, gain = max(near)
        _attach(float(found[k].edges[i]), float(found[k].edges[i + 1]), (gain[0], float(found[k].sd[i])), built)
        if (label := f"{found[k].name} next to it (the observed count held more)") not in extended:
            extended.append(label)
    trimmed = _trim_ends(found[2], built)
    base_range = (max(base_range[0], trimmed[0]), min(base_range[1], trimmed[1]))
    return Composite(np.array(edges), np.array(counts), np.array(mass), np.array(sd), base.name, tuple(extended),
                     base_range)


def _trim_ends(coarse: Level, built: tuple[list, list, list, list]) -> tuple[float, float]:
    """Narrow the composite's end segments that span several ``coarse`` buckets (a bucket of the
    coarsest level: a factor of 600) to the coarse buckets that show anything: an outer one whose
    noisy count is under :data:`TRIM_SIGMAS` sds goes, its segment's count kept. Returns the new ends.
    Kept whole, such a segment released pixel intensities of 0–16 with bounds up to 272 and drew
    values in all of it (sklearn's digits at ε = 1)."""
    edges = built[0]
    lows, highs = coarse.edges[:-1], coarse.edges[1:]
    last = np.flatnonzero((lows >= edges[-2]) & (highs <= edges[-1]))
    while last.size > 1 and coarse.counts[last[-1]] < TRIM_SIGMAS * coarse.sd[last[-1]]:
        last = last[:-1]
    if last.size:
        edges[-1] = float(highs[last[-1]])
    first = np.flatnonzero((lows >= edges[0]) & (highs <= edges[1]))
    while first.size > 1 and coarse.counts[first[0]] < TRIM_SIGMAS * coarse.sd[first[0]]:
        first = first[1:]
    if first.size:
        edges[0] = float(lows[first[0]])
    return edges[0], edges[-1]


def _unlocated(observed: tuple[float, float], counts: list, sd: list) -> bool:
    """Whether the observed count evidently exceeds what the composite holds."""
    count, count_sd = observed
    gap = count - sum(counts)
    return gap > UNLOCATED_SIGMAS * math.sqrt(count_sd ** 2 + sum(s ** 2 for s in sd)) and gap > UNLOCATED_SHARE * count


def _nearest(lv: Level, built: tuple[list, list, list, list]) -> list[tuple[int, tuple[float, float]]]:
    """``lv``'s :data:`NEAR_BUCKETS` buckets nearest each end of the composite that reach past it, with their
    :func:`_gain`: where mass the located range missed most likely is (next to it), searched in few
    buckets so a stray noise bucket far away is not taken for it."""
    edges = built[0]
    reach = [(i, g) for i in range(lv.counts.size) if (g := _gain(lv, i, built)) is not None]
    below = [(i, g) for i, g in reach if float(lv.edges[i]) < edges[0]][::-1][:NEAR_BUCKETS]
    above = [(i, g) for i, g in reach if float(lv.edges[i + 1]) > edges[-1]][:NEAR_BUCKETS]
    return below + above


def _gain(lv: Level, i: int, built: tuple[list, list, list, list]) -> tuple[float, float] | None:
    """What ``lv``'s bucket ``i`` adds outside the composite built so far — its noisy count less the
    composite's noisy counts (as drawn: unbiased) inside it — and that difference's sd; None for a
    bucket inside the composite or past both its ends (which side its extra lies on is unknown)."""
    edges, counts, _, sd = built
    lo, hi = float(lv.edges[i]), float(lv.edges[i + 1])
    if hi <= edges[0] or lo >= edges[-1]:  # wholly outside: a gap, then the bucket
        held, held_var = 0.0, 0.0
    elif (lo < edges[0]) != (hi > edges[-1]):  # past one end: only what it adds there
        inside = [j for j, (a, b) in enumerate(zip(edges[:-1], edges[1:])) if a >= lo and b <= hi]
        held = sum(counts[j] for j in inside)
        held_var = sum(sd[j] ** 2 for j in inside)
    else:
        return None
    return float(lv.counts[i]) - held, math.sqrt(float(lv.sd[i]) ** 2 + held_var)


def _attach(lo: float, hi: float, segment: tuple[float, float], built: tuple[list, list, list, list]) -> None:
    """Join the bucket [lo, hi) at the end of the composite it lies past (after a gap segment of 0
    when it does not touch it), as a segment holding ``segment`` (noisy count, its sd)."""
    edges, counts, mass, sd = built
    extra, spread = segment
    if hi > edges[-1]:
        if lo > edges[-1]:
            _add(len(edges), lo, 0.0, 0.0, edges, counts, mass, sd)
        _add(len(edges), hi, extra, spread, edges, counts, mass, sd)
    else:
        if hi < edges[0]:
            _add(0, hi, 0.0, 0.0, edges, counts, mass, sd)
        _add(0, lo, extra, spread, edges, counts, mass, sd)


def _add(at: int, edge: float, count: float, sd: float, edges: list, counts: list, mass: list, sds: list) -> None:
    """Add a segment at an end of the composite: a new edge and the segment it closes (at the
    top) or opens (at the bottom)."""
    seg = len(counts) if at else 0
    edges.insert(at, edge)
    counts.insert(seg, count)
    mass.insert(seg, max(count, 0.0))
    sds.insert(seg, sd)


def widen(a: float, b: float, spec: ColumnSpec, outer: tuple[float, float] | None = None) -> tuple[float, float]:
    """Bounds from the located range [a, b]: wider by half its width each side, and at least the
    ``outer`` range (a composite's extensions: coarse bucket edges, generous already), never across
    0 for one-signed data (lab values stay non-negative), rounded outward to the column's precision."""
    pad = _WIDEN * (b - a)
    lo, hi = a - pad, b + pad
    if outer is not None:
        lo, hi = min(lo, outer[0]), max(hi, outer[1])
        a, b = min(a, outer[0]), max(b, outer[1])
    if spec.kind == "datetime":  # whole days, kept on the grid (pandas cannot hold dates before 1677)
        edges = grid_edges("datetime")
        return float(max(math.floor(lo), edges[0])), float(min(math.ceil(hi), edges[-1]))
    if a >= 0:
        lo = max(lo, 0.0)
    if b <= 0:
        hi = min(hi, 0.0)
    digits = 0 if spec.kind == "integer" else spec.decimals
    if digits is not None:
        unit = 10.0 ** -digits
        lo, hi = math.floor(round(lo / unit, 9)) * unit, math.ceil(round(hi / unit, 9)) * unit
    return float(lo), float(hi)


def location_scale(mids: np.ndarray, weights: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """Weighted mean and sd of bucket midpoints; a degenerate sd falls back to a quarter of the bounds."""
    loc = float(np.average(mids, weights=weights))
    scale = float(np.sqrt(np.average((mids - loc) ** 2, weights=weights)))
    if not scale > 1e-12:
        scale = (hi - lo) / 4 if hi > lo else 1.0
    return loc, scale


def quantile_table(edges: np.ndarray, mass: np.ndarray) -> tuple[list[float], list[float]]:
    """NumericCodec's quantile state from a histogram: strictly increasing knots and normal scores.

    Flat stretches of the CDF (buckets with no mass) keep their first edge, except the last
    point, which keeps the range's right edge; scores must increase strictly for the inverse.
    """
    cum = np.concatenate([[0.0], np.cumsum(mass)]) / mass.sum()
    probs = np.clip(cum, _P_EPS, 1 - _P_EPS)
    _, keep = np.unique(probs, return_index=True)
    keep[-1] = probs.size - 1
    return edges[keep].tolist(), ndtri(probs[keep]).tolist()


def _isotonic_costs(y: np.ndarray) -> np.ndarray:
    """``c[m]``: the squared error of the least-squares non-decreasing fit to ``y[:m]``, for every
    ``m`` — pool-adjacent-violators run once, left to right: a fit's error is ``Σ y² − Σ_b s_b²/n_b``
    over its pooled blocks ``b`` (sums ``s_b``, sizes ``n_b``), kept up to date as blocks merge."""
    sums, sizes, costs = [], [], np.zeros(y.size + 1)
    squares = pooled = 0.0
    for i, v in enumerate(y.tolist()):
        squares += v * v
        s, n = v, 1
        while sums and sums[-1] * n > s * sizes[-1]:  # the previous block's mean exceeds this one's
            ps, pn = sums.pop(), sizes.pop()
            pooled -= ps * ps / pn
            s, n = s + ps, n + pn
        sums.append(s), sizes.append(n)
        pooled += s * s / n
        costs[i + 1] = squares - pooled
    return costs


def unimodal_fit(y: np.ndarray) -> np.ndarray:
    """The least-squares fit to ``y`` that rises then falls (Stout's unimodal regression): the
    turning point whose rising fit before it and falling fit after it cost least (both costs for
    every turning point from one pass each way), then the two isotonic fits. Noisy counts of a
    column's values are mostly one hump; the fit pools a tail of empty buckets' noise to about 0
    instead of reading it as mass."""
    from sklearn.isotonic import isotonic_regression

    y = np.asarray(y, dtype=float)
    if y.size == 0:
        return y
    rising, falling = _isotonic_costs(y), _isotonic_costs(y[::-1])[::-1]
    m = int(np.argmin(rising + falling))
    return np.concatenate([isotonic_regression(y[:m], increasing=True) if m else y[:0],
                           isotonic_regression(y[m:], increasing=False) if m < y.size else y[:0]])


#: a located range of more fine buckets than this keeps the even spread (the fit is quadratic)
_SHAPE_MAX_BUCKETS = 400


def _refined(edges: np.ndarray, mass: np.ndarray, kind: str, fine_counts: np.ndarray | None = None,
             bounds: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Masses on fine buckets: each segment's mass spread over its fine buckets, and the margins
    between the located range and the released ``bounds`` given what the fine grid saw there.

    With the fine grid's noisy counts, a unimodal fit to them over the bounds (post-processing of
    the release, no new query) shapes both: a segment's mass in proportion to the fit inside it
    (its total kept: the coarser level's estimate), a margin bucket the fit itself. Without them,
    or where the fit finds nothing, a segment is spread evenly in ``t`` (the grid's own scale; in
    time for dates) and the margins hold nothing. Spread evenly, a coarse bucket of numbers (a
    factor of 5) holding ages 37–80 released ages up to 180; with empty margins no synthetic
    patient was younger than 37 where a quarter of the real ones were (sklearn's diabetes ages at
    ε = 1)."""
    fine = grid_edges(kind)
    scale = (lambda x: x) if kind == "datetime" else (lambda x: np.arcsinh(x / _ASINH_UNIT))
    lo, hi = bounds if bounds is not None else (edges[0], edges[-1])
    lo, hi = min(lo, edges[0]), max(hi, edges[-1])
    shape = None
    if fine_counts is not None:
        first, last = bucket(fine, np.array([lo]))[0], bucket(fine, np.array([hi]))[0] + 1
        if 0 < last - first <= _SHAPE_MAX_BUCKETS:
            shape = np.zeros(fine.size - 1)
            shape[first:last] = np.maximum(unimodal_fit(np.asarray(fine_counts[first:last], float)), 0.0)

    def pieces(a: float, b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fine cuts in (a, b], each piece's share (in t) of the fine bucket holding it, and that bucket."""
        cuts = np.concatenate([fine[(fine > a) & (fine < b)], [b]])
        starts = np.concatenate([[a], cuts[:-1]])
        at = bucket(fine, starts)
        width = scale(fine[at + 1]) - scale(fine[at])
        return cuts, (scale(cuts) - scale(starts)) / np.where(width > 0, width, 1.0), at

    out_edges, out_mass = [lo], []
    if shape is not None and lo < edges[0]:
        cuts, part, at = pieces(lo, edges[0])
        out_edges.extend(cuts.tolist()), out_mass.extend((shape[at] * part).tolist())
    elif lo < edges[0]:
        out_edges.append(edges[0]), out_mass.append(0.0)
    for e0, e1, m in zip(edges[:-1], edges[1:], mass):
        cuts, part, at = pieces(e0, e1)
        t = scale(np.concatenate([[e0], cuts]))
        share = np.diff(t) / (t[-1] - t[0])
        if shape is not None and cuts.size > 1 and (shape[at] * part).sum() > 0:
            share = shape[at] * part / (shape[at] * part).sum()
        out_edges.extend(cuts.tolist())
        out_mass.extend((m * share).tolist())
    if shape is not None and hi > edges[-1]:
        cuts, part, at = pieces(edges[-1], hi)
        out_edges.extend(cuts.tolist()), out_mass.extend((shape[at] * part).tolist())
    elif hi > edges[-1]:
        out_edges.append(hi), out_mass.append(0.0)
    out_edges, out_mass = np.array(out_edges), np.array(out_mass)
    # margin pieces with no mass at the outer ends add nothing: the table starts and ends where
    # mass was found (or at the located range), as without the fine counts
    first = min(int(np.argmax(out_mass > 0)) if (out_mass > 0).any() else 0, int(np.searchsorted(out_edges, edges[0])))
    last = max(out_mass.size - int(np.argmax(out_mass[::-1] > 0)) if (out_mass > 0).any() else out_mass.size,
               int(np.searchsorted(out_edges, edges[-1])))
    return out_edges[first:last + 1], out_mass[first:last]


def composite_state(comp: Composite, lo: float, hi: float, kind: str = "number",
                    fine_counts: np.ndarray | None = None) -> dict[str, Any]:
    """NumericCodec state (loc/scale and quantile knots/scores) from the composite's masses, shaped
    by the fine grid's noisy counts when given (:func:`_refined`)."""
    weights = comp.mass if comp.mass.sum() > 0 else np.ones_like(comp.mass)
    edges, weights = _refined(comp.edges, weights, kind, fine_counts,
                              (lo, hi) if fine_counts is not None else None)
    mids = (edges[:-1] + edges[1:]) / 2
    loc, scale = location_scale(mids, weights, lo, hi)
    knots, scores = quantile_table(edges, weights)
    return {"loc": loc, "scale": scale, "knots": knots, "scores": scores}


def public_state(lo: float, hi: float) -> dict[str, Any]:
    """Encoder state from public bounds alone: a normal spread over them (±2 sd at the bounds)."""
    scale = (hi - lo) / 4 if hi > lo else 1.0
    return {"loc": (lo + hi) / 2, "scale": scale, "knots": [lo, hi], "scores": ndtri(_PUBLIC_PROBS).tolist()}


def public_default(spec: ColumnSpec) -> tuple[tuple[float, float], dict[str, Any]]:
    """The last resort, read from no record: bounds by kind and an encoder state over them.

    Numbers: :data:`PUBLIC_NUMBER_RANGE` (clinical measurements and counts are non-negative),
    with quantile knots spread evenly over decades (0, 1, 10, … 1e6: a log-uniform guess, so a
    small count and a large lab value both get resolution) and loc/scale of that guess. Dates:
    :data:`PUBLIC_DATE_RANGE`, evenly. Returned in encoder units (days for dates)."""
    if spec.kind == "datetime":
        lo, hi = (datetime_days(d) for d in PUBLIC_DATE_RANGE)
        return (lo, hi), public_state(lo, hi)
    lo, hi = PUBLIC_NUMBER_RANGE
    decades = int(round(math.log10(hi)))
    knots = np.array([lo] + [10.0 ** k for k in range(decades + 1)])
    probs = np.clip(np.linspace(0.0, 1.0, knots.size), _P_EPS, 1 - _P_EPS)
    t = np.arcsinh(knots / _ASINH_UNIT)  # loc/scale of the guess, measured in x at its median and quartiles
    loc = float(_ASINH_UNIT * np.sinh(np.interp(0.5, probs, t)))
    scale = float(_ASINH_UNIT * (np.sinh(np.interp(0.75, probs, t)) - np.sinh(np.interp(0.25, probs, t))))
    return (lo, hi), {"loc": loc, "scale": scale, "knots": knots.tolist(), "scores": ndtri(probs).tolist()}
