"""A counting model of patients and their visits (``visitchain``, ``dp-visitchain``): issue 21, item 2.

A long-format table (one row per visit) is modelled in the spirit of the Bayesian network
(:mod:`clinsynth.models.bayesnet`), whose variables, bins and tables it reuses:

* **per patient** — the per-patient columns (the target among them), the patient's number of
  visits (``__visits``) and the time of the first visit (``__start``: a day offset, or the first
  visit's date) form a one-row-per-patient table learnt by the Bayesian network itself, so the
  number of visits and the start depend on the per-patient columns through its tree;
* **visits** — a Markov chain over a patient's visits. Each visit column is a discrete variable
  (bins of its value, a state for *missing*, or its categories) and so is the gap since the
  previous visit (``__gap``). Each has one table P(state | class, visits remaining, previous
  visit's state of the same variable, its first visit's state) — "class" the
  patient's target, "visits remaining" bins of n − k (0, 1, 2, 3–4, 5–9, 10+), so labs missing
  more often just before the last visit (an event, a dropout) are reproduced; a visit column also
  reads its own value at the patient's first visit (the patient's level, which one visit of memory
  forgets); the first visit reads a *start* state in place of the previous one. Each table is shrunk
  towards the same table without its last parent, that one towards the table without its last two,
  … down to P(state | class, visits remaining), so a sparse context falls back on the chain's memory;
* **sampling** draws each synthetic patient from the network (new id, class, visit count,
  start), then its visits in order; times are the start plus cumulative gaps (each at least one
  unit of the time column's precision: strictly increasing), nothing comes after the last visit,
  and every value is decoded through the table encoder, so types, categories, bounds and missing
  codes are the schema's.

What a privacy budget changes is the component the chain is given, chosen once
(``models/visitchain_counts.py``: :class:`ExactVisitCounts` or :class:`NoisyVisitCounts`, as the
network's ``bayesnet_counts.py``); the long table's layout, split, visit encoder and clock are in
``models/visitchain_layout.py``.

DP (``dp-visitchain``): one privacy ledger; **the privacy unit is the patient (all rows of one
patient)**: neighbouring tables differ by all the rows of one patient. Charges, in order:

1. the per-patient table through ``dp-bayesnet`` (its public facts, its structure and its tables,
   all with one record = one patient), given ``patient_share`` of the budget (in μ², Gaussian-DP);
2. the visit columns' public facts (bounds, kinds, categories, missing policy, and the gap's) by
   the existing one-record-per-row release (:func:`clinsynth.privacy.statistics.charged_release`)
   on a table of one row per patient: one visit picked at random per patient (and one gap), with
   randomness independent of the data, so each patient is one record of it;
3. every transition table in ONE Gaussian mechanism that spends what is left.

**Per-patient contribution bound (the tables of step 3).** A patient's visits are capped at
``max_visits_dp`` (default 20): a longer history keeps its first ⌈cap/2⌉ and last ⌊cap/2⌋ visits
(so both its start and its approach to the end are seen), the transition across the cut is not
counted and the rest is dropped for the DP fit. A patient with m counted visits in a table adds
weight 1/m to each of them (1 ≤ m ≤ cap, so each weight is ≥ 1/cap), so its counts in every table
sum to exactly 1: its L1, hence L2, change to one table is ≤ 1 whatever cells its visits fall in.
With T tables (one per visit column, plus the gap's) the L2 sensitivity of the whole release is
**√T** (independent of the cap, which bounds how thinly a long history is spread), and each cell
gets N(0, (σ√T)²) noise, σ calibrated on the ledger to the budget left. Tables then count patients
rather than visits (each patient weighs the same), which estimates the same transition
probabilities when patients share them given the context. The bins of the visit columns come from
the released facts alone and their number is chosen so an average cell stands ``theta`` noise sds
above zero, from n, ε and the schema before any record is read (the gap's tables, which read no
first visit, get their own, finer count), and so is what the tables remember of a patient's earlier
visits (the previous one, the first one or both: ``memory``); a value is drawn within its bin by the
released quantile table, so even two bins keep a column's shape.

Size: ~535 lines, of which ~60 are this description of the method and its DP guarantee. The rest is
one model: the chain's contexts, counts and hierarchical shrinkage are read by both the fit and the
sampler (and by ``membership_scores``), so splitting them would spread one set of fitted attributes
over two files; what a budget changes and the long table's layout already live beside it.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clinsynth.data.transforms import CategoricalCodec, NumericCodec, synthetic_ids
from clinsynth.errors import ConfigError
from clinsynth.models import bundle
from clinsynth.models.bayesnet import BayesNet, Variable, coarse_view, normalise
from clinsynth.models.base import ClassMix, Conditions
from clinsynth.models.long_base import PatientModel, order_visits
from clinsynth.models.visitchain_layout import (REMAINING_EDGES, Layout, VisitEncoder, Visits, _Clock, gap_spec,
                                                remaining_bin, split_visits, time_step, wide_spec)
from clinsynth.privacy.budget import Privacy
from clinsynth.schema import ColumnSpec, Schema

if TYPE_CHECKING:
    from clinsynth.models.visitchain_counts import ExactVisitCounts

__all__ = ["VisitChain", "Layout", "Visits", "VisitEncoder", "split_visits", "gap_spec", "time_step", "remaining_bin",
           "REMAINING_EDGES"]

#: the non-DP chain's defaults, measured on the simulated long trial (bench/bench_long.py; 4,000
#: training patients, 3 seeds): a visit column reads its first value through every bin (24 at that
#: size) and sparse contexts lean lightly on the hierarchical back-off. With that back-off, from the
#: earlier 4 groups and 0.25: the first/last correlation gap 0.281 → 0.114, lag-1 gap 0.132 → 0.048,
#: TSTR/TRTR 0.994 → 0.995, distance-to-closest share closer to training 0.514 → 0.521 (0.5: no
#: closer than a fresh patient; seed 0 with 0.01 pseudo-records: gap 0.08, share 0.532).
FIRST_BINS = 24
SMOOTHING = 0.03


# -- the chain -------------------------------------------------------------------------------------
def _draw(table: np.ndarray, context: np.ndarray, rng: np.random.Generator,
          feasible: np.ndarray | None = None) -> np.ndarray:
    """One inverse-CDF draw per row from ``table[context]``; ``feasible`` (rows × states, optional)
    restricts each row to its allowed states (a row with none allowed draws its first state)."""
    probs = table[context]
    if feasible is not None:
        probs = np.where(feasible, probs, 0.0)
        probs[probs.sum(axis=1) <= 0, 0] = 1.0
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(context)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), table.shape[1] - 1)


class VisitChain(ClassMix, PatientModel):
    """Per-patient Bayesian network plus a Markov chain over visits (``visitchain`` in the registry).

    Parameters
    ----------
    bins : value bins per visit column and per-patient number; ``None``: visits / 40 within 5…24
        (a column with at most that many distinct values keeps them exactly).
    parent_bins : groups of bins through which a visit column is seen by the next column of the
        same visit and through which the gap is seen by that visit.
    first_bins : groups of bins through which a visit column's first value is seen by its later
        visits (the patient's own level, which a chain with one visit of memory forgets).
    smoothing : pseudo-records per state in each context, spread as the same table without its last
        parent (hierarchically, down to P(state | class, visits remaining)).
    privacy : the budget (:class:`~clinsynth.Privacy`; its ``stats_share`` goes to the visit
        columns' public facts the schema does not declare), or ``None``. With one the model is
        ``dp-visitchain`` (``create("dp-visitchain", epsilon=1)`` is ``create("visitchain",
        privacy=Privacy(epsilon=1))`` with the alias's defaults: ``parent_bins`` 3, no smoothing); a
        visit column's first value is then seen through ``parent_bins`` groups, and these apply:

    max_visits_dp : visits of one patient the DP fit reads (its first ⌈cap/2⌉ and last ⌊cap/2⌋).
    patient_share : budget share (μ²) of the per-patient table (``dp-bayesnet`` on one row per patient).
    theta : an average cell's count over its noise sd that the visit bins must reach.
    shrinkage : pseudo-records towards the same table without its last parent, in noise sds.
    memory : what a visit column's table reads of the patient's earlier visits (coarse, through
        ``parent_bins`` groups): ``"previous"`` (the previous visit), ``"first"`` (the first visit:
        the patient's own level, which one visit of memory forgets) or ``"both"`` (twice the cells
        per table); ``None``: ``"both"`` when it costs no value bins (the planned bins are the same:
        at the floor of 2), else ``"first"``. Measured on the simulated long trial
        (``bench/bench_long.py``; mean over 3 seeds of |real − synthetic| first/last and lag-1
        correlation, summed): 4,000 training patients, ε = 1 (2 bins each way): previous 1.17,
        first 1.13, both 0.99; ε = 4 (8 bins, both: 2): previous 1.00, both 1.00, first 0.77;
        16,000 patients, ε = 1, seed 0 (9 bins, both: 2): previous 0.99, both 0.96, first 0.80.
        TSTR/TRTR moved within ±0.02 (seed to seed ±0.04).
    """

    name = "visitchain"

    def __init__(self, bins: int | None = None, parent_bins: int = 4, first_bins: int = FIRST_BINS,
                 smoothing: float = SMOOTHING, max_visits_dp: int = 20, patient_share: float = 0.35,
                 theta: float = 2.0, shrinkage: float = 1.0, memory: str | None = None,
                 privacy: Privacy | None = None, seed: int = 0, progress: bool = True):
        self.bins = bins
        self.parent_bins = parent_bins
        self.first_bins = first_bins
        self.smoothing = smoothing
        self.max_visits_dp = max_visits_dp
        self.patient_share = patient_share
        self.theta = theta
        self.shrinkage = shrinkage
        self.memory = memory
        self._given(privacy)
        self.seed = seed
        self.progress = progress

    def _validate_params(self, schema: Schema) -> None:
        bad = []
        if self.bins is not None and not (isinstance(self.bins, int) and 2 <= self.bins <= 200):
            bad.append(f"bins={self.bins!r} (a whole number from 2 to 200, or None)")
        for name in ("parent_bins", "first_bins"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                bad.append(f"{name}={value!r} (a whole number ≥ 1)")
        if not (isinstance(self.smoothing, (int, float)) and self.smoothing >= 0):
            bad.append(f"smoothing={self.smoothing!r} (a number ≥ 0)")
        bad += self._counting().problems()
        if bad:
            raise ConfigError(f"{self.name}: invalid settings: {', '.join(bad)}")

    def _counting(self) -> ExactVisitCounts:
        """Where this chain's facts and counts come from: noisy releases exactly when it was given a
        budget (``models/visitchain_counts.py``), chosen once."""
        if getattr(self, "_counter", None) is None:
            from clinsynth.models.visitchain_counts import counts_for

            self._counter = counts_for(self)
        return self._counter

    # -- fitting ---------------------------------------------------------------------------
    def _fit_patients(self, df: pd.DataFrame, schema: Schema) -> None:
        counting = self._counting()
        counting.open()
        layout = Layout.of(schema)
        time = schema.column(schema.time)
        parts = split_visits(df, layout, time)
        self.layout_ = layout
        self._time = time
        self.first_bins_ = counting.first_bins()
        self.patients_ = counting.patient_table(parts.patients, self._patient_schema(schema, layout))
        visit_schema = Schema(columns=[wide_spec(schema.column(c)) for c in layout.per_visit]
                              + [gap_spec(time, layout.gap)])
        encoder, visits = counting.visit_encoder(parts, visit_schema)
        classes = self._classes_of(parts.patients)
        values, codes = encoder.table.split(encoder.table.encode(visits))
        self.encoder_ = encoder
        self.bins_ = counting.value_bins(len(visits))
        self.variables_ = self._variables(encoder, values, codes, parts)
        states = self._discretise(encoder, values, codes)
        self.parents_ = counting.structure()
        self.tables_ = counting.tables(states, classes[parts.patient], parts)
        self.schema_ = counting.output_schema(schema)

    def _patient_schema(self, schema: Schema, layout: Layout) -> Schema:
        time = schema.column(schema.time)
        start = wide_spec(time, name=layout.start)
        visits = ColumnSpec(name=layout.visits, kind="integer", decimals=0, dtype="float64",
                            bounds=self._counting().visits_bounds())
        return Schema(columns=[wide_spec(schema.column(c)) for c in layout.per_patient] + [visits, start],
                      target=schema.target)

    def _classes_of(self, patients: pd.DataFrame) -> np.ndarray:
        """Each patient's class: the code of its target (0 for all without a target)."""
        target = self.layout_.target
        if target is None:
            return np.zeros(len(patients), dtype=np.int64)
        spec = self.patients_.schema_.column(target)
        return CategoricalCodec(spec).codes(self._counting().conformed(patients)[target]).astype(np.int64)

    @property
    def n_classes_(self) -> int:
        target = self.layout_.target
        return 1 if target is None else CategoricalCodec(self.patients_.schema_.column(target)).n_levels

    def _variables(self, encoder: VisitEncoder, values: np.ndarray, codes: np.ndarray, parts: Visits) -> list[Variable]:
        table = encoder.table
        linear = [s.name for s in table.spans if s.activation == "linear"]
        softmax = [s.name for s in table.spans if s.activation == "softmax"]
        first = parts.position == 0
        out = []
        for name in [*self.layout_.per_visit, self.layout_.gap]:
            codec = table.codecs[name]
            if isinstance(codec, CategoricalCodec):
                out.append(Variable(name, codec.n_levels, coarse_view(codec.n_levels, 0, codec.n_levels)))
                continue
            j = linear.index(name)
            miss = codes[:, softmax.index(f"{name}:missing")].astype(bool) if codec.has_missing else np.zeros(len(values), bool)
            if name == self.layout_.gap:
                miss = miss | first
            z = values[~miss, j]
            bins = self._counting().gap_bins() if name == self.layout_.gap else self.bins_
            lo, hi = self._counting().numeric_states(codec, z, bins) if z.size else ([0.0], [0.0])
            k = len(lo)
            has_missing = codec.has_missing and name != self.layout_.gap
            out.append(Variable(name, k + has_missing, coarse_view(k, int(has_missing), self.parent_bins),
                                lo=lo, hi=hi, missing=k if has_missing else None))
        return out

    def _discretise(self, encoder: VisitEncoder, values: np.ndarray, codes: np.ndarray) -> np.ndarray:
        table = encoder.table
        linear = [s.name for s in table.spans if s.activation == "linear"]
        softmax = [s.name for s in table.spans if s.activation == "softmax"]
        states = np.empty((len(values), len(self.variables_)), dtype=np.int64)
        for v, var in enumerate(self.variables_):
            if not var.numeric:
                states[:, v] = codes[:, softmax.index(var.name)]
                continue
            lo, hi = np.asarray(var.lo), np.asarray(var.hi)
            s = np.searchsorted((lo[1:] + hi[:-1]) / 2, values[:, linear.index(var.name)], side="right")
            if var.missing is not None:
                s = np.where(codes[:, softmax.index(f"{var.name}:missing")].astype(bool), var.missing, s)
            states[:, v] = s
        return states

    # -- structure: which context each visit variable reads -------------------------------------
    def _parent_size(self, kind: str, var: int) -> int:
        """States of a parent ``[kind, variable]`` (the component's ``structure`` picks them): ``class``,
        ``remaining``, ``previous`` (the same variable at the previous visit), ``first`` (the same
        variable at the patient's first visit, coarse: a patient's own level, which a chain with one
        visit of memory forgets), ``within`` (the visit's previous column, coarse), ``gap`` (this
        visit's gap, coarse)."""
        if kind == "class":
            return self.n_classes_
        if kind == "remaining":
            return len(REMAINING_EDGES)
        variable = self.variables_[var]
        if kind == "previous":
            return self._counting().previous_view(variable)[1] + 1  # + the start state
        if kind == "first":
            return self._first_view(variable)[1] + 1  # + the start state
        if kind == "gap":
            return variable.coarse_states + 1  # + the start state
        return variable.coarse_states

    def _first_view(self, variable: Variable) -> tuple[np.ndarray, int]:
        """How a variable's first-visit state is seen: its value bins in ``first_bins_`` runs
        (missing its own state; categories as they are)."""
        if not variable.numeric:
            return np.arange(variable.states), variable.states
        extra = int(variable.missing is not None)
        view = coarse_view(variable.states - extra, extra, self.first_bins_)
        return np.asarray(view), max(view) + 1

    def _context(self, v: int, cls: np.ndarray, remaining: np.ndarray, current: np.ndarray,
                 previous: np.ndarray | None, first: np.ndarray | None = None) -> np.ndarray:
        """Each row's context index for variable ``v``: ``current`` holds the visit's states drawn
        so far, ``previous`` the previous visit's and ``first`` the first visit's (None at a first
        visit; -1 entries: none)."""
        index = np.zeros(len(cls), dtype=np.int64)
        for kind, var in self.parents_[v]:
            size = self._parent_size(kind, var)
            if kind == "class":
                state = cls
            elif kind == "remaining":
                state = remaining_bin(remaining)
            elif kind == "previous":
                view, n = self._counting().previous_view(self.variables_[var])
                state = np.full(len(cls), n) if previous is None else np.where(previous[:, var] < 0, n,
                                                                               view[np.maximum(previous[:, var], 0)])
            else:
                coarse = (self._first_view(self.variables_[var])[0] if kind == "first"
                          else np.asarray(self.variables_[var].coarse))
                raw = current[:, var] if kind != "first" else \
                    (np.full(len(cls), -1) if first is None else first[:, var])
                state = coarse[raw] if kind == "within" else np.where(raw < 0, size - 1, coarse[np.maximum(raw, 0)])
            index = index * size + state
        return index

    def _configs(self, v: int) -> int:
        return int(np.prod([self._parent_size(k, u) for k, u in self.parents_[v]]))

    def _row_contexts(self, states: np.ndarray, cls: np.ndarray, parts: Visits) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per variable, the rows it is read at (not the gap of a first visit) and their contexts."""
        first = parts.position == 0
        previous = np.vstack([np.full((1, states.shape[1]), -1), states[:-1]])
        previous[first] = -1
        opening = states[np.flatnonzero(first)[parts.patient]]
        opening[first] = -1  # a first visit reads the start state
        gap = len(self.variables_) - 1
        current = states.copy()
        current[first, gap] = -1  # a first visit has no gap
        out = []
        for v in range(len(self.variables_)):
            rows = ~first if v == gap else np.ones(len(states), bool)
            out.append((rows, self._context(v, cls[rows], parts.remaining[rows], current[rows], previous[rows],
                                            opening[rows])))
        return out

    def _counts(self, states: np.ndarray, cls: np.ndarray, parts: Visits, weights: list[np.ndarray | None]
                ) -> list[np.ndarray]:
        """The (contexts × states) count table of every variable; ``weights[v]`` per row (None: 1;
        a row of weight 0 is not counted)."""
        out = []
        for v, (var, (rows, ctx)) in enumerate(zip(self.variables_, self._row_contexts(states, cls, parts))):
            w = None
            if weights[v] is not None:
                keep = weights[v][rows] > 0
                ctx, w = ctx[keep], weights[v][rows][keep]
                rows = np.flatnonzero(rows)[keep]
            flat = np.bincount(ctx * var.states + states[rows, v], weights=w, minlength=self._configs(v) * var.states)
            out.append(flat.reshape(-1, var.states).astype(float))
        return out

    def membership_scores(self, df: pd.DataFrame, floor: float = 1e-12) -> np.ndarray:
        """White-box membership signal per patient of the long table ``df``, in order of first
        appearance: the log-likelihood of its visits under the fitted transition tables (each
        P(state | context) floored at ``floor``, so a transition the chain never saw costs a
        fixed amount). A trained-on patient put weight on its own cells, so it tends to score
        higher. The per-patient network is not scored. For :mod:`clinsynth.privacy.audit_patients`."""
        self._check_fitted()
        schema, layout = self.schema_, self.layout_
        ids = pd.unique(df[schema.patient])
        data = order_visits(df, schema)
        parts = split_visits(data, layout, schema.column(schema.time))
        visits = parts.visits.copy()
        visits.loc[parts.position == 0, layout.gap] = np.nan
        visits = self._counting().conformed_visits(visits)  # DP: as the released facts have them
        table = self.encoder_.table
        states = self._discretise(self.encoder_, *table.split(table.encode(visits)))
        cls = self._classes_of(parts.patients)[parts.patient]
        score = np.zeros(len(parts.count))
        for v, (rows, ctx) in enumerate(self._row_contexts(states, cls, parts)):
            p = self.tables_[v][ctx, states[rows, v]]
            score += np.bincount(parts.patient[rows], weights=np.log(np.maximum(p, floor)), minlength=len(score))
        first = data[schema.patient].to_numpy()[parts.position == 0]
        return pd.Series(score, index=first).loc[ids].to_numpy()

    def _shrunk(self, counts: np.ndarray, v: int, strength: float) -> np.ndarray:
        """P(state | parents) of variable ``v`` from its (noisy) ``counts``, shrunk hierarchically:
        towards the same table without its last parent, that one towards the table without its
        last two, … down to P(state | class, visits remaining), each step with ``strength``
        pseudo-records. A sparse context so falls back on the chain's memory (the previous visit)
        rather than on a marginal that forgets the patient: measured on the simulated long trial
        (4,000 training patients, seed 0, the earlier defaults), the first/last correlation gap
        0.28 → 0.22 and the lag-1 gap 0.13 → 0.06 (bench/bench_long.py)."""
        sizes = [self._parent_size(k, u) for k, u in self.parents_[v]]

        def level(table: np.ndarray, depth: int) -> np.ndarray:
            if depth <= 2:
                base = np.clip(table, 0.0, None) + 1e-9
                return base / base.sum(axis=1, keepdims=True)
            last = sizes[depth - 1]
            coarser = table.reshape(-1, last, table.shape[1]).sum(axis=1)
            return normalise(table, np.repeat(level(coarser, depth - 1), last, axis=0), strength)

        top = len(sizes)
        if top <= 2:
            return level(counts, top)
        coarser = counts.reshape(-1, sizes[-1], counts.shape[1]).sum(axis=1)
        return normalise(counts, np.repeat(level(coarser, top - 1), sizes[-1], axis=0), strength)

    # -- sampling ----------------------------------------------------------------------------------
    def _default_class_probs(self) -> np.ndarray:
        return self.patients_._default_class_probs()

    def _draw(self, n: int, conditions: Conditions | None, seed: int) -> pd.DataFrame:
        return self._sample(n, self._class_probs(conditions), seed)

    def _sample(self, n: int, class_probs: np.ndarray, seed: int) -> pd.DataFrame:
        patient_seed, visit_seed = np.random.SeedSequence(seed).generate_state(2)
        people = self.patients_._sample(n, class_probs, int(patient_seed))
        rng = np.random.default_rng(int(visit_seed))
        layout = self.layout_
        clock = _Clock.of(self)
        start = clock.starts(people[layout.start])
        count = np.maximum(np.nan_to_num(people[layout.visits].to_numpy(dtype=float), nan=1.0), 1.0).astype(np.int64)
        count = clock.feasible_count(start, count)
        cls = self._classes_of(people)
        offset = np.r_[0, np.cumsum(count)[:-1]]
        rows = int(count.sum())
        n_vars = len(self.variables_)
        gap_var = n_vars - 1
        states = np.full((rows, n_vars), -1, dtype=np.int64)
        gaps = np.zeros(rows)
        now = start.copy()  # each patient's latest visit time
        previous: np.ndarray | None = None
        for k in range(int(count.max())):
            active = np.flatnonzero(count > k)
            remaining = count[active] - 1 - k
            current = np.full((len(active), n_vars), -1, dtype=np.int64)
            if k > 0:  # the gap first: it must leave room for the visits still to come
                allowed = clock.allowed_gap(now[active], remaining)
                ctx = self._context(gap_var, cls[active], remaining, current, previous[active],
                                    states[offset[active]])
                current[:, gap_var] = _draw(self.tables_[gap_var], ctx, rng, clock.feasible(allowed))
                gap = clock.draw_gap(self, current[:, gap_var], allowed, rng)
                gaps[offset[active] + k] = gap
                now[active] += gap
            for v in range(n_vars - 1):
                ctx = self._context(v, cls[active], remaining, current, None if previous is None else previous[active],
                                    None if previous is None else states[offset[active]])
                current[:, v] = _draw(self.tables_[v], ctx, rng)
            states[offset[active] + k] = current
            if previous is None:
                previous = np.full((n, n_vars), -1, dtype=np.int64)
            previous[active] = current
        return self._decode(people, states, count, offset, start, gaps, rng)

    def _decode(self, people: pd.DataFrame, states: np.ndarray, count: np.ndarray, offset: np.ndarray,
                start: np.ndarray, gaps: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
        table = self.encoder_.table
        linear = [s.name for s in table.spans if s.activation == "linear"]
        softmax = [s.name for s in table.spans if s.activation == "softmax"]
        values = np.zeros((len(states), len(linear)))
        codes = np.zeros((len(states), len(softmax)), dtype=np.int16)
        for v, var in enumerate(self.variables_[:-1]):  # the gaps were drawn with the chain, in time units
            s = states[:, v]
            if not var.numeric:
                codes[:, softmax.index(var.name)] = np.maximum(s, 0)
                continue
            value = np.minimum(np.maximum(s, 0), len(var.lo) - 1)
            lo, hi = np.asarray(var.lo)[value], np.asarray(var.hi)[value]
            values[:, linear.index(var.name)] = self._counting().within(var.name, lo, hi, rng.random(len(s)))
            if f"{var.name}:missing" in softmax:
                codes[:, softmax.index(f"{var.name}:missing")] = (s == var.missing) if var.missing is not None else 0
        visits = table.decode_parts(values, codes)
        return self._assemble(people, visits, count, offset, start, gaps)

    def _assemble(self, people: pd.DataFrame, visits: pd.DataFrame, count: np.ndarray, offset: np.ndarray,
                  start: np.ndarray, gaps: np.ndarray) -> pd.DataFrame:
        layout, schema = self.layout_, self.schema_
        time = schema.column(schema.time)
        owner = np.repeat(np.arange(len(count)), count)
        cumulative = np.cumsum(gaps)
        cumulative -= cumulative[offset][owner]  # restart at each patient's first visit (its gap is 0)
        times = start[owner] + cumulative
        unbounded = time.model_copy(update={"bounds": None})
        out: dict[str, Any] = {}
        expanded = people.iloc[owner].reset_index(drop=True)
        for spec in schema.columns:
            if spec.name == layout.patient:
                out[spec.name] = np.asarray(synthetic_ids(len(count)), dtype=object)[owner]
            elif spec.name == layout.time:
                out[spec.name] = NumericCodec(unbounded).decode(times, scaled=False)
            elif spec.name in layout.per_patient:
                out[spec.name] = expanded[spec.name]
            elif spec.name in layout.per_visit:
                out[spec.name] = visits[spec.name]
            else:  # another identifier column: fresh ids per row
                out[spec.name] = synthetic_ids(len(owner))
        return pd.DataFrame(out)

    # -- persistence -----------------------------------------------------------------------------
    @classmethod
    def _encoder_from_state(cls, schema: Schema, state: dict[str, Any]) -> VisitEncoder:
        return VisitEncoder.from_state_dict(state)

    def _fitted_config(self) -> dict[str, Any]:
        out = {"layout": asdict(self.layout_), "bins": self.bins_, "first_bins": self.first_bins_,
               "parents": self.parents_, "variables": [asdict(v) for v in self.variables_], "rows": self.n_rows_}
        return {**out, **self._counting().fitted()}

    def _save_weights(self, directory: Path) -> None:
        np.savez(directory / "visit_tables.npz", **{f"t{v}": t for v, t in enumerate(self.tables_)})
        self.patients_.write_bundle(directory / "patients")

    def _patient_model_class(self) -> type[BayesNet]:
        return BayesNet

    def _restore(self, fitted: dict[str, Any], encoder: VisitEncoder, directory: Path) -> None:
        self.layout_ = Layout(**fitted["layout"])
        self.bins_ = fitted["bins"]
        self.first_bins_ = fitted.get("first_bins", self.parent_bins)  # bundles before first_bins: the coarse view
        self._counting().restore(fitted)
        self.n_rows_ = fitted["rows"]
        self.parents_ = [[list(p) for p in ps] for ps in fitted["parents"]]
        self.variables_ = [Variable(**v) for v in fitted["variables"]]
        self.patients_ = self._patient_model_class().load(Path(directory) / "patients")
        self.encoder_ = encoder
        self.tables_ = bundle.load_arrays(Path(directory), "visit_tables.npz",
                                          [f"t{v}" for v in range(len(self.variables_))])
        for v, (var, t) in enumerate(zip(self.variables_, self.tables_)):
            if t.shape != (self._configs(v), var.states) or not np.isfinite(t).all() or (t < 0).any():
                raise bundle.bundle_error(Path(directory), "visit_tables.npz",
                                          f"does not fit the chain in config.json: table t{v} ('{var.name}') has "
                                          f"shape {t.shape}, expected ({self._configs(v)}, {var.states})")
