"""Bayesian-network synthesizer (``bayesnet``, ``dp-bayesnet``), after PrivBayes (Zhang et al., 2017).

Why a second kind of model: on a table of a few hundred rows, DP-SGD's per-step noise drowns what
a network could learn, while a handful of noisy histograms still carry the signal — the
marginal-based methods (AIM, MST) win there. This model is the clinsynth way of doing that:

* every column becomes a discrete **variable** over the encoder's spans: numbers in bins (exact
  values when a column has few), plus a state for *missing* (indicator policy) and one for
  *after dropout* (longitudinal groups); categories and the dropout visit as they are;
* the **structure** is the target (when there is one) as every variable's parent, plus at most one
  more parent per variable from a maximum spanning tree (tree-augmented naive Bayes; a Chow–Liu
  tree without a target) of pairwise dependence. Without DP only pairs with a positive held-out
  log-likelihood gain can be edges, so a link that a table of few rows cannot estimate is left out
  and the tree thins to a forest on small tables; in DP mode the scores are released with noise. Parents are seen through a coarse
  view (``parent_bins`` groups of bins) so the tables stay small;
* each variable's **table** P(variable | parents) is counted once; sampling is ancestral, one
  vectorised inverse-CDF draw per variable, and decoding goes through the table encoder, so
  missing codes, dropout (a participant never comes back) and types come out as the schema says.

Given a ``Privacy`` (``dp-bayesnet``) the same network learns from noisy releases charged to one
ledger: the counts come from a component chosen once in ``fit`` (``models/bayesnet_counts.py``,
exact or noisy), so nothing here asks whether the model is private.

Size: ~690 lines: the network's pure functions (states, scores, the spanning tree, smoothing) sit
beside the model that is their only user; the counts' sources, the sampler and its compiled loops
are in their own modules.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

from clinsynth.data.transforms import NumericCodec, TableEncoder, numeric_bounds
from clinsynth.errors import ConfigError
from clinsynth.models import bundle
from clinsynth.models.base import TableModel, allocate
from clinsynth.models.bayesnet_kernel import shuffle
from clinsynth.models.bayesnet_sampler import CompiledNetwork
from clinsynth.privacy.budget import Privacy
from clinsynth.schema import Schema, last_observed_visit

if TYPE_CHECKING:
    from clinsynth.models.bayesnet_counts import ExactCounts

_MAX_STATES = 256      # a categorical with more levels is refused (its tables would be mostly empty)
_SCORE_SENSITIVITY = 4.0  # |Δ| of one pair's dependence score when one record is added or removed
_MIN_TREE_BINS = 4        # fewer bins than this cost more fidelity than the tree brings


@dataclass
class Variable:
    """One discrete variable: a numeric span (``lo``/``hi`` per value state, in encoded units) or a
    softmax span (its states are its codes). ``coarse`` maps each state to the parent view."""

    name: str
    states: int
    coarse: list[int]
    lo: list[float] | None = None
    hi: list[float] | None = None
    missing: int | None = None
    blank: int | None = None
    visit: int | None = None      # 1-based visit of a longitudinal column in a dropout timeline
    timeline: str | None = None   # that timeline's dropout span name

    @property
    def numeric(self) -> bool:
        return self.lo is not None

    @property
    def coarse_states(self) -> int:
        return max(self.coarse) + 1


def observed_states(z: np.ndarray, bins: int) -> tuple[list[float], list[float]]:
    """(lo, hi) of each value state in encoded units, from the observed values ``z``
    (:func:`states_from_counts` of their distinct values and counts)."""
    values, counts = np.unique(z, return_counts=True)
    return states_from_counts(values, counts, bins)


def states_from_counts(values: np.ndarray, counts: np.ndarray, bins: int) -> tuple[list[float], list[float]]:
    """(lo, hi) of each value state from the distinct observed ``values`` (sorted) and how many
    rows hold each — so an engine that counts them (``clinsynth.engines``) gets the same states:
    each distinct value when there are at most ``bins``, else quantile bins — with every value that
    holds at least a bin's share of the rows (and 5 rows) kept as a state of its own (``lo ==
    hi``), the bins around it split there. Clinical numbers pile up on round values (a ratio
    recorded as 3, 4, 5 in most rows and to two decimals in the rest, a count that is mostly 0):
    spread evenly across a bin, such a pile is what gives a synthetic table away (sklearn's
    diabetes ``s4``: detection AUROC 0.90 from that column alone)."""
    if values.size <= bins:
        return values.tolist(), values.tolist()
    atoms = values[counts >= max(counts.sum() / bins, 5)]
    rest = ~np.isin(values, atoms)
    if counts[rest].sum() < 2:
        return values.tolist(), values.tolist()
    cuts = quantiles_of_counts(values[rest], np.cumsum(counts[rest]), np.linspace(0, 1, max(bins - atoms.size, 1) + 1))
    edges = np.unique(np.concatenate([cuts, atoms, values[[0, -1]]]))
    return _with_atoms(list(edges[:-1]), list(edges[1:]), atoms)


def quantiles_of_counts(values: np.ndarray, ends: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``np.unique(np.quantile(z, probs))`` of the ``values`` repeated up to cumulative counts
    ``ends``, without the rows: each order statistic found by its rank, then interpolated by
    ``np.quantile`` itself on the two neighbours (same arithmetic, same dtype)."""
    n = int(ends[-1])
    virtual = probs * (n - 1)
    lower = np.floor(virtual).astype(np.int64)
    upper = np.minimum(lower + 1, n - 1)
    at = lambda k: values[np.searchsorted(ends, k, side="right")]  # noqa: E731
    out = [np.quantile(np.array([at(lo), at(hi)], dtype=values.dtype), np.array([g]))[0]
           for lo, hi, g in zip(lower, upper, virtual - lower)]
    return np.unique(np.array(out))


