"""A Chow–Liu tree over codes and ordinary columns (``codetree``, ``dp-codetree``): the counting model for code matrices.

Why a counting model for codes: the networks (medGAN, corGAN, the VAE) learn each code's
prevalence well but, on the simulated EHR, little of how codes go together, and the GANs collapse
on a few hundred patients. A tree-structured Bayesian network (Chow & Liu, 1968) is the
maximum-likelihood model among those where every variable has at most one parent; all it needs
are one- and two-way counts, which for sparse codes are one sparse product ``ZᵀZ``.

* **variables**: each code (present or not) and each span of the ordinary columns' encoder — a
  category (its states, missing flags included) or a number in ``bins`` bins;
* **structure**: a maximum spanning forest of pairwise mutual information. Two codes never seen
  together are no candidate edge (their information is tiny), so the candidates are the non-zero
  entries of ``ZᵀZ`` and 1,000+ codes stay fast; ``penalty`` > 0 asks each edge to pay for its
  table (information above ``penalty`` × BIC's ``df · log n / 2n``), thinning the tree to a forest;
* **tables**: P(child | parent) from the same counts, shrunk towards the child's marginal by
  ``smoothing`` pseudo-patients;
* **sampling**: ancestral, one vectorised draw per variable; codes stay boolean; counts (for a
  count matrix) are drawn from each code's histogram of counts given present, in buckets.

Under DP (``dp-codetree``) every count comes from one of two Gaussian releases of the ledger, on
codes capped at ``max_codes`` per patient (a random subset of a patient's codes above it, so one
patient's influence is bounded): **structure**, all of ``ZᵀZ`` (one patient with ``m`` ones moves
``m(m+1)/2`` entries by 1), at ``structure_share`` of the budget, an edge kept only when its count
stands out of the noise; then **tables**, the rest of the budget, on the marginals and only the
chosen edges' counts — the edges among one patient's ones form a forest, so the sensitivity is
``√(2m − 1)`` (``√(3m − 1)`` with count histograms), not ``√(m²/2)``. The vocabulary and the
ordinary columns' facts are charged as for every code model (``models/records.py``).

Size: ~660 lines. The plain and the private fit build the same variables and tables from the same
pairwise counts (the private one from two noisy releases of them), and the sampler walks those
tables; the private fit alone is ~130 lines reading a dozen of the fitted attributes, so moving it
to a file of its own would split one model's state across two files.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse import csgraph

from clinsynth.data.ehr import CodeMatrix, from_dense_rows
from clinsynth.data.io import write_with
from clinsynth.errors import ConfigError
from clinsynth.models import bundle
from clinsynth.models.base import Conditions
from clinsynth.models.code_groups import bernoulli_mixture_groups, conditional_information, group_counts
from clinsynth.models.bayesnet import observed_states, released_states
from clinsynth.models.records import CodeModel, Phase, RecordCodec
from clinsynth.privacy.gaussian import gaussian_release, symmetric_gaussian_release
from clinsynth.privacy.ledger import Charge, share_noise_multiplier
from clinsynth.privacy.vocabulary import cap_codes_per_patient
from clinsynth.schema import Schema

_SAMPLE_CHUNK = 16_384
#: under DP a code gets an ordinary-column parent only when its count exceeds this many noise sds
#: per state of the column
_USEFUL_SDS = 2.0
#: states of the codes-per-patient variable: 0, 1–2, 3–5, 6–10, 11–20, 21+ codes
BURDEN_EDGES = (1, 3, 6, 11, 21)
#: patient groups by default: one per this many patients, within 2 … 32
_PATIENTS_PER_GROUP = 100
_MAX_GROUPS = 32
#: a code takes the patient group as a second parent when I(code; group | parent) exceeds this share
#: of BIC's penalty for the larger table
_GROUP_PENALTY = 0.3


@dataclass(frozen=True)
class StaticVariable:
    """One span of the ordinary columns' encoder as a discrete variable: a number in bins
    (``lo``/``hi`` per state, in encoded units; equal for an exact value) or a category."""

    name: str
    states: int
    lo: list[float] | None = None
    hi: list[float] | None = None
    derived: bool = False  # not a column: codes per patient, modelled and then dropped

    @property
    def numeric(self) -> bool:
        return self.lo is not None


# -- counting ---------------------------------------------------------------------------------
def mutual_information(tables: np.ndarray, n: float) -> np.ndarray:
    """Mutual information (nats) of each contingency table in ``tables`` (…, rows, columns) of ``n`` records."""
    t = np.clip(np.asarray(tables, dtype=np.float64), 0.0, None)
    rows, cols = t.sum(-1, keepdims=True), t.sum(-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(t > 0, t * np.log(t * n / (rows * cols)), 0.0)
    return terms.sum(axis=(-2, -1)) / n


def code_pair_tables(n11: np.ndarray, na: np.ndarray, nb: np.ndarray, n: float) -> np.ndarray:
    """The 2 × 2 tables (rows: a absent/present, columns: b absent/present) of code pairs from their
    joint count and marginals, each cell clipped to what the others allow (noisy counts need it)."""
    na, nb = np.clip(na, 0.0, n), np.clip(nb, 0.0, n)
    n11 = np.clip(n11, np.maximum(0.0, na + nb - n), np.minimum(na, nb))
    return np.stack([np.stack([n - na - nb + n11, nb - n11], -1), np.stack([na - n11, n11], -1)], -2)


def project_to_totals(rows: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Each row of ``rows`` moved to the nearest non-negative vector (Euclidean) summing to its total.

    Noisy cells of a rare code clipped at 0 one by one would sum to far more than the code's count
    (the noise's positive part); projecting keeps the code's count and the cells' ranking."""
    rows = np.asarray(rows, dtype=np.float64)
    totals = np.clip(np.asarray(totals, dtype=np.float64), 0.0, None)
    ordered = -np.sort(-rows, axis=1)
    steps = np.arange(1, rows.shape[1] + 1)
    shift = (np.cumsum(ordered, axis=1) - totals[:, None]) / steps
    last = (ordered - shift > 0).sum(axis=1) - 1
    theta = shift[np.arange(rows.shape[0]), np.maximum(last, 0)]
    return np.clip(rows - theta[:, None], 0.0, None)


