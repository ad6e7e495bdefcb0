"""Where the Bayesian network's counts come from: the records themselves, or noisy releases.

The network (``models/bayesnet.py``) is one model; what a privacy budget changes is the component
it is given, chosen once in ``fit``: :class:`ExactCounts` or :class:`NoisyCounts`. Each answers
the same questions — how many value bins, where a numeric column's bins lie, which tree, which
tables — so the network's code never asks whether it is private.

Under a budget (``dp-bayesnet``) every use of records is charged to one ledger: the public facts
not declared (by the model base, as for every model given a budget), the tree (one Gaussian
release of all pairwise dependence scores, only when the table is large enough for it to be
useful) and the tables (one Gaussian release of every variable's family histogram; one record
moves each by 1, so the L2 sensitivity is √variables). Bins then come from the bounds alone
(public or released), and their number is chosen so that an average cell's count stands ``theta``
noise sds above zero (PrivBayes' "θ-usefulness") — decided from n, ε and the schema before any
record is read. A noisy table is made non-negative by sharing each class's count of a state among
the tree parent's states (``bayesnet.consistent_counts``), not by clipping every cell: clipping
inflated rare states in sparse contexts.
"""
from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from clinsynth.data.transforms import NumericCodec
from clinsynth.errors import UtilityWarning
from clinsynth.models.bayesnet import (
    _MIN_TREE_BINS,
    _SCORE_SENSITIVITY,
    normalise,
    observed_states,
    released_states,
)
from clinsynth.privacy.gaussian import gaussian_release, symmetric_gaussian_release
from clinsynth.privacy.ledger import Charge, share_noise_multiplier

if TYPE_CHECKING:
    from clinsynth.models.bayesnet import BayesNet

_ADVICE_CELL_SIGMAS = 1.0  # rarest class's records per value bin, in noise sds, under which the fit warns