def _with_atoms(lo: list[float], hi: list[float], atoms: np.ndarray) -> tuple[list[float], list[float]]:
    """Contiguous bins with a zero-width state inserted before the bin that starts at each atom
    (and after the last bin when an atom is the maximum), in value order."""
    out_lo, out_hi, rest = [], [], set(atoms.tolist())
    for a, b in zip(lo, hi):
        if a in rest:
            out_lo.append(a), out_hi.append(a)
            rest.discard(a)
        out_lo.append(a), out_hi.append(b)
    for a in sorted(rest):
        out_lo.append(a), out_hi.append(a)
    return out_lo, out_hi


def value_states(lo: np.ndarray, hi: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The state of each value ``x``. All bins, or all exact values: the nearest state by its lower
    edge (a released grid's values need not equal the data's). Bins with exact-value states among
    them (:func:`states_from_counts`, where each such state sits on a bin edge, before the bin
    starting there): the exact state on a match, else the last state starting at or below the
    value — the bin holding it. ``clinsynth.engines`` computes the same in SQL."""
    point = lo == hi
    if point.all() or not point.any():
        return np.searchsorted((lo[1:] + hi[:-1]) / 2, x, side="right")
    s = np.clip(np.searchsorted(lo, x, side="right") - 1, 0, lo.size - 1)
    points = np.flatnonzero(point)
    at = np.minimum(np.searchsorted(lo[points], x), points.size - 1)
    return np.where(lo[points[at]] == x, points[at], s)


def released_states(codec: NumericCodec, state: dict[str, Any], bins: int) -> tuple[list[float], list[float]]:
    """(lo, hi) of each value state in encoded units from released or declared facts alone — the
    records' values are never looked at.

    Equal-probability bins of the released quantile table ``state`` (its knots span the noisy
    histogram's bulk; declared bounds alone give equal widths); a whole-number column whose bounds
    hold at most ``bins`` values keeps each of them.
    """
    spec = codec.spec
    if spec.kind == "integer":
        lo, hi = numeric_bounds(spec)
        a, b = math.ceil(lo), math.floor(hi)
        if b - a + 1 <= bins:
            exact = codec.encode_values(np.arange(a, b + 1, dtype=float))
            return exact.tolist(), exact.tolist()
    knots, probs = np.asarray(state["knots"], float), ndtr(np.asarray(state["scores"], float))
    probs = (probs - probs[0]) / (probs[-1] - probs[0]) if probs[-1] > probs[0] else np.linspace(0, 1, probs.size)
    edges = codec.encode_values(np.unique(np.interp(np.linspace(0, 1, bins + 1), probs, knots)))
    if edges.size < 2:
        edges = codec.encode_values(np.array(numeric_bounds(spec)))
    return edges[:-1].tolist(), edges[1:].tolist()


def coarse_view(n_values: int, extra: int, groups: int) -> list[int]:
    """Value states in ``groups`` runs of adjacent bins; each extra state (missing, blank) its own."""
    groups = max(1, min(groups, n_values))
    runs = (np.arange(n_values) * groups // n_values).tolist()
    return runs + [groups + k for k in range(extra)]


def family_counts(states: np.ndarray, child: int, parents: list[int], variables: list[Variable]) -> np.ndarray:
    """Counts of (parents' coarse states..., child state) as a (parent configs × child states) table."""
    index = np.zeros(len(states), dtype=np.int64)
    configs = 1
    for p in parents:
        view = np.asarray(variables[p].coarse)[states[:, p]]
        index = index * variables[p].coarse_states + view
        configs *= variables[p].coarse_states
    size = variables[child].states
    flat = np.bincount(index * size + states[:, child], minlength=configs * size)
    return flat.reshape(configs, size).astype(float)


def dependence_from_joint(joint: np.ndarray) -> float:
    """Σ |N(t,a,b) − N(t,a)N(t,b)/N(t)| of one pair's (classes × a × b) count table."""
    total = joint.sum(axis=(1, 2), keepdims=True)
    expected = joint.sum(axis=2, keepdims=True) * joint.sum(axis=1, keepdims=True) / np.maximum(total, 1)
    return float(np.abs(joint - expected).sum())


def dependence_scores(states: np.ndarray, variables: list[Variable], features: list[int],
                      target: int | None) -> np.ndarray:
    """Pairwise dependence of the features' coarse views within each class: Σ |N(t,a,b) − N(t,a)N(t,b)/N(t)|.

    An L1 distance from independence, in records (0 … 2n): one record changes it by < 4, whatever n,
    so it can be released with Gaussian noise (the mutual information's sensitivity grows as 1/n).
    """
    return StatesMatrix(states, variables, target).dependence(features)


FOLDS = 5
_FOLD_PRIME = 2_147_483_647  # 2**31 − 1: position · multiplier stays within 64 bits up to 2**31 rows


def fold_hash(seed: int) -> tuple[int, int]:
    """(multiplier, offset) of the held-out folds' hash for ``seed``."""
    a, b = np.random.default_rng(seed).integers(1, _FOLD_PRIME, size=2)
    return int(a), int(b)


def fold_labels(positions: np.ndarray, seed: int, folds: int = FOLDS) -> np.ndarray:
    """The held-out fold of each row, from its position alone: ((position · a + b) mod p) mod folds.

    A function of the position (not a permutation of all rows) so an engine that never holds the
    rows computes the same folds (``engines.sql.fold_sql`` is its SQL twin)."""
    a, b = fold_hash(seed)
    return (positions.astype(np.int64) * a + b) % _FOLD_PRIME % folds


def gains_from_counts(base: list[np.ndarray], pair: Any, variables: list[Variable], features: list[int],
                      smoothing: float) -> np.ndarray:
    """:func:`heldout_gains` from its counts: ``base[i]`` (folds × classes × states of feature i) and
    ``pair(i, j)`` (folds × classes × coarse states of j × states of i)."""
    k = len(features)

    def fitted_base(held: np.ndarray) -> np.ndarray:
        size = held.shape[2]
        fitted = held.sum(axis=0) - held + 1.0 / size  # one pseudo-record per class: no zero for unseen states
        return fitted / fitted.sum(axis=2, keepdims=True)

    priors = [fitted_base(held) for held in base]
    naive_ll = [float((held * np.log(prob)).sum()) for held, prob in zip(base, priors)]
    gains = np.zeros((k, k))
    for i in range(k):
        size, prior = variables[features[i]].states, priors[i]
        for j in range(k):
            if i == j:
                continue
            held = pair(i, j)
            fitted = held.sum(axis=0) - held + smoothing * size * prior[:, :, None, :]
            prob = fitted / np.maximum(fitted.sum(axis=3, keepdims=True), 1e-300)
            gains[i, j] = float((held * np.log(np.maximum(prob, 1e-300))).sum()) - naive_ll[i]
    return (gains + gains.T) / 2


def heldout_gains(states: np.ndarray, variables: list[Variable], features: list[int], target: int | None,
                  smoothing: float, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Whether the rows can pay for each pair as a tree edge: the held-out log-likelihood gain (nats,
    k-fold) of P(child | target, parent's coarse view) over P(child | target), averaged over both
    directions.

    Why: a table with a parent has several times the cells, and on a few hundred rows its estimate
    can lose more to noise than the link gains — the held-out gain is negative then, and the pair
    should be no edge (the tree thins to a forest, down to naive Bayes on tiny tables). Counts per
    fold are one ``bincount`` per ordered pair (folds by :func:`fold_labels`); tables are smoothed
    as the model smooths them (``smoothing`` pseudo-records per child state, spread as
    P(child | target))."""
    return StatesMatrix(states, variables, target, folds=folds).gains(features, smoothing, seed)


class StatesMatrix:
    """The counts the network learns from, out of a (rows × variables) matrix of states in memory.

    The pandas path; ``engines`` gives the same counts from GROUP BY queries (:class:`StateCounts`)."""

    def __init__(self, states: np.ndarray, variables: list[Variable], target: int | None, folds: int = FOLDS):
        self.states, self.variables, self.target, self.folds = states, variables, target, folds
        self.n = len(states)

    def _classes(self) -> tuple[np.ndarray, int]:
        if self.target is None:
            return np.zeros(self.n, dtype=np.int64), 1
        return self.states[:, self.target], self.variables[self.target].states

    def _view(self, f: int) -> np.ndarray:
        return np.asarray(self.variables[f].coarse)[self.states[:, f]]

    def family(self, child: int, parents: list[int]) -> np.ndarray:
        return family_counts(self.states, child, parents, self.variables)

    def dependence(self, features: list[int]) -> np.ndarray:
        k = len(features)
        scores = np.zeros((k, k))
        cls, n_cls = self._classes()
        views = [self._view(f) for f in features]
        for i in range(k):
            for j in range(i + 1, k):
                a, b = self.variables[features[i]].coarse_states, self.variables[features[j]].coarse_states
                joint = np.bincount((cls * a + views[i]) * b + views[j], minlength=n_cls * a * b).reshape(n_cls, a, b)
                scores[i, j] = scores[j, i] = dependence_from_joint(joint)
        return scores

    def gains(self, features: list[int], smoothing: float, seed: int) -> np.ndarray:
        folds, variables, states = self.folds, self.variables, self.states
        fold = fold_labels(np.arange(self.n), seed, folds)
        cls, n_cls = self._classes()
        by_fold_class = fold * n_cls + cls
        views = [self._view(f) for f in features]
        base = []
        for f in features:
            size = variables[f].states
            base.append(np.bincount(by_fold_class * size + states[:, f],
                                    minlength=folds * n_cls * size).reshape(folds, n_cls, size).astype(float))

        def pair(i: int, j: int) -> np.ndarray:
            size, a = variables[features[i]].states, variables[features[j]].coarse_states
            return np.bincount((by_fold_class * a + views[j]) * size + states[:, features[i]],
                               minlength=folds * n_cls * a * size).reshape(folds, n_cls, a, size).astype(float)

        return gains_from_counts(base, pair, variables, features, smoothing)


def spanning_tree_parents(scores: np.ndarray, allowed: np.ndarray) -> list[int | None]:
    """Parent of each feature in a maximum spanning tree of ``scores`` (None for roots).

    Pairs not ``allowed`` (a table too large) and pairs with no positive score are never edges, so
    the result may be a forest. Prim's algorithm from the feature with the largest total score.
    """
    k = len(scores)
    weight = np.where(allowed & (scores > 0), scores, -np.inf)
    np.fill_diagonal(weight, -np.inf)
    parents: list[int | None] = [None] * k
    in_tree = np.zeros(k, dtype=bool)
    best = np.full(k, -np.inf)
    link = np.full(k, -1)
    while not in_tree.all():
        candidates = np.where(~in_tree, best, -np.inf)
        if np.isfinite(candidates).any():
            v = int(np.argmax(candidates))
            parents[v] = int(link[v])
        else:  # a new component: start from its strongest feature
            totals = np.where(~in_tree, np.where(np.isfinite(weight), weight, 0).sum(axis=1), -np.inf)
            v = int(np.argmax(totals))
        in_tree[v] = True
        better = ~in_tree & (weight[v] > best)
        best[better] = weight[v][better]
        link[better] = v
    return parents


def topological_order(parents: list[list[int]]) -> list[int]:
    order: list[int] = []
    placed: set[int] = set()
    while len(order) < len(parents):
        ready = [v for v in range(len(parents)) if v not in placed and all(p in placed for p in parents[v])]
        if not ready:
            raise RuntimeError("the network's parents form a cycle")
        order.extend(ready)
        placed.update(ready)
    return order


def shifted_to_totals(x: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Each row of ``x`` moved onto the non-negative vectors summing to its ``totals`` (≥ 0) in least
    squares: ``max(x − δ, 0)`` with the one shift δ per row that gives the total ("norm-sub"). Unlike
    clipping at 0 it keeps the total: what negative noise took from some cells it takes from the others."""
    x = np.asarray(x, float)
    totals = np.maximum(np.asarray(totals, float), 0.0)
    u = -np.sort(-x, axis=1)
    run = np.arange(1, x.shape[1] + 1)
    shifts = (np.cumsum(u, axis=1) - totals[:, None]) / run
    last = np.sum(u - shifts > 0, axis=1)  # u − shift is positive exactly on a leading run of the sorted cells
    delta = np.where(last > 0, shifts[np.arange(len(x)), np.maximum(last, 1) - 1], np.inf)
    return np.where(totals[:, None] > 0, np.maximum(x - delta[:, None], 0.0), 0.0)


def consistent_counts(counts: np.ndarray, runs: tuple[int, ...] = ()) -> np.ndarray:
    """Noisy ``counts`` made non-negative by splitting each state's count down the parents, level
    by level, instead of clipping every cell at 0. ``runs``: the parents' sizes, outermost first
    (the rows are their product, the last varying fastest: (classes, parent states) for a family
    table). The outermost parent's table (each class's counts) is clipped at 0 cell by cell; below
    it, the coarser table's count of a state (made consistent the same way) is shared among the
    contexts that refine it — the last parent's states — by :func:`shifted_to_totals`, so each
    state keeps its total within a class. Post-processing of the released counts; exact counts
    come back as they are.

    Why: clipping each cell adds ≈ 0.4 noise sds to every state whose true count is near 0, in
    every context, so a rare state grows with the number of contexts (a 2 % flag under 4 parent
    states per class at σ ≈ 60 came out ≈ 9 %, ≈ 6 % with each class's total kept); a kept total
    lets one context's negative noise cancel another's positive noise, as in their sum. Measured
    (dp-bayesnet with a tree, generated ICU-like tables, 3 seeds): flag prevalence error 0.0178 →
    0.0157 and its upward bias 0.0105 → 0.0024 at ε = 1 (3,000 × 50); 0.0101 → 0.0102 and 0.0047 →
    −0.0008 at ε = 4 (1,800 × 120). Not kept: the rows' totals (a row's is the sum of all its
    states' noise: kept, it poured that noise onto the largest state, a lab 85 % missing came out
    99 % missing) nor a state's total across classes (more flags lost entirely, error up at ε = 4)."""
    if len(runs) <= 1:
        return np.clip(counts, 0.0, None)
    if (counts >= 0).all():
        return counts
    rows, states = counts.shape
    block = runs[-1]
    grouped = counts.reshape(rows // block, block, states)
    totals = consistent_counts(grouped.sum(axis=1), runs[:-1]).reshape(-1)
    by_state = grouped.transpose(0, 2, 1).reshape(-1, block)
    shared = shifted_to_totals(by_state, totals).reshape(rows // block, states, block)
    return shared.transpose(0, 2, 1).reshape(rows, states)


def normalise(counts: np.ndarray, backoff: np.ndarray, strength: float, runs: tuple[int, ...] = ()) -> np.ndarray:
    """P(child | parents) from (noisy) counts, shrunk towards ``backoff`` with ``strength``
    pseudo-records; noisy counts are first made non-negative by :func:`consistent_counts` (``runs``:
    the parents' sizes)."""
    counts = consistent_counts(counts, runs)
    probs = counts + strength * backoff
    totals = probs.sum(axis=1, keepdims=True)
    empty = totals[:, 0] <= 0
    probs[empty] = 1.0
    return probs / probs.sum(axis=1, keepdims=True)


class BayesNet(TableModel):
    """Tree-augmented Bayesian network over discretised columns (``bayesnet`` in the registry).

    Parameters
    ----------
    bins : value bins per numeric column; ``None``: n / 20 within 5…64 (a column with at most
        that many distinct values keeps them exactly).
    parent_bins : groups of bins a numeric parent is seen through.
    structure : ``"tree"`` (the target plus one spanning-tree parent) or ``"naive"`` (the target only).
    smoothing : pseudo-records per child state in each parent configuration, spread as
        P(child | target): a table with many cells leans more on its target-only estimate.
    privacy : a ``clinsynth.Privacy`` budget: the model is then ``dp-bayesnet``, its counts
        noisy releases (``models/bayesnet_counts.py``); ``structure`` may then be ``"auto"``
        (the tree when it reaches ``theta``).
    structure_share : under a budget, the share (μ², see ``share_noise_multiplier``) of the
        tree's dependence scores, when the tree is used.
    theta : under a budget, an average cell's count over its noise sd that the bins and the tree
        must reach.
    shrinkage : under a budget, pseudo-records towards P(child | target), in noise sds.
    """

    name = "bayesnet"

    def __init__(self, bins: int | None = None, parent_bins: int = 4, structure: str = "tree",
                 smoothing: float = 0.25, seed: int = 0, progress: bool = True, structure_share: float = 0.2,
                 theta: float = 2.0, shrinkage: float = 1.0, privacy: Privacy | None = None):
        self.bins = bins
        self.parent_bins = parent_bins
        self.structure = structure
        self.smoothing = smoothing
        self.seed = seed
        self.progress = progress
        self.structure_share = structure_share
        self.theta = theta
        self.shrinkage = shrinkage
        self._given(privacy)

    def _counts(self) -> ExactCounts:
        """Where this network's counts come from: noisy releases exactly when it was given a budget."""
        if getattr(self, "_counter", None) is None:
            from clinsynth.models.bayesnet_counts import counts_for

            self._counter = counts_for(self)
        return self._counter

    # -- checks --------------------------------------------------------------------------
    def _validate_params(self, schema: Schema) -> None:
        bad = []
        if self.bins is not None and not (isinstance(self.bins, int) and 2 <= self.bins <= 1000):
            bad.append(f"bins={self.bins!r} (a whole number from 2 to 1000, or None)")
        if not (isinstance(self.parent_bins, int) and self.parent_bins >= 1):
            bad.append(f"parent_bins={self.parent_bins!r} (a whole number ≥ 1)")
        structures = self._counts().structures
        if self.structure not in structures:
            bad.append(f"structure={self.structure!r} ({' or '.join(map(repr, structures))})")
        if not (isinstance(self.smoothing, (int, float)) and self.smoothing >= 0):
            bad.append(f"smoothing={self.smoothing!r} (a number ≥ 0)")
        bad += self._counts().problems()
        if bad:
            raise ConfigError(f"{self.name}: invalid settings: {', '.join(bad)}")
        if schema.codes is not None:
            raise ConfigError(f"{self.name} models ordinary tables; for EHR code matrices use vae, medgan or corgan")
        wide = [c.name for c in schema.model_columns if len(c.categories or []) > _MAX_STATES]
        if wide:
            raise ConfigError(f"{self.name}: column(s) {', '.join(wide)} have more than {_MAX_STATES} categories; "
                              "group them or mark them as identifiers")

    # -- variables -------------------------------------------------------------------------
    def _variables(self, encoder: TableEncoder, observed: Any, missing: set[str], blank: set[str],
                   bins: int) -> list[Variable]:
        """The discrete variables: ``observed(name)`` gives a numeric column's observed values (an
        array in encoded units, or an engine's view of them) for :meth:`ExactCounts.numeric_states`;
        ``missing`` / ``blank``: the numeric columns with a missing / an after-dropout state."""
        linear = [s.name for s in encoder.spans if s.activation == "linear"]
        softmax = [s for s in encoder.spans if s.activation == "softmax" and not s.name.endswith(":missing")]
        visit_of = {c: (j + 1, t.name) for t in encoder.timelines for g in t.groups for j, c in enumerate(g.columns)}
        out = []
        for name in linear:
            codec = encoder.codecs[name]
            lo, hi = self._counts().numeric_states(codec, lambda name=name: observed(name), bins)
            k = len(lo)
            missing_state = k if name in missing else None
            blank_state = k + (name in missing) if name in blank else None
            visit, timeline = visit_of.get(name, (None, None)) if name in blank else (None, None)
            out.append(Variable(name, k + (name in missing) + (name in blank),
                                coarse_view(k, (name in missing) + (name in blank), self.parent_bins),
                                lo=lo, hi=hi, missing=missing_state, blank=blank_state, visit=visit, timeline=timeline))
        for span in softmax:
            out.append(Variable(span.name, span.dim, list(range(span.dim))))
        return out

    @staticmethod
    def gap_columns(encoder: TableEncoder) -> tuple[set[str], set[str]]:
        """(numeric columns with a missing state, columns with an after-dropout state)."""
        blank = {c for t in encoder.timelines for g in t.groups for c in g.columns}
        missing = {name for name, codec in encoder.codecs.items() if isinstance(codec, NumericCodec) and codec.has_missing}
        return missing, blank

    def _discretise(self, values: np.ndarray, codes: np.ndarray, encoder: TableEncoder,
                    blank: dict[str, np.ndarray], missing: dict[str, np.ndarray]) -> np.ndarray:
        softmax = [s.name for s in encoder.spans if s.activation == "softmax"]
        states = np.empty((len(values), len(self.variables_)), dtype=np.int64)
        for v, var in enumerate(self.variables_):
            if var.numeric:
                j = self._linear_names.index(var.name)
                s = value_states(np.asarray(var.lo), np.asarray(var.hi), values[:, j])
                if var.missing is not None:
                    s = np.where(missing[var.name], var.missing, s)
                if var.blank is not None:
                    s = np.where(blank[var.name], var.blank, s)
                states[:, v] = s
            else:
                states[:, v] = codes[:, softmax.index(var.name)]
        return states

    @staticmethod
    def _gaps(df: pd.DataFrame, encoder: TableEncoder, codes: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(after-dropout, missing-while-attending) masks of the numeric columns that have them."""
        softmax = [s.name for s in encoder.spans if s.activation == "softmax"]
        blank: dict[str, np.ndarray] = {}
        for t in encoder.timelines:
            mask = t.blank_mask(last_observed_visit(df, t.groups))
            for g in t.groups:
                for j, c in enumerate(g.columns):
                    blank[c] = mask[j]
        missing = {}
        for name, codec in encoder.codecs.items():
            if isinstance(codec, NumericCodec) and codec.has_missing:
                flag = codes[:, softmax.index(f"{name}:missing")].astype(bool)
                missing[name] = flag & ~blank.get(name, np.zeros(len(df), bool))
        return blank, missing

    # -- fitting ---------------------------------------------------------------------------
    def _fit(self, df: pd.DataFrame, encoder: TableEncoder) -> None:
        values, codes = encoder.split(encoder.encode(df))
        self._linear_names = [s.name for s in encoder.spans if s.activation == "linear"]
        blank, missing = self._gaps(df, encoder, codes)

        def observed(name: str) -> np.ndarray:
            n = len(values)
            skip = missing.get(name, np.zeros(n, bool)) | blank.get(name, np.zeros(n, bool))
            return values[~skip, self._linear_names.index(name)]

        self._learn(encoder, len(df), observed, lambda: StatesMatrix(
            self._discretise(values, codes, encoder, blank, missing), self.variables_, self.target_))

    def _fit_engine(self, table: Any, encoder: TableEncoder) -> None:
        """The same fit from an engine's table (``clinsynth.engines``): every count a GROUP BY query."""
        self._linear_names = [s.name for s in encoder.spans if s.activation == "linear"]
        self._learn(encoder, table.n, lambda name: table.observed(encoder, name),
                    lambda: table.state_counts(encoder, self.variables_, self.target_, self.seed,
                                               folds=1 if self.privacy is not None else FOLDS))

    def _learn(self, encoder: TableEncoder, n: int, observed: Any, counts: Any) -> None:
        """Variables, structure and tables from ``observed`` (numeric columns' values) and
        ``counts()`` (the states' counts, once the variables are known)."""
        self.n_variables_ = sum(s.activation == "linear" or not s.name.endswith(":missing") for s in encoder.spans)
        self.bins_ = self._counts().value_bins(n)
        missing, blank = self.gap_columns(encoder)
        self.variables_ = self._variables(encoder, observed, missing, blank, self.bins_)
        names = [v.name for v in self.variables_]
        self.target_ = names.index(self.schema_.target) if self.schema_.target is not None else None
        state_counts = counts()
        self.parents_ = self._counts().structure(state_counts)
        self.tables_ = self._counts().tables(state_counts)
        self.order_ = topological_order(self.parents_)

    def _features(self) -> list[int]:
        return [v for v in range(len(self.variables_)) if v != self.target_]

    def _allowed_pairs(self, features: list[int], max_cells: float) -> np.ndarray:
        """Which tree edges keep the child's table within ``max_cells`` cells (either direction)."""
        cls = self.variables_[self.target_].states if self.target_ is not None else 1
        size = np.array([self.variables_[f].states for f in features], float)
        view = np.array([self.variables_[f].coarse_states for f in features], float)
        cells = cls * np.maximum(view[:, None] * size[None, :], view[None, :] * size[:, None])
        return cells <= max_cells

    def _tree_parents(self, scores: np.ndarray, max_cells: float) -> list[list[int]]:
        features = self._features()
        allowed = self._allowed_pairs(features, max_cells)
        tree = spanning_tree_parents(scores, allowed)
        base = [self.target_] if self.target_ is not None else []
        parents: list[list[int]] = [[] for _ in self.variables_]
        for i, f in enumerate(features):
            parents[f] = base + ([features[tree[i]]] if tree[i] is not None else [])
        return parents

    def _naive_parents(self) -> list[list[int]]:
        """The target as every other variable's only parent (no parents without a target)."""
        return [[] if v == self.target_ or self.target_ is None else [self.target_] for v in range(len(self.variables_))]

    def _family(self, counts: Any, v: int) -> np.ndarray:
        return counts.family(v, self.parents_[v])

    def _runs(self, v: int) -> tuple[int, ...]:
        """The sizes of a family table's parents (coarse views), outermost first."""
        return tuple(self.variables_[p].coarse_states for p in self.parents_[v])

    def _backoff(self, counts: np.ndarray, v: int) -> np.ndarray:
        """P(child | target) for each row of a family table (the child's marginal without a target)."""
        parents = self.parents_[v]
        if not parents:
            return np.full_like(counts, 1.0 / counts.shape[1])
        cls = self.variables_[parents[0]].coarse_states if parents[0] == self.target_ else 1
        per_class = counts.reshape(cls, -1, counts.shape[1]).sum(axis=1)
        per_class = np.clip(per_class, 0.0, None) + 1e-9
        per_class /= per_class.sum(axis=1, keepdims=True)
        return np.repeat(per_class, counts.shape[0] // cls, axis=0)

    # -- sampling ----------------------------------------------------------------------------
    def _default_class_probs(self) -> np.ndarray:
        if self.target_ is None:
            return np.ones(1)
        n_cats = len(self.schema_.column(self.schema_.target).categories or [])
        return self.tables_[self.target_][0][:n_cats] / self.tables_[self.target_][0][:n_cats].sum()

    def _sample(self, n: int, class_probs: np.ndarray, seed: int) -> pd.DataFrame:
        if self.target_ is None and not np.allclose(class_probs, 1.0):
            raise ConfigError("this model was trained without a target, so it cannot be conditioned")
        rng = np.random.default_rng(seed)
        labels = None
        if self.target_ is not None:  # int16, the codes' type, shuffled in place: two fewer int64 copies
            labels = np.repeat(np.arange(len(class_probs), dtype=np.int16), allocate(n, class_probs))
            shuffle(rng, labels)  # rng.shuffle's order (which rng.permutation gives), compiled
        network = self._network
        values, codes = network.sample(labels, n, rng)
        # transposes: column-major, fastest to decode; values already in column units where foldable
        return self.encoder_.decode_parts(values.T, codes.T, scaled=network.units is None, overwrite_values=True)

    @property
    def _network(self) -> CompiledNetwork:
        """The fitted tables compiled for sampling, once per fit or load."""
        cached = self.__dict__.get("_compiled")
        if cached is None or cached[0] is not self.tables_:
            softmax = [s.name for s in self.encoder_.spans if s.activation == "softmax"]
            units = {name: self.encoder_.codecs[name].affine() for name in self._linear_names}
            cached = (self.tables_, CompiledNetwork(self.variables_, self.parents_, self.tables_, self.order_,
                                                    self.target_, value_rows=self._linear_names, code_rows=softmax,
                                                    units=None if None in units.values() else units))
            self._compiled = cached
        return cached[1]

    # -- persistence ---------------------------------------------------------------------------
    def _fitted_config(self) -> dict[str, Any]:
        return {"bins": self.bins_, "target_index": self.target_, "parents": self.parents_,
                "variables": [asdict(v) for v in self.variables_], **self._counts().fitted()}

    def _save_weights(self, directory: Path) -> None:
        np.savez(directory / "tables.npz", **{f"t{v}": t for v, t in enumerate(self.tables_)})

    def _restore(self, fitted: dict[str, Any], encoder: TableEncoder, directory: Path) -> None:
        self.bins_ = fitted["bins"]
        self.target_ = fitted["target_index"]
        self.parents_ = [list(p) for p in fitted["parents"]]
        self.variables_ = [Variable(**v) for v in fitted["variables"]]
        self.tables_ = bundle.load_arrays(Path(directory), "tables.npz", [f"t{v}" for v in range(len(self.variables_))])
        self._check_tables(Path(directory))
        self._linear_names = [s.name for s in encoder.spans if s.activation == "linear"]
        self.order_ = topological_order(self.parents_)
        self._counts().restore(fitted)

    def _check_tables(self, directory: Path) -> None:
        """Each loaded table is a finite, non-negative (parent states × states) array, as the sampler
        indexes it; a table of another network would crash sampling or draw garbage."""
        for v, (var, table) in enumerate(zip(self.variables_, self.tables_)):
            rows = int(np.prod([self.variables_[p].coarse_states for p in self.parents_[v]]))
            if table.shape != (rows, var.states) or not np.isfinite(table).all() or (table < 0).any():
                raise bundle.bundle_error(directory, "tables.npz", f"does not fit the network in config.json: table t{v} "
                                                                  f"('{var.name}') has shape {table.shape}, "
                                                                  f"expected ({rows}, {var.states}) of probabilities")