def count_buckets(cap: float) -> np.ndarray:
    """Edges of the count buckets [e_i, e_i+1) over 1 … cap: each count up to 8, then geometric."""
    top = int(max(1, math.floor(cap)))
    edges = np.concatenate([np.arange(1, min(top, 8) + 2), np.floor(np.geomspace(1, top + 1, 12))])
    edges = np.unique(edges[edges <= top + 1]).astype(np.int64)
    return edges if edges[-1] == top + 1 else np.append(edges, top + 1)


def spanning_forest(n_vertices: int, u: np.ndarray, v: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(parent of each vertex, −1 for roots; a topological order) of a maximum spanning forest of
    the candidate edges ``(u, v, weight > 0)``. Each tree is rooted at its lowest vertex, so the
    ordinary columns (numbered first) root the trees they are in."""
    keep = weight > 0
    u, v, w = u[keep], v[keep], weight[keep]
    parent = np.full(n_vertices, -1, dtype=np.int64)
    if w.size:
        # a minimum spanning forest of (C − w), C > max w: every tree of a component has the same
        # number of edges, so this maximises the total information
        graph = sp.coo_array((w.max() + 1.0 - w, (u, v)), shape=(n_vertices, n_vertices)).tocsr()
        forest = csgraph.minimum_spanning_tree(graph)
        forest = forest + forest.T
    else:
        forest = sp.csr_array((n_vertices, n_vertices))
    seen = np.zeros(n_vertices, dtype=bool)
    order: list[np.ndarray] = []
    for root in range(n_vertices):
        if seen[root]:
            continue
        nodes, pred = csgraph.breadth_first_order(forest, root, directed=False, return_predecessors=True)
        seen[nodes] = True
        parent[nodes[1:]] = pred[nodes[1:]]
        order.append(nodes)
    return parent, np.concatenate(order) if order else np.zeros(0, dtype=np.int64)


# -- the model ----------------------------------------------------------------------------------
class CodeTree(CodeModel):
    """Chow–Liu tree over codes and ordinary columns (``codetree``); ``dp-codetree`` with a budget.

    Parameters
    ----------
    bins : value bins per numeric ordinary column; ``None``: n / 50 within 4…16 (DP: n / 400
        within 4…8, from the released or declared facts).
    smoothing : pseudo-patients that shrink each row of a table towards the child's marginal
        (under DP: in noise sds of the table counts).
    penalty : an edge must carry more than ``penalty`` × df · log(n) / 2n nats (BIC at 1; without
        DP). 0, the classic Chow–Liu tree over every pair seen together, measured best on the
        simulated EHR (co-occurrence 0.26 vs 0.27 at 0.25 and 0.31 at 1; 3 seeds, 10,000 × 1,000)
        and as good on 300 patients × 170 codes (prevalence r 0.965–0.973).
    max_codes : codes per patient counted under DP (a random subset above it): the sensitivity.
    structure_share : the budget share (μ², see ``share_noise_multiplier``) of the structure's counts.
    burden : model each patient's number of codes (0, 1–2, 3–5, 6–10, 11–20, 21+) as one more
        variable of the tree, dropped after sampling; ``None``: without DP only. One parent per
        code cannot hold what makes a patient have many codes at once (frailty, age); a shared
        node that counts them can: co-occurrence 0.18 vs 0.27 beyond noise (3 seeds,
        10,000 × 1,000; 12 count bins gave 0.27).
    groups : patient groups, a latent variable every code may take as a second parent (fitted as
        a Bernoulli mixture, ``models/code_groups.py``); ``None``: one per 100 patients within
        2 … 32 without DP, none under DP (the mixture reads every patient's codes: refused there);
        0: none. A tree links a bundle of codes as a chain that forgets along its length; a group
        holds the whole bundle: co-occurrence 0.17/0.21/0.14 → 0.00/0.00/0.00 on the simulated
        EHR (bench_ehr structure, 3 seeds), 0.21–0.24 → 0.00 on the bundled diagnosis table.
    Common parameters (ε, δ, vocabulary, ordinary columns' facts, seed): see :class:`CodeModel`.
    """

    name = "codetree"
    sampling_modules: ClassVar[tuple[str, ...]] = ()
    _common = ("privacy", "vocab_share", "max_codes_per_patient", "seed", "progress")

    def __init__(self, bins: int | None = None, smoothing: float = 1.0, penalty: float = 0.0, max_codes: int = 24,
                 structure_share: float = 0.3, burden: bool | None = None, groups: int | None = None,
                 **common: Any):
        super().__init__(**common)
        self.groups = groups
        self.burden = burden
        self.bins = bins
        self.smoothing = smoothing
        self.penalty = penalty
        self.max_codes = max_codes
        self.structure_share = structure_share

    # -- the CodeModel hooks: no network, no DP-SGD phase, no checkpoint (a fit takes seconds) -----
    def _phases(self) -> list[Phase]:
        return []

    def _build(self, dim: int, out_dim: int) -> dict[str, Any]:
        return {}

    def _open_checkpoint(self, checkpoint_dir: str | Path | None, schema: Schema, data: Any) -> Any:
        from clinsynth.models.checkpoint import Checkpoint

        return Checkpoint.disabled(self, [])

    def _validate_model_params(self, schema: Schema) -> None:
        def number(v: Any, low: float, strict: bool = False) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and (v > low if strict else v >= low)

        bad = []
        if self.bins is not None and not (isinstance(self.bins, int) and not isinstance(self.bins, bool)
                                          and 2 <= self.bins <= 256):
            bad.append(f"bins={self.bins!r} (a whole number from 2 to 256, or None)")
        if not number(self.smoothing, 0):
            bad.append(f"smoothing={self.smoothing!r} (≥ 0)")
        if not number(self.penalty, 0):
            bad.append(f"penalty={self.penalty!r} (≥ 0)")
        if isinstance(self.max_codes, bool) or not isinstance(self.max_codes, int) or self.max_codes < 1:
            bad.append(f"max_codes={self.max_codes!r} (a whole number ≥ 1)")
        if not (number(self.structure_share, 0, strict=True) and self.structure_share < 1):
            bad.append(f"structure_share={self.structure_share!r} (between 0 and 1)")
        if self.burden is not None and not isinstance(self.burden, bool):
            bad.append(f"burden={self.burden!r} (true, false or None)")
        if self.groups is not None and (isinstance(self.groups, bool) or not isinstance(self.groups, int)
                                        or self.groups < 0):
            bad.append(f"groups={self.groups!r} (a whole number ≥ 0, or None)")
        elif self.private and self.groups:
            bad.append(f"groups={self.groups!r} (clusters the patients on all their codes, which no DP "
                       "release here covers: use groups=0 or leave it unset under DP)")
        if bad:
            raise ConfigError(f"{self.name}: invalid settings: {', '.join(bad)}")

    # -- variables -------------------------------------------------------------------------------
    def _n_bins(self, n: int) -> int:
        if self.bins is not None:
            return self.bins
        return int(np.clip(n // 400, 4, 8)) if self.private else int(np.clip(n // 50, 4, 16))

    def _static_variables(self, static_x: np.ndarray) -> tuple[list[StaticVariable], np.ndarray]:
        """The ordinary columns' spans as discrete variables and each patient's state (n × S)."""
        table = self.codec_.table
        n = static_x.shape[0]
        if table is None:
            return [], np.zeros((n, 0), dtype=np.int64)
        values, cats = table.split(static_x)
        linear = [s.name for s in table.spans if s.activation == "linear"]
        softmax = [s for s in table.spans if s.activation == "softmax"]
        bins = self._n_bins(n)
        variables, states = [], []
        numeric = (self._static_release or {}).get("numeric", {}) if self.private else {}
        for j, name in enumerate(linear):
            missing = f"{name}:missing"
            observed = np.ones(n, dtype=bool)
            if missing in [s.name for s in softmax]:
                observed = cats[:, [s.name for s in softmax].index(missing)] == 0
            codec = table.codecs[name]
            if self.private:
                lo, hi = released_states(codec, numeric[name], bins)
            else:
                lo, hi = observed_states(values[observed, j] if observed.any() else values[:, j], bins)
            cuts = (np.asarray(lo[1:]) + np.asarray(hi[:-1])) / 2
            variables.append(StaticVariable(name, len(lo), lo=list(map(float, lo)), hi=list(map(float, hi))))
            states.append(np.searchsorted(cuts, values[:, j], side="right"))
        for c, span in enumerate(softmax):
            variables.append(StaticVariable(span.name, span.dim))
            states.append(cats[:, c].astype(np.int64))
        return variables, np.column_stack(states) if states else np.zeros((n, 0), dtype=np.int64)

    def _use_burden(self) -> bool:
        return (not self.private) if self.burden is None else bool(self.burden)

    def _n_groups(self, n: int) -> int:
        if self.private:
            return 0
        if self.groups is not None:
            return self.groups
        return int(np.clip(n // _PATIENTS_PER_GROUP, 2, _MAX_GROUPS))

    def _states(self, u: int) -> int:
        return self.static_variables_[u].states if u < len(self.static_variables_) else 2

    def _table_shape(self, v: int) -> tuple[int, int]:
        """(rows, states) of variable ``v``'s table: a grouped code's rows are parent state × group."""
        p = int(self.parent_[v])
        rows = 1 if p < 0 else self._states(p)
        if v in self.group_parents_:
            rows *= self._states(self.group_variable_)
        return rows, self._states(v)

    # -- fit --------------------------------------------------------------------------------------
    def _train(self) -> None:
        n = self.n_train_
        rng = np.random.default_rng((self.seed, 7))
        self.static_variables_, static_states = self._static_variables(self._static_x)
        x = self._codes if self._codes is not None else sp.csr_array((n, 0), dtype=np.float32)
        if self.private:
            x = cap_codes_per_patient(sp.csr_array(x), self.max_codes, rng)
        if self._use_burden() and x.shape[1]:
            burden = np.searchsorted(BURDEN_EDGES, np.diff(sp.csr_array(x).indptr), side="right")
            self.static_variables_.append(StaticVariable("codes per patient", len(BURDEN_EDGES) + 1, derived=True))
            static_states = np.column_stack([static_states, burden])
        self.group_variable_, self.group_parents_ = None, set()
        k_groups = self._n_groups(n) if x.shape[1] else 0
        group = bernoulli_mixture_groups(x, k_groups, seed=self.seed) if k_groups > 1 else None
        if group is not None and group.max() > 0:
            self.group_variable_ = len(self.static_variables_)
            self.static_variables_.append(StaticVariable("patient group", int(group.max()) + 1, derived=True))
            static_states = np.column_stack([static_states, group])
        present = sp.csr_array(x, dtype=np.float64, copy=True)
        present.data[:] = 1.0
        sizes = [v.states for v in self.static_variables_]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        k = int(offsets[-1])
        onehot = sp.csr_array((np.ones(n * len(sizes)), (np.repeat(np.arange(n), len(sizes)),
                               (static_states + offsets[:-1]).ravel())), shape=(n, k))
        z = sp.hstack([onehot, present], format="csr")
        gram = (z.T @ z).tocsr()  # every one- and two-way count the model uses
        self._layout = (offsets, k)
        if self.private:
            self._fit_private(gram, z, x, rng)
        else:
            self._fit_counts(gram, x, static_states)

    def _candidate_edges(self, gram: Any, dense: bool, gate: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u, v, weight) of every candidate pair of variables: information minus the BIC penalty
        (without DP), or information where the pair's counts stand ``gate`` noise sds out (DP)."""
        n = float(self.n_train_)
        offsets, k = self._layout
        s_vars = len(self.static_variables_)
        diag = np.asarray(gram.diagonal(), dtype=np.float64)
        na = diag[k:]
        us, vs, ws = [], [], []
        penalty = self.penalty * math.log(max(n, 2.0)) / (2 * n)

        def add(u: np.ndarray, v: np.ndarray, tables: np.ndarray, df: float, deviation: np.ndarray | None) -> None:
            mi = mutual_information(tables, n)
            w = mi - penalty * df if gate is None else np.where(deviation > gate, mi, 0.0)
            us.append(u), vs.append(v), ws.append(w)

        # code–code pairs: the upper triangle of the code block (only pairs seen together without DP)
        block = gram[k:, k:]
        if dense:
            a, b = np.triu_indices(na.size, 1)
            n11 = np.asarray(block[a, b]).ravel() if not isinstance(block, np.ndarray) else block[a, b]
        else:
            upper = sp.triu(sp.coo_array(block), k=1)
            a, b, n11 = upper.row.astype(np.int64), upper.col.astype(np.int64), upper.data.astype(np.float64)
        if a.size:
            tables = code_pair_tables(n11, na[a], na[b], n)
            deviation = np.abs(tables[:, 1, 1] - tables[:, 1].sum(-1) * tables[:, :, 1].sum(-1) / n)
            add(a + s_vars, b + s_vars, tables, 1.0, deviation)
        # ordinary-column variables with every code and with each other
        for s in range(s_vars):
            rows = slice(offsets[s], offsets[s + 1])
            by_state = diag[rows]
            if na.size and s != self.group_variable_:  # codes take the group as a 2nd parent
                joint = np.asarray(gram[rows, k:].toarray() if sp.issparse(gram) else gram[rows, k:], dtype=np.float64).T
                joint = np.clip(joint, 0.0, None)  # codes × states: with the code
                tables = np.stack([np.clip(by_state - joint, 0.0, None), joint], -1)  # codes × states × (absent, present)
                expected = by_state[None, :] * na[:, None] / n
                add(np.full(na.size, s), np.arange(na.size) + s_vars, tables, by_state.size - 1.0,
                    np.abs(joint - expected).max(axis=1))
            for t in range(s + 1, s_vars):
                cols = slice(offsets[t], offsets[t + 1])
                joint = np.asarray(gram[rows, cols].toarray() if sp.issparse(gram) else gram[rows, cols], dtype=np.float64)
                joint = np.clip(joint, 0.0, None)
                expected = np.outer(by_state, diag[cols]) / n
                add(np.array([s]), np.array([t]), joint[None], (by_state.size - 1.0) * (joint.shape[1] - 1.0),
                    np.array([np.abs(joint - expected).max()]))
        if not us:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(us), np.concatenate(vs), np.concatenate(ws)

    def _joint(self, gram: Any, parent: int, child: int) -> np.ndarray:
        """The (parent states × child states) table of counts of an edge, from ``gram``."""
        n = float(self.n_train_)
        offsets, k = self._layout
        s_vars = len(self.static_variables_)

        def cols(u: int) -> slice:
            return slice(offsets[u], offsets[u + 1]) if u < s_vars else slice(k + u - s_vars, k + u - s_vars + 1)

        def dense(a: slice, b: slice) -> np.ndarray:
            block = gram[a, b]
            return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)

        diag_p, diag_c = np.diagonal(dense(cols(parent), cols(parent))), np.diagonal(dense(cols(child), cols(child)))
        both = np.clip(dense(cols(parent), cols(child)), 0.0, None)
        if parent >= s_vars and child >= s_vars:
            return code_pair_tables(both[0, 0], diag_p[0], diag_c[0], n)
        if parent >= s_vars:  # a code parent, a categorical child: rows absent / present
            present = both[0]
            return np.stack([np.clip(diag_c - present, 0.0, None), present])
        if child >= s_vars:  # a categorical parent, a code child: columns absent / present
            present = both[:, 0]
            return np.stack([np.clip(diag_p - present, 0.0, None), present], -1)
        return both

    def _marginal(self, gram_diag: np.ndarray, u: int) -> np.ndarray:
        offsets, k = self._layout
        s_vars = len(self.static_variables_)
        n = float(self.n_train_)
        if u < s_vars:
            counts = np.clip(gram_diag[offsets[u]:offsets[u + 1]], 0.0, None)
        else:
            p = float(np.clip(gram_diag[k + u - s_vars], 0.0, n))
            counts = np.array([n - p, p])
        return counts / counts.sum() if counts.sum() > 0 else np.full(counts.size, 1.0 / counts.size)

    def _tables(self, joint_of: Any, diag: np.ndarray, strength: float, per_row: bool) -> None:
        """P(child | parent) for every variable (roots: their marginal), shrunk towards independence.

        ``per_row``: ``strength`` pseudo-patients in every row, spread as the child's marginal
        (noisy counts: every row is as noisy). Otherwise ``strength`` pseudo-patients in all, spread
        as parent marginal × child marginal: exact counts keep every child's marginal exactly then,
        however far down the tree (per-row smoothing pulls the rows of rare parent states towards
        the marginal and so lowers it: 3.95 codes per patient for 4.58 real at 300 patients)."""
        tables = []
        for v, p in enumerate(self.parent_):
            marginal = self._marginal(diag, v)
            if p < 0:
                tables.append(marginal[None, :])
                continue
            prior = marginal[None, :] if per_row else self._marginal(diag, int(p))[:, None] * marginal[None, :]
            counts = np.clip(joint_of(int(p), v), 0.0, None) + strength * prior
            totals = counts.sum(axis=1, keepdims=True)
            tables.append(np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), marginal[None, :]))
        self.tables_ = tables

    def _has_count_histogram(self, x: sp.csr_array) -> bool:
        return not self.codec_.binary and x.shape[1] > 0

    def _count_cells(self, x: sp.csr_array) -> np.ndarray:
        """Patients per code and bucket of its count given present (count matrices only)."""
        edges = count_buckets(self.codec_.count_cap)
        coo = sp.coo_array(x)
        bucket = np.searchsorted(edges, np.minimum(coo.data, edges[-1] - 1), side="right") - 1
        hist = np.zeros((x.shape[1], edges.size - 1))
        np.add.at(hist, (coo.col, bucket), 1.0)
        return hist

    def _count_histogram(self, hist: np.ndarray | None) -> None:
        """Each code's distribution of counts given present, from (noisy) cells; None: a binary matrix."""
        if hist is None:
            self.count_edges_, self.count_probs_ = None, None
            return
        hist = np.clip(hist, 0.0, None) + 1e-3
        self.count_edges_ = count_buckets(self.codec_.count_cap)
        self.count_probs_ = hist / hist.sum(axis=1, keepdims=True)

    def _fit_counts(self, gram: sp.csr_array, x: sp.csr_array, static_states: np.ndarray) -> None:
        u, v, w = self._candidate_edges(gram, dense=False, gate=None)
        self.parent_, self.order_ = spanning_forest(len(self.static_variables_) + x.shape[1], u, v, w)
        self._tables(lambda p, c: self._joint(gram, p, c), np.asarray(gram.diagonal(), float), self.smoothing,
                     per_row=False)
        if self.group_variable_ is not None:
            self._add_group_parents(x, static_states)
        self._count_histogram(self._count_cells(x) if self._has_count_histogram(x) else None)

    def _add_group_parents(self, x: sp.csr_array, static_states: np.ndarray) -> None:
        """Give the patient group as a second parent to every code it tells enough about beyond its
        tree parent (I(code; group | parent) above ``_GROUP_PENALTY`` × BIC's penalty), with a
        table per parent state and group smoothed towards the tree's P(code | parent); then put
        the group, and what it hangs from, first in the sampling order."""
        n, s_vars, n_codes = self.n_train_, len(self.static_variables_), x.shape[1]
        g_var = self.group_variable_
        group = static_states[:, g_var]
        k_groups = self._states(g_var)
        parents = self.parent_[s_vars:]
        sizes = np.array([1] + [self._states(int(p)) for p in np.unique(parents[parents >= 0])])
        width = int(sizes.max())
        # base: patients per code's parent state and group
        group_size = np.bincount(group, minlength=k_groups).astype(np.float64)
        base = np.zeros((n_codes, width, k_groups))
        base[:, 0] = group_size
        coo = sp.coo_array(x)
        state = np.zeros(coo.nnz, dtype=np.int64)  # each patient-code entry's state of the code's parent
        by_code = parents >= s_vars
        if by_code.any():  # a code parent: present (1) or not (0)
            col_group = np.zeros((n_codes, k_groups))
            np.add.at(col_group, (coo.col, group[coo.row]), 1.0)
            children = np.flatnonzero(by_code)
            base[children, 1] = col_group[parents[children] - s_vars]
            base[children, 0] = group_size - base[children, 1]
            present = sp.csr_array(x, dtype=bool)
            with_parent = sp.coo_array(present[:, children].multiply(present[:, parents[children] - s_vars]))
            keys = coo.row.astype(np.int64) * n_codes + coo.col
            both = with_parent.row.astype(np.int64) * n_codes + children[with_parent.col]
            state[np.isin(keys, both)] = 1
        for s in np.unique(parents[(parents >= 0) & (parents < s_vars)]):
            children = np.flatnonzero(parents == s)
            cross = np.zeros((self._states(int(s)), k_groups))
            np.add.at(cross, (static_states[:, s], group), 1.0)
            base[children, :cross.shape[0]] = cross
            entries = np.isin(coo.col, children)
            state[entries] = static_states[coo.row[entries], s]
        tables = group_counts(coo.col.astype(np.int64), state, group[coo.row], base)
        info = conditional_information(tables)
        rows = np.array([1 if p < 0 else self._states(int(p)) for p in parents])
        penalty = _GROUP_PENALTY * rows * (k_groups - 1) * math.log(max(n, 2)) / (2 * n)
        chosen = np.flatnonzero(info > penalty)
        for c in chosen:
            v = s_vars + int(c)
            prior = self.tables_[v]  # the tree's P(code | parent): one row per parent state
            counts = tables[c, :rows[c]] + self.smoothing * prior[:, None, :]
            self.tables_[v] = (counts / counts.sum(axis=-1, keepdims=True)).reshape(rows[c] * k_groups, 2)
        self.group_parents_ = {s_vars + int(c) for c in chosen}
        first, u = [], g_var
        while u >= 0:
            first.append(u)
            u = int(self.parent_[u])
        ahead = set(first)
        self.order_ = np.array(first[::-1] + [v for v in self.order_.tolist() if v not in ahead], dtype=np.int64)

    def _fit_private(self, gram: sp.csr_array, z: sp.csr_array, x: sp.csr_array, rng: np.random.Generator) -> None:
        """Two Gaussian releases: the codes' tree, then every table (see the module docstring).

        The ordinary columns are not in the noisy structure search: a code × column table costs
        little to measure (a patient's capped codes each add 1 to one cell), but deciding from
        noise which columns go with which code costs much. So every code whose tree leaves it a
        root gets the ordinary-column variable it is most informative about as its parent (chosen
        on the measured tables), and those variables get a tree of their own."""
        offsets, k = self._layout
        s_vars, n_codes, n = len(self.static_variables_), x.shape[1], float(self.n_train_)
        c = self.max_codes
        counts = not self.codec_.binary
        # 1. structure: every code pair's joint count (and each code's count), once
        sigma1 = share_noise_multiplier(self.structure_share, self.privacy.epsilon, self.ledger_.delta)
        structure = Charge("gaussian", f"tree structure: one- and two-way counts of {n_codes} codes "
                           f"(capped at {c} per patient)", noise_multiplier=sigma1, sample_rate=1.0, steps=1,
                           unit="patient")
        # a patient with m ≤ c codes moves m(m+1)/2 entries of the upper triangle by 1
        released = symmetric_gaussian_release(self.ledger_, structure, math.sqrt(c * (c + 1) / 2),
                                              lambda: gram[k:, k:].toarray(), rng, diagonal=True)
        noisy, sd1 = released.values[0], released.noise_std
        del released
        a, b = np.triu_indices(n_codes, 1)
        na1 = np.diagonal(noisy).copy()
        tables = code_pair_tables(noisy[a, b], na1[a], na1[b], n)
        deviation = np.abs(tables[:, 1, 1] - tables[:, 1].sum(-1) * tables[:, :, 1].sum(-1) / n)
        gate = sd1 * max(3.0, math.sqrt(2 * math.log(max(a.size, 2.0))))
        weight = np.where(deviation > gate, mutual_information(tables, n), 0.0)
        del noisy, tables
        code_parent, code_order = spanning_forest(n_codes, a, b, weight)
        # 2. tables: one-way counts, code × column and column × column tables, the codes' edges
        edges = int((code_parent >= 0).sum())
        pairs = s_vars * (s_vars - 1) // 2
        sensitivity = math.sqrt(c + s_vars + c * s_vars + pairs + max(c - 1, 0) + (c if counts else 0))

        def charge(sigma: float) -> Charge:
            return Charge("gaussian", f"tree tables: one-way counts, {n_codes} codes × {s_vars} column variables, "
                          f"{pairs} column pairs, {edges} code pairs" + (", counts given present" if counts else ""),
                          noise_multiplier=sigma, sample_rate=1.0, steps=1, unit="patient")

        children = np.flatnonzero(code_parent >= 0)

        def measure() -> list[np.ndarray]:
            out = [np.asarray(gram.diagonal(), float),  # one-way counts
                   gram[:k].toarray() if k else np.zeros((0, k + n_codes)),  # columns' rows (off-diagonal blocks used)
                   np.array([float(gram[k + int(code_parent[ch]), k + int(ch)]) for ch in children])]  # the codes' edges
            return out + ([self._count_cells(x)] if self._has_count_histogram(x) else [])

        release = gaussian_release(self.ledger_, charge, sensitivity, measure, rng, low=0.05)
        self.noise_multiplier_ = release.charge.noise_multiplier
        sd2 = release.noise_std
        diag, columns, cells = release.values[:3]
        hist = release.values[3] if len(release.values) > 3 else None
        w1, w2 = 1 / sd1**2, 1 / sd2**2  # the codes' one-way counts: both releases, weighted by precision
        diag[k:] = (na1 * w1 + diag[k:] * w2) / (w1 + w2)
        pair_cells = {int(ch): float(cell) for ch, cell in zip(children, cells)}
        # the columns' own tree (MI of their measured tables), then each code root's best column
        parent = np.full(s_vars + n_codes, -1, dtype=np.int64)
        joints: dict[int, np.ndarray] = {}
        if s_vars:
            su, sv, sw = [], [], []
            for u in range(s_vars):
                for v in range(u + 1, s_vars):
                    table = np.clip(columns[offsets[u]:offsets[u + 1], offsets[v]:offsets[v + 1]], 0.0, None)
                    su.append(u), sv.append(v), sw.append(mutual_information(table, n) + 1e-12)
            static_parent, static_order = spanning_forest(s_vars, np.array(su, np.int64), np.array(sv, np.int64),
                                                          np.array(sw))
            parent[:s_vars] = static_parent
            for v in np.flatnonzero(static_parent >= 0):
                u = int(static_parent[v])
                joints[int(v)] = columns[offsets[u]:offsets[u + 1], offsets[v]:offsets[v + 1]]
            n_code = np.clip(diag[k:], 0.0, n)
            with_code, info = [], []
            for s in range(s_vars):  # codes × states: patients with the code in each state, summing to its count
                cells = project_to_totals(columns[offsets[s]:offsets[s + 1], k:].T, n_code)
                by_state = np.clip(diag[offsets[s]:offsets[s + 1]], 0.0, None)
                with_code.append(cells)
                info.append(mutual_information(np.stack([np.clip(by_state[None, :] - cells, 0.0, None), cells], -1), n))
            best = np.stack(info).argmax(axis=0)
            # a code too rare for its cells to stand out of the noise stays independent of the columns
            sizes = np.array([v.states for v in self.static_variables_])
            useful = n_code > _USEFUL_SDS * sd2 * np.sqrt(sizes[best])
        else:
            static_order = np.zeros(0, dtype=np.int64)
        for v in range(n_codes):
            if code_parent[v] >= 0:
                parent[s_vars + v] = s_vars + code_parent[v]
                joints[s_vars + v] = np.array([[pair_cells[v]]])
            elif s_vars and useful[v]:
                s = int(best[v])
                parent[s_vars + v] = s
                joints[s_vars + v] = with_code[s][v][:, None]
        self.parent_ = parent
        self.order_ = np.concatenate([static_order, s_vars + code_order]).astype(np.int64)
        self._tables(lambda p, ch: self._joint_from_cells(joints[ch], diag, p, ch), diag, self.smoothing * sd2,
                     per_row=True)
        self._count_histogram(hist)

    def _joint_cells(self, gram: sp.csr_array, parent: int, child: int) -> np.ndarray:
        """The measured counts of an edge: patients with both (codes), with the code in each state
        (a code and a category) or the whole table (two categories)."""
        offsets, k = self._layout
        s_vars = len(self.static_variables_)

        def cols(u: int) -> slice:
            return slice(offsets[u], offsets[u + 1]) if u < s_vars else slice(k + u - s_vars, k + u - s_vars + 1)

        return np.asarray(gram[cols(parent), cols(child)].toarray(), dtype=np.float64)

    def _joint_from_cells(self, cells: np.ndarray, diag: np.ndarray, parent: int, child: int) -> np.ndarray:
        """An edge's (parent × child) table from its measured cells and the one-way counts."""
        offsets, k = self._layout
        n = float(self.n_train_)
        s_vars = len(self.static_variables_)

        def marg(u: int) -> np.ndarray:
            return diag[offsets[u]:offsets[u + 1]] if u < s_vars else diag[k + u - s_vars:k + u - s_vars + 1]

        if parent >= s_vars and child >= s_vars:
            return code_pair_tables(cells[0, 0], marg(parent)[0], marg(child)[0], n)
        if parent >= s_vars:
            present = np.clip(cells[0], 0.0, None)
            return np.stack([np.clip(np.clip(marg(child), 0.0, None) - present, 0.0, None), present])
        if child >= s_vars:
            present = np.clip(cells[:, 0], 0.0, None)
            return np.stack([np.clip(np.clip(marg(parent), 0.0, None) - present, 0.0, None), present], -1)
        return cells

    # -- sample -----------------------------------------------------------------------------------
    def sample(self, n: int, conditions: Conditions | None = None, seed: int | None = None,
               chunk: int = _SAMPLE_CHUNK) -> CodeMatrix:
        """``n`` new patients (new ids, with their ordinary columns), drawn ``chunk`` at a time."""
        rng = np.random.default_rng(self._sample_seed(n, conditions, seed))
        frames: list[pd.DataFrame] = []

        def blocks():
            for start in range(0, int(n), chunk):
                m = min(chunk, int(n) - start)
                static, codes = self._draw(m, rng)
                if self.codec_.table is not None:
                    frames.append(self._decode_static(static, rng, start))
                yield codes

        block = self.schema_.codes
        out = from_dense_rows(blocks(), block.vocabulary, block.binary)
        if frames:
            out = CodeMatrix(out.matrix, out.vocabulary, out.patient_ids, out.binary, pd.concat(frames, ignore_index=True))
        return out

    def _draw(self, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(states of the ordinary-column variables, m × S; codes, m × V booleans or counts)."""
        s_vars = len(self.static_variables_)
        n_codes = len(self.parent_) - s_vars
        static = np.zeros((m, s_vars), dtype=np.int64, order="F")
        present = np.zeros((m, n_codes), dtype=bool, order="F")

        def state_of(u: int) -> np.ndarray:
            return static[:, u] if u < s_vars else present[:, u - s_vars].view(np.uint8)

        groups = self._states(self.group_variable_) if self.group_variable_ is not None else 1
        for v in self.order_:
            v, p = int(v), int(self.parent_[v])
            table = self.tables_[v]
            u = rng.random(m)
            if v >= s_vars:
                row = np.zeros(m, dtype=np.int64) if p < 0 else state_of(p).astype(np.int64)
                if v in self.group_parents_:
                    row = row * groups + static[:, self.group_variable_]
                present[:, v - s_vars] = u < table[row, 1]
            else:
                cum = np.cumsum(table, axis=1)
                rows = cum[np.zeros(m, dtype=np.int64)] if p < 0 else cum[state_of(p)]
                static[:, v] = np.minimum((u[:, None] > rows).sum(axis=1), table.shape[1] - 1)
        if self.codec_.binary:
            return static, present
        return static, self._draw_counts(present, rng)

    def _draw_counts(self, present: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rows, cols = np.nonzero(present)
        cum = np.cumsum(self.count_probs_, axis=1)[cols]
        bucket = np.minimum((rng.random(cols.size)[:, None] > cum).sum(axis=1), cum.shape[1] - 1)
        lo, hi = self.count_edges_[bucket], self.count_edges_[bucket + 1]
        counts = np.zeros(present.shape, dtype=np.float32)
        counts[rows, cols] = lo + np.floor(rng.random(cols.size) * (hi - lo))
        return counts

    def _decode_static(self, states: np.ndarray, rng: np.random.Generator, start: int) -> pd.DataFrame:
        table = self.codec_.table
        numeric = [j for j, var in enumerate(self.static_variables_) if var.numeric]
        values = np.empty((states.shape[0], len(numeric)), dtype=np.float64)
        for i, j in enumerate(numeric):
            var = self.static_variables_[j]
            lo, hi = np.asarray(var.lo)[states[:, j]], np.asarray(var.hi)[states[:, j]]
            values[:, i] = lo + rng.random(states.shape[0]) * (hi - lo)
        columns = sum(not var.derived for var in self.static_variables_)
        cats = np.ascontiguousarray(states[:, len(numeric):columns], dtype=np.int16)
        return table.decode_parts(values, cats, id_start=start)

    # -- persistence -------------------------------------------------------------------------------
    def _fitted_config(self) -> dict[str, Any]:
        out = super()._fitted_config()
        out.pop("history", None)
        return {**out, "static_variables": [asdict(v) for v in self.static_variables_],
                "parents": self.parent_.tolist(), "order": self.order_.tolist(),
                "group_variable": self.group_variable_, "group_parents": sorted(self.group_parents_)}

    def _save_weights(self, directory: Path) -> None:
        flat = np.concatenate([t.ravel() for t in self.tables_]) if self.tables_ else np.zeros(0)
        arrays = {"tables": flat}
        if self.count_probs_ is not None:
            arrays.update(count_edges=self.count_edges_, count_probs=self.count_probs_)
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to the temporary name
                np.savez(f, **arrays)

        write_with(directory / "tables.npz", write)

    def _restore(self, fitted: dict[str, Any], encoder: RecordCodec, directory: Path) -> None:
        directory = Path(directory)
        self.input_kind_ = fitted["input_kind"]
        self.codec_ = encoder
        self.modules_ = {}
        self._reader().restore(fitted)
        self.static_variables_ = [StaticVariable(**v) for v in fitted["static_variables"]]
        self.parent_ = np.asarray(fitted["parents"], dtype=np.int64)
        self.order_ = np.asarray(fitted["order"], dtype=np.int64)
        self.group_variable_ = fitted.get("group_variable")  # bundles before patient groups have none
        self.group_parents_ = {int(v) for v in fitted.get("group_parents", [])}
        s_vars = len(self.static_variables_)
        n_vars = s_vars + encoder.n_codes
        grouping_ok = (self.group_variable_ is None and not self.group_parents_) or (
            isinstance(self.group_variable_, int) and 0 <= self.group_variable_ < s_vars
            and all(s_vars <= v < n_vars for v in self.group_parents_))
        if self.parent_.shape != (n_vars,) or sorted(self.order_.tolist()) != list(range(n_vars)) \
                or (self.parent_ >= n_vars).any() or (self.parent_ < -1).any() or not grouping_ok:
            raise bundle.bundle_error(directory, "config.json", "does not fit the schema: the tree's parents and order "
                                                                f"do not cover its {n_vars} variables")
        (flat,) = bundle.load_arrays(directory, "tables.npz", ["tables"])
        shapes = [self._table_shape(v) for v in range(n_vars)]
        sizes = [a * b for a, b in shapes]
        if flat.ndim != 1 or flat.size != sum(sizes) or not np.isfinite(flat).all() or (flat < 0).any():
            raise bundle.bundle_error(directory, "tables.npz", "does not fit the tree in config.json: expected "
                                                               f"{sum(sizes)} probabilities, got an array of shape {flat.shape}")
        parts = np.split(flat, np.cumsum(sizes)[:-1]) if sizes else []
        self.tables_ = [part.reshape(shape) for part, shape in zip(parts, shapes)]
        self.count_edges_ = self.count_probs_ = None
        if not encoder.binary:
            edges, probs = bundle.load_arrays(directory, "tables.npz", ["count_edges", "count_probs"])
            if probs.shape != (encoder.n_codes, edges.size - 1):
                raise bundle.bundle_error(directory, "tables.npz", f"holds count histograms of shape {probs.shape} for "
                                                                   f"{encoder.n_codes} codes")
            self.count_edges_, self.count_probs_ = edges.astype(np.int64), probs
