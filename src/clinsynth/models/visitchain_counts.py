"""Where the visit chain's facts and counts come from: the visits themselves, or noisy releases.

The chain (``models/visitchain.py``) is one model; what a privacy budget changes is the component it
is given, chosen once: :class:`ExactVisitCounts` or :class:`NoisyVisitCounts` (as the Bayesian
network's ``models/bayesnet_counts.py``). Each answers the same questions — the per-patient network,
the visit encoder, how many value bins and where a numeric column's lie, how a value is drawn
within its bin, which context each table reads, the tables, the output schema, what the bundle
keeps — so the chain's code never asks whether it is private. The DP steps, their charges and the
per-patient contribution bound are described at the top of ``models/visitchain.py``; the component
writes what it fits (``ledger_``, ``memory_``, ``within_``, …) on the model, where the bundle, the
report and the audit read it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

from clinsynth.data.transforms import NumericCodec, TableEncoder
from clinsynth.models.bayesnet import BayesNet, Variable, observed_states, released_states
from clinsynth.models.long_base import PATIENT_ROWS_UNIT
from clinsynth.models.visitchain_layout import REMAINING_EDGES, VisitEncoder, Visits, wide_spec
from clinsynth.privacy.ledger import Charge, PrivacyLedger, budget_problems, share_noise_multiplier
from clinsynth.privacy.schema_facts import relabelled
from clinsynth.schema import ColumnSpec, Schema

if TYPE_CHECKING:
    from clinsynth.models.visitchain import VisitChain

#: what the DP chain's tables may remember of a patient's earlier visits (see VisitChain: memory)
MEMORIES = ("previous", "first", "both")


class ExactVisitCounts:
    """The visits as they are: the plain network, an encoder fitted on the data, bins from n,
    full-memory contexts and smoothed tables."""

    def __init__(self, model: VisitChain):
        self.model = model

    def problems(self) -> list[str]:
        """What is wrong with the settings these counts read (nothing without a budget)."""
        return []

    def open(self) -> None:
        """Before any record is read (the DP ledger opens here)."""

    def first_bins(self) -> int:
        return self.model.first_bins

    def visits_bounds(self) -> tuple[float, float] | None:
        """Bounds of the per-patient number of visits (the data's: 1 … rows)."""
        return 1.0, float(self.model.n_rows_)

    def patient_table(self, table: pd.DataFrame, schema: Schema) -> BayesNet:
        m = self.model
        return BayesNet(bins=m.bins, parent_bins=m.parent_bins, smoothing=m.smoothing, seed=m.seed,
                        progress=False).fit(table, schema)

    def visit_encoder(self, parts: Visits, schema: Schema) -> tuple[VisitEncoder, pd.DataFrame]:
        data = parts.visits.copy()
        first = parts.position == 0
        data.loc[first, self.model.layout_.gap] = np.nan
        encoder = TableEncoder(schema).fit(data)
        return VisitEncoder(schema, encoder), data

    def conformed(self, patients: pd.DataFrame) -> pd.DataFrame:
        """The per-patient table as the network's schema has it."""
        return patients

    def conformed_visits(self, visits: pd.DataFrame) -> pd.DataFrame:
        """The visit table as the visit encoder's schema has it."""
        return visits

    def value_bins(self, n_visits: int) -> int:
        m = self.model
        return m.bins if m.bins is not None else int(np.clip(n_visits // 40, 5, 24))

    def gap_bins(self) -> int:
        """Value bins of the gap (its tables read no first visit, so they may be finer than the labs')."""
        return self.model.bins_

    def numeric_states(self, codec: NumericCodec, z: np.ndarray, bins: int) -> tuple[list[float], list[float]]:
        return observed_states(z, bins)

    def within(self, name: str, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A value inside each drawn bin [lo, hi] (encoded units) from uniform ``u``: uniform within the
        bin (the non-DP bins are fine quantiles of the data)."""
        return lo + u * (hi - lo)

    def structure(self) -> list[list[list[Any]]]:
        """Class, visits remaining, the previous visit's state and (not for the gap) the first's."""
        m = self.model
        gap = len(m.variables_) - 1
        parents: list[list[list[Any]]] = []
        for v in range(len(m.variables_)):
            base: list[list[Any]] = [["class", -1], ["remaining", -1], ["previous", v]]
            if v != gap:
                base.append(["first", v])
            parents.append(base)
        return parents

    def previous_view(self, variable: Variable) -> tuple[np.ndarray, int]:
        """How a variable's previous state is seen: all its states (the chain's memory)."""
        return np.arange(variable.states), variable.states

    def tables(self, states: np.ndarray, cls: np.ndarray, parts: Visits) -> list[np.ndarray]:
        m = self.model
        counts = m._counts(states, cls, parts, [None] * len(m.variables_))
        return [m._shrunk(c, v, m.smoothing * var.states) for v, (c, var) in enumerate(zip(counts, m.variables_))]

    def output_schema(self, schema: Schema) -> Schema:
        return schema

    def fitted(self) -> dict[str, Any]:
        """What the bundle keeps of these counts besides the chain."""
        return {}

    def restore(self, fitted: dict[str, Any]) -> None:
        """Take back what ``fitted`` gave."""


class NoisyVisitCounts(ExactVisitCounts):
    """One ledger with the patient as its unit: the network through ``dp-bayesnet``, the visit
    columns' facts by one release, every transition table in one Gaussian mechanism; bins, memory
    and contexts planned from n, ε and the schema alone."""

    def problems(self) -> list[str]:
        """What is wrong with the DP settings (the budget itself is checked by ``Privacy``)."""
        m = self.model
        assert m.privacy is not None
        stats_share = m.privacy.stats_share
        bad = budget_problems(m.privacy.epsilon, m.privacy.delta, m.privacy.accountant,
                              {"patient_share": m.patient_share})
        if not bad and m.patient_share + stats_share > 0.9:
            bad.append(f"patient_share + stats_share = {m.patient_share + stats_share:g} (at most 0.9: the "
                       "visit tables need the rest)")
        if not (isinstance(m.max_visits_dp, int) and not isinstance(m.max_visits_dp, bool)
                and m.max_visits_dp >= 2):
            bad.append(f"max_visits_dp={m.max_visits_dp!r} (a whole number ≥ 2)")
        if not (isinstance(m.theta, (int, float)) and m.theta > 0):
            bad.append(f"theta={m.theta!r} (a positive number)")
        if not (isinstance(m.shrinkage, (int, float)) and m.shrinkage >= 0):
            bad.append(f"shrinkage={m.shrinkage!r} (a number ≥ 0)")
        if m.memory not in (None, *MEMORIES):
            bad.append(f"memory={m.memory!r} (one of {', '.join(map(repr, MEMORIES))}, or None)")
        return bad

    # -- the budget, step by step ------------------------------------------------------------
    def open(self) -> None:
        m = self.model
        assert m.privacy is not None
        m.ledger_ = m.privacy.ledger(m.n_train_, unit="patient")
        m.within_ = {}
        m._rng = np.random.default_rng(m.seed)
        m.privacy_unit_ = (f"{PATIENT_ROWS_UNIT}; the visit tables read at most {m.max_visits_dp} visits "
                           "per patient (the first and last; the rest dropped) and each patient's counts in "
                           "each table sum to 1")

    def first_bins(self) -> int:
        return self.model.parent_bins

    def visits_bounds(self) -> tuple[float, float] | None:
        return None

    def patient_table(self, table: pd.DataFrame, schema: Schema) -> BayesNet:
        m = self.model
        budget = share_epsilon(m.patient_share, m.ledger_.epsilon, m.ledger_.delta)
        from clinsynth.models.registry import create

        model = create("dp-bayesnet", epsilon=budget, delta=m.ledger_.delta, theta=m.theta,
                       accountant=m.ledger_.accountant, seed=m.seed, progress=False).fit(table, schema)
        for c in model.ledger_.charges:  # one row = one patient: its per-record charges protect a patient
            m.ledger_.charge(dataclasses.replace(c, purpose=f"per-patient table (one row per patient): {c.purpose}",
                                                 unit="patient"))
        return model

    def conformed(self, patients: pd.DataFrame) -> pd.DataFrame:
        from clinsynth.privacy.conform import conform

        release = getattr(self.model.patients_, "release_", None)
        return conform(patients, release) if release is not None else patients

    def conformed_visits(self, visits: pd.DataFrame) -> pd.DataFrame:
        from clinsynth.privacy.conform import conform

        release = getattr(self.model, "visit_release_", None)  # a reloaded chain keeps no release
        return conform(visits, release) if release is not None else visits

    def visit_encoder(self, parts: Visits, schema: Schema) -> tuple[VisitEncoder, pd.DataFrame]:
        from clinsynth.privacy.conform import conform
        from clinsynth.privacy.statistics import charged_release

        m = self.model
        counted = counted_rows(parts, m.max_visits_dp)
        pick = np.random.default_rng(m._rng.integers(0, 2**63 - 1))
        n = len(parts.count)
        visit_row = one_row_each(parts.patient, counted, pick, n)
        gap_row = one_row_each(parts.patient, counted & (parts.position > 0), pick, n)
        layout = m.layout_
        sample = parts.visits.iloc[np.maximum(visit_row, 0)].reset_index(drop=True)
        gaps = parts.visits[layout.gap].to_numpy(dtype=float)
        sample[layout.gap] = np.where(gap_row >= 0, gaps[np.maximum(gap_row, 0)], np.nan)
        time = m._time
        purpose = f" of the visit columns, one random visit per patient ({PATIENT_ROWS_UNIT})"
        if not (time.public and time.bounds is not None):  # the bound synthetic times respect: the last visit's
            sample[layout.time] = parts.end.to_numpy()
            schema = Schema(columns=[*schema.columns, wide_spec(time)])
            purpose += ", and the time of each patient's last visit"
        release = charged_release(sample, schema, m.ledger_, m.privacy.stats_share, m._rng, extra_purpose=purpose,
                                  never_flags={layout.gap})
        m.visit_release_ = release
        released_columns = release.schema.model_dump()["columns"]
        m.end_bounds_ = end_bounds(release, layout.time)
        data = schema.model_dump()
        data["columns"] = [dict(c, missing="none") if c["name"] == layout.gap else c
                           for c in released_columns if c["name"] != layout.time]
        released = Schema.model_validate(data)
        encoder = TableEncoder(released).fit_from_statistics(release.numeric)
        visits = conform(parts.visits, release)
        visits.loc[parts.position == 0, layout.gap] = np.nan
        m.facts_ = {"budget": release.budget,
                    "queries": relabelled([*m.patients_.facts_.get("queries", []), *release.record()["queries"]],
                                          layout.labels())}
        return VisitEncoder(released, encoder), visits

    def _planned_noise(self) -> float:
        """Noise sd of a visit table's cell planned from n, ε and the schema (the ledger decides the true one)."""
        m = self.model
        left = max(1.0 - m.patient_share - m.privacy.stats_share, 0.05)
        tables = len(m.layout_.per_visit) + 1
        return share_noise_multiplier(left, m.ledger_.epsilon, m.ledger_.delta) * math.sqrt(tables)

    def value_bins(self, n_visits: int) -> int:
        """Value bins so an average cell stands ``theta`` noise sds above zero, and what the tables
        remember of earlier visits (``memory_``): planned from n, ε and the schema."""
        m = self.model

        def bins(both: bool) -> int:
            if m.bins is not None:
                return m.bins
            contexts = m.n_classes_ * len(REMAINING_EDGES) * (m.parent_bins + 2)
            if both:
                contexts *= m.first_bins + 2
            states = m.n_train_ / (contexts * m.theta * self._planned_noise())
            return int(np.clip(states - 1, 2, 16))

        both, one = bins(True), bins(False)  # previous and first views have the same size
        m.memory_ = m.memory or ("both" if both >= one else "first")
        m.gap_bins_ = one  # the gap reads its previous value only: its tables are smaller
        return both if m.memory_ == "both" else one

    def gap_bins(self) -> int:
        return self.model.gap_bins_

    def numeric_states(self, codec: NumericCodec, z: np.ndarray, bins: int) -> tuple[list[float], list[float]]:
        m = self.model
        state = m.visit_release_.numeric[codec.spec.name]
        knots = codec.encode_values(np.asarray(state["knots"], float))
        probs = ndtr(np.asarray(state["scores"], float))
        if knots.size >= 2 and probs[-1] > probs[0]:
            probs = np.maximum.accumulate((probs - probs[0]) / (probs[-1] - probs[0]))
            m.within_[codec.spec.name] = {"knots": knots.tolist(), "probs": probs.tolist()}
        return released_states(codec, state, bins)

    def within(self, name: str, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A value inside each drawn bin shaped by the released quantile table (its CDF between the
        bin's edges), not uniform: with the few bins the noise allows (2 at 4,000 patients and ε = 1)
        a uniform draw flattens a column. Measured on the simulated long trial (4,000 training
        patients, seed 0, 2 bins), the labs' mean KS per visit index 0.128 → 0.077 at ε = 1 and
        0.207 → 0.054 at ε = 4 (bench/bench_long.py)."""
        cdf = self.model.within_.get(name)
        if cdf is None:
            return lo + u * (hi - lo)
        knots, probs = np.asarray(cdf["knots"]), np.asarray(cdf["probs"])
        p_lo, p_hi = np.interp(lo, knots, probs), np.interp(hi, knots, probs)
        shaped = np.clip(quantile_at(p_lo + u * (p_hi - p_lo), probs, knots), lo, hi)
        return np.where(hi > lo, shaped, lo)

    def structure(self) -> list[list[list[Any]]]:
        """Class, visits remaining and what ``memory_`` says of earlier visits (coarse): small tables
        for the noise. The gap reads its previous value."""
        m = self.model
        gap = len(m.variables_) - 1
        memory = {"previous": [["previous"]], "first": [["first"]], "both": [["previous"], ["first"]]}[m.memory_]
        return [[["class", -1], ["remaining", -1], *([[kind, v] for (kind,) in memory] if v != gap else
                                                     [["previous", v]])] for v in range(len(m.variables_))]

    def previous_view(self, variable: Variable) -> tuple[np.ndarray, int]:
        """The previous state coarse, as the noise allows."""
        return np.asarray(variable.coarse), variable.coarse_states

    def tables(self, states: np.ndarray, cls: np.ndarray, parts: Visits) -> list[np.ndarray]:
        from clinsynth.privacy.gaussian import gaussian_release  # looked up at the call (the audit patches it)

        m = self.model
        counted = counted_rows(parts, m.max_visits_dp)
        weights = []
        for gap in (False, True):
            rows = counted & (parts.position > 0) if gap else counted
            per_patient = np.bincount(parts.patient[rows], minlength=len(parts.count))
            weights.append(np.where(rows, 1.0 / np.maximum(per_patient[parts.patient], 1), 0.0))
        tables = len(m.variables_)

        def charge(sigma: float) -> Charge:
            return Charge("gaussian", f"visit chain: {tables} transition tables ({PATIENT_ROWS_UNIT}; at most "
                                      f"{m.max_visits_dp} visits per patient, its counts in each table summing "
                                      f"to 1: L2 sensitivity √{tables})",
                          noise_multiplier=sigma, sample_rate=1.0, steps=1, unit="patient")

        # one patient's weights sum to ≤ 1 in each table: √tables over all of them
        release = gaussian_release(m.ledger_, charge, math.sqrt(tables),
                                   lambda: m._counts(states, cls, parts, [weights[0]] * (tables - 1) + [weights[1]]),
                                   m._rng)
        m.noise_multiplier_ = release.charge.noise_multiplier
        return [m._shrunk(noisy, v, m.shrinkage * release.noise_std) for v, noisy in enumerate(release.values)]

    def output_schema(self, schema: Schema) -> Schema:
        """The long schema with the released facts written in (per-patient columns from the
        network's release, visit columns from theirs, the time column from its start and gap)."""
        m = self.model
        layout = m.layout_
        released = {c.name: c for c in m.patients_.schema_.columns}
        released.update({c.name: c for c in m.encoder_.schema.columns})
        start, gap = released[layout.start], released[layout.gap]
        columns = []
        for spec in schema.columns:
            if spec.name == schema.time:
                columns.append(released_time(spec, start, gap, m.end_bounds_))
            elif spec.name in released and spec.kind != "id":
                columns.append(released[spec.name].model_copy(update={"level": spec.level}))
            else:
                columns.append(spec)
        return Schema(columns=columns, target=schema.target, patient=schema.patient, time=schema.time)

    # -- persistence -----------------------------------------------------------------------------
    def fitted(self) -> dict[str, Any]:
        m = self.model
        return {"ledger": m.ledger_.state_dict(),
                "noise_multiplier": m.noise_multiplier_, "privacy_unit": m.privacy_unit_,
                "facts_release": m.facts_, "within": m.within_, "memory": m.memory_}

    def restore(self, fitted: dict[str, Any]) -> None:
        m = self.model
        m.ledger_ = PrivacyLedger.from_state_dict(fitted["ledger"])
        m.noise_multiplier_ = fitted["noise_multiplier"]
        m.privacy_unit_ = fitted["privacy_unit"]
        m.facts_ = fitted.get("facts_release", {})
        m.within_ = fitted.get("within", {})  # bundles before it: uniform within bins
        m.memory_ = fitted.get("memory", "previous")


def counts_for(model: VisitChain) -> ExactVisitCounts:
    """The counts component of ``model``: noisy exactly when it was given a budget."""
    return NoisyVisitCounts(model) if model.privacy is not None else ExactVisitCounts(model)


# -- the DP steps' pieces ----------------------------------------------------------------------
def counted_rows(parts: Visits, cap: int) -> np.ndarray:
    """Rows the DP visit tables count: at most ``cap`` per patient (the first ⌈cap/2⌉ and the last
    ⌊cap/2⌋), without the visit right after a cut (its previous visit was dropped)."""
    n, k = parts.count[parts.patient], parts.position
    head, tail = (cap + 1) // 2, cap // 2
    kept = (n <= cap) | (k < head) | (k >= n - tail)
    after_cut = (n > cap) & (k == n - tail)
    return kept & ~after_cut


def end_bounds(release: Any, name: str) -> tuple[Any, Any] | None:
    """Bounds of the patients' last visit times from the release: the top of its located range (the
    released quantile table's last knot, rounded up to the column's precision), not the bounds
    widened by half the range for the encoder (measured on the simulated long trial at ε = 1, seed 0:
    1,996 days against 2,794 widened; the real last visit 1,796)."""
    from clinsynth.privacy.statistics import _iso_day

    spec = next((c for c in release.schema.columns if c.name == name), None)
    if spec is None or spec.bounds is None:
        return None
    knots = release.numeric.get(name, {}).get("knots")
    if not knots:
        return tuple(spec.bounds)
    if spec.kind == "datetime":
        return spec.bounds[0], min(spec.bounds[1], _iso_day(math.ceil(knots[-1])))
    unit = 10.0 ** -(0 if spec.kind == "integer" else (spec.decimals or 0))
    top = math.ceil(round(knots[-1] / unit, 9)) * unit
    return spec.bounds[0], float(min(float(spec.bounds[1]), top))


def released_time(spec: ColumnSpec, start: ColumnSpec, gap: ColumnSpec, end: Any = None) -> ColumnSpec:
    """The time column as released: its declared public bounds, else those released for the
    patients' last visits (``end``), which synthetic times respect; its precision from the start and gap."""
    bounds = spec.bounds if spec.public and spec.bounds is not None else None
    if bounds is None and end is not None:  # from the earliest start the network draws to the last visits' top
        numbers = [c for c in start.categories or [] if isinstance(c, (int, float)) and not isinstance(c, bool)]
        low = start.bounds[0] if start.bounds is not None else (min(numbers) if numbers else end[0])
        bounds = (low, end[1])
    if spec.kind == "datetime":
        return spec.model_copy(update={"bounds": bounds, "decimals": start.decimals})
    # a start that is 0 for every patient (days since baseline) is released as a 0/1 flag: whole numbers
    flag = start.kind == "binary" and all(float(c).is_integer() for c in start.categories or [])
    whole = (start.kind == "integer" or flag) and gap.kind == "integer"
    start_decimals = 0 if flag else start.decimals
    decimals = 0 if whole else (None if start_decimals is None or gap.decimals is None
                                else max(start_decimals, gap.decimals))
    return spec.model_copy(update={"bounds": bounds, "kind": "integer" if whole else "continuous",
                                   "decimals": decimals, "dtype": "int64" if whole else "float64"})


def quantile_at(p: np.ndarray, probs: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """The inverse of the piecewise-linear CDF (``knots``, non-decreasing ``probs``) at ``p``; flat
    stretches of the CDF (no mass) are skipped."""
    keep = np.r_[True, np.diff(probs) > 0]
    return np.interp(p, probs[keep], knots[keep])


def share_epsilon(share: float, epsilon: float, delta: float) -> float:
    """ε at ``delta`` of a Gaussian mechanism that takes ``share`` of the (ε, δ) budget in μ²
    (Gaussian-DP, see :func:`~clinsynth.privacy.ledger.share_noise_multiplier`): the budget to give
    a sub-model whose charges join the same ledger."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    mu = 1.0 / share_noise_multiplier(share, epsilon, delta)

    def gdp_delta(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)

    low = 1e-6
    if gdp_delta(low) <= delta:
        return low
    return float(brentq(lambda e: gdp_delta(e) - delta, low, epsilon))


def one_row_each(patient: np.ndarray, eligible: np.ndarray, rng: np.random.Generator, n_patients: int) -> np.ndarray:
    """Per patient, one of its ``eligible`` rows picked uniformly at random (-1: none), with
    randomness that does not depend on any other patient's rows."""
    key = np.where(eligible, rng.random(len(patient)), np.inf)
    order = np.lexsort((key, patient))
    first = np.r_[True, patient[order][1:] != patient[order][:-1]]
    chosen = np.full(n_patients, -1, dtype=np.int64)
    rows = order[first]
    chosen[patient[rows]] = np.where(np.isfinite(key[rows]), rows, -1)
    return chosen