class ExactCounts:
    """Counts of the records: bins from n, held-out gains decide the tree's edges, smoothed tables."""

    structures: tuple[str, ...] = ("tree", "naive")

    def __init__(self, model: BayesNet):
        self.model = model

    def problems(self) -> list[str]:
        """What is wrong with the settings these counts read (nothing without a budget)."""
        return []

    def value_bins(self, n: int) -> int:
        m = self.model
        return m.bins if m.bins is not None else int(np.clip(n // 20, 5, 64))

    def numeric_states(self, codec: NumericCodec, observed: Any, bins: int) -> tuple[list[float], list[float]]:
        """(lo, hi) per value state; ``observed()``: the column's observed values in encoded units
        (an array, or an engine's view answering ``states(bins)``)."""
        z = observed()
        return z.states(bins) if hasattr(z, "states") else observed_states(z, bins)

    def structure(self, counts: Any) -> list[list[int]]:
        """Each variable's parents, from ``counts`` (``StatesMatrix`` or an engine's ``StateCounts``)."""
        m = self.model
        if m.structure == "naive" or len(m._features()) < 2:
            return m._naive_parents()
        features = m._features()
        gains = counts.gains(features, max(m.smoothing, 1e-3), m.seed)
        # the strongest links among those the rows can pay for (ranked by the gain itself, cheap
        # tables — a flag, a category — would win over a strong link between two measurements)
        scores = np.where(gains > 0, counts.dependence(features), 0.0)
        return m._tree_parents(scores, max_cells=max(counts.n / 2, 64))

    def tables(self, counts: Any) -> list[np.ndarray]:
        m = self.model
        tables = []
        for v in range(len(m.variables_)):
            counts_v = m._family(counts, v)
            tables.append(normalise(counts_v, m._backoff(counts_v, v), m.smoothing * m.variables_[v].states,
                                    m._runs(v)))
        return tables

    def fitted(self) -> dict[str, Any]:
        """What the bundle keeps of these counts besides the network."""
        return {}

    def restore(self, fitted: dict[str, Any]) -> None:
        """Take back what ``fitted`` gave."""


class NoisyCounts(ExactCounts):
    """Two Gaussian releases of the ledger: the dependence scores (when the tree is worth it) and
    every family histogram; bins and structure planned from n, ε and the schema alone."""

    structures = ("auto", "tree", "naive")

    def problems(self) -> list[str]:
        m = self.model
        bad = []
        if not (isinstance(m.structure_share, (int, float)) and 0 < m.structure_share < 1):
            bad.append(f"structure_share={m.structure_share!r} (between 0 and 1)")
        if not (isinstance(m.theta, (int, float)) and m.theta > 0):
            bad.append(f"theta={m.theta!r} (a positive number)")
        if not (isinstance(m.shrinkage, (int, float)) and m.shrinkage >= 0):
            bad.append(f"shrinkage={m.shrinkage!r} (a number ≥ 0)")
        return bad

    # -- the plan: decided from n, ε and the schema alone ----------------------------------------
    def _remaining_share(self) -> float:
        return 1.0 - self.facts_share

    def _sigma(self, share: float) -> float:
        m = self.model
        return share_noise_multiplier(share, m.privacy.epsilon, m.ledger_.delta)

    def _table_noise(self, share: float) -> float:
        """Noise sd of each cell of the family tables when they get ``share`` of the budget."""
        return self._sigma(share) * math.sqrt(self.model.n_variables_)

    def _classes(self) -> int:
        schema = self.model.schema_
        return len(schema.column(schema.target).categories or []) if schema.target is not None else 1

    def value_bins(self, n: int) -> int:
        m = self.model
        # what the public facts took: nothing when every fact is declared; a table with few records
        # per column gives them more than stats_share (privacy.facts_budget)
        self.facts_share = m.release_.budget["share"] if m.ledger_.charges else 0.0
        m.tree_, bins = self._plan(n)
        return bins

    def _plan(self, n: int) -> tuple[bool, int]:
        """(use the tree, value bins), from n, ε and the schema alone.

        The tree is used when, with at least ``_MIN_TREE_BINS`` bins, both its dependence scores and
        its three-way tables clear ``theta``; otherwise the naive structure gets all the budget and
        more bins.
        """
        m = self.model
        classes, share = self._classes(), self._remaining_share()

        def useful_bins(cells_per_bin: float, sigma: float) -> int:
            return int(n / (cells_per_bin * sigma * m.theta))

        naive = useful_bins(classes, self._table_noise(share))
        tree = 0
        features = m.n_variables_ - (m.schema_.target is not None)
        if m.structure != "naive" and features >= 2 and share > m.structure_share:
            pairs = features * (features - 1) / 2
            sigma_scores = self._sigma(m.structure_share) * _SCORE_SENSITIVITY * math.sqrt(pairs)
            if n / sigma_scores >= m.theta or m.structure == "tree":
                tree = useful_bins(classes * m.parent_bins, self._table_noise(share - m.structure_share))
        use_tree = m.structure == "tree" or (m.structure == "auto" and tree >= _MIN_TREE_BINS)
        bins = m.bins if m.bins is not None else (tree if use_tree else naive)
        return use_tree, int(np.clip(bins, 2, 32))

    def numeric_states(self, codec: NumericCodec, observed: Any, bins: int) -> tuple[list[float], list[float]]:
        return released_states(codec, self.model.release_.numeric[codec.spec.name], bins)

    def structure(self, counts: Any) -> list[list[int]]:
        m = self.model
        n = counts.n
        self._tables_share = self._remaining_share() - (m.structure_share if m.tree_ else 0.0)
        if not m.tree_:
            return m._naive_parents()
        features = m._features()
        pairs = len(features) * (len(features) - 1) // 2
        charge = Charge("gaussian", f"network structure: dependence scores of {pairs} column pairs",
                        noise_multiplier=self._sigma(m.structure_share), sample_rate=1.0, steps=1)
        # each pair's score moves by ≤ _SCORE_SENSITIVITY when a record comes or goes: √pairs of them in L2
        scores = symmetric_gaussian_release(
            m.ledger_, charge, _SCORE_SENSITIVITY * math.sqrt(pairs),
            lambda: counts.dependence(features), m._rng, diagonal=False).values[0]
        # the planned table (a numeric child and parent, each with a missing and a dropout state) always fits
        planned = self._classes() * (m.parent_bins + 2) * (m.bins_ + 2)
        return m._tree_parents(scores, max_cells=max(n / (m.theta * self._table_noise(self._tables_share)), planned))

    def tables(self, counts: Any) -> list[np.ndarray]:
        m = self.model
        queries = len(m.variables_)

        def charge(sigma: float) -> Charge:
            return Charge("gaussian", f"network tables: {queries} family histograms", noise_multiplier=sigma,
                          sample_rate=1.0, steps=1)

        # one record moves each of the `queries` histograms by 1: √queries in L2; σ is what the budget has left
        release = gaussian_release(m.ledger_, charge, math.sqrt(queries),
                                   lambda: [m._family(counts, v) for v in range(queries)], m._rng, low=0.05)
        m.noise_multiplier_ = release.charge.noise_multiplier
        tables = [normalise(noisy, m._backoff(noisy, v), m.shrinkage * release.noise_std, m._runs(v))
                  for v, noisy in enumerate(release.values)]
        self._advise(tables, counts.n, release.noise_std)
        return tables

    def _advise(self, tables: list[np.ndarray], n: int, noise_sd: float) -> None:
        """Warn when the rarest target class's records, spread over a column's value bins, are
        fewer than one noise sd per cell: the tables then hold little of what predicts the target
        (measured: 120 columns × 1,440 rows, 8.5 % positive, ε = 1: 0.3 of a noise sd per cell and
        train-on-synthetic AUROC ≈ 0.5; the benchmark tables at ε = 1: 1.5–8). Post-processing of
        the released tables: no record is read."""
        m = self.model
        if m.target_ is None:
            return
        target = m.schema_.column(m.schema_.target)
        n_cats = len(target.categories or [])
        share = np.asarray(tables[m.target_][0][:n_cats], float)
        if n_cats < 2 or share.sum() <= 0:
            return
        rare = int(np.argmin(share))
        records = n * share[rare] / share.sum()
        per_cell = records / (m.bins_ * noise_sd)
        if per_cell >= _ADVICE_CELL_SIGMAS:
            return
        warnings.warn(
            f"at ε = {m.privacy.epsilon:g} each count of the network carries noise of sd ≈ {noise_sd:,.0f} records "
            f"({m.n_variables_} columns share the budget), while the target's rarest class "
            f"{target.categories[rare]!r} has about {records:,.0f} of {n:,} records: the synthetic table will keep "
            f"little of what predicts {target.name!r}. A larger ε, fewer columns, or public bounds and "
            "categories (schema) leave more of the budget for it", UtilityWarning, stacklevel=2)

    def fitted(self) -> dict[str, Any]:
        return {"tree": self.model.tree_}

    def restore(self, fitted: dict[str, Any]) -> None:
        self.model.tree_ = fitted["tree"]


def counts_for(model: BayesNet) -> ExactCounts:
    """The counts component of ``model``: noisy exactly when it was given a budget."""
    return NoisyCounts(model) if model.privacy is not None else ExactCounts(model)
