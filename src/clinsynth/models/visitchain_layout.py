"""The long table read for the visit chain (``models/visitchain.py``): which column is what, the
split into a per-patient table and a visit table, the visit table's encoder, and the clock that
keeps a synthetic patient's visit times inside the time column's bounds.

Shared by the chain and the component that counts for it (``models/visitchain_counts.py``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clinsynth.data.codecs import decode_bounds
from clinsynth.data.transforms import TableEncoder, numeric_values
from clinsynth.schema import ColumnSpec, Schema

if TYPE_CHECKING:
    from clinsynth.models.visitchain import VisitChain

#: lower edges of the "visits remaining after this one" bins: 0, 1, 2, 3–4, 5–9, 10+
REMAINING_EDGES = (0, 1, 2, 3, 5, 10)
_DAY_SECONDS = 86_400.0


def remaining_bin(remaining: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.asarray(REMAINING_EDGES), remaining, side="right") - 1


def _free_name(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name += "_"
    return name


# -- the layout: which column is what ----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Layout:
    """The long schema read once: per-patient and per-visit columns and the derived variables' names."""

    patient: str
    time: str
    target: str | None
    per_patient: list[str]
    per_visit: list[str]
    visits: str  # number of visits (per patient)
    start: str   # time of the first visit (per patient)
    gap: str     # time since the previous visit (per visit)

    def labels(self) -> dict[str, str]:
        """What the derived variables are called where a user reads them (the release's summary):
        the internal names (``__visits``…) mean nothing outside this module."""
        return {self.visits: "visits per patient", self.start: f"first {self.time}",
                self.gap: f"{self.time} between visits"}

    @classmethod
    def of(cls, schema: Schema) -> Layout:
        taken = set(schema.names)
        per_patient = [c.name for c in schema.model_columns if c.level == "patient"]
        per_visit = [c.name for c in schema.model_columns if c.level == "visit" and c.name != schema.time]
        return cls(schema.patient, schema.time, schema.target, per_patient, per_visit,
                   _free_name("__visits", taken), _free_name("__start", taken), _free_name("__gap", taken))


def wide_spec(spec: ColumnSpec, **update: Any) -> ColumnSpec:
    return spec.model_copy(update={"level": None, **update})


def gap_spec(time: ColumnSpec, name: str) -> ColumnSpec:
    """The gap between visits as a column: whole units for whole-number times and daily dates,
    else the time's decimals (days for dates); always positive."""
    if time.kind == "integer" or (time.kind == "datetime" and time.decimals == 0):
        return ColumnSpec(name=name, kind="integer", decimals=0, dtype="float64")
    decimals = None if time.kind == "datetime" else time.decimals
    return ColumnSpec(name=name, kind="continuous", decimals=decimals, dtype="float64")


def time_step(time: ColumnSpec) -> float:
    """The smallest gap the time column can hold (in its units; days for dates)."""
    if time.kind == "integer" or (time.kind == "datetime" and time.decimals == 0):
        return 1.0
    if time.kind == "datetime":
        return 1.0 / _DAY_SECONDS
    return 10.0 ** -time.decimals if time.decimals is not None else 1e-9


@dataclasses.dataclass(frozen=True)
class _Clock:
    """Where a synthetic patient's visits may fall: from its start, each gap at least one unit of the
    time column, never past the time column's upper bound — the output schema's: declared public,
    the data's without DP, released under DP. A patient's visit count is cut to what fits between
    its start and the bound before its visits are drawn (so "visits remaining" stays true), and each
    gap is drawn among the values that leave room for the visits still to come (at the smallest gap
    the chain draws, or one unit where that no longer fits): no visit is dropped after the fact."""

    kind: str
    step: float
    lo: float
    hi: float
    gap_lo: np.ndarray  # each gap state's lower edge, in time units
    floor: float        # the smallest gap the chain draws (≥ one unit)

    @classmethod
    def of(cls, model: VisitChain) -> _Clock:
        time = model.schema_.column(model.schema_.time)
        lo, hi = decode_bounds(time) if time.bounds is not None else (-math.inf, math.inf)
        gap = model.variables_[-1]
        edges = np.asarray(model.encoder_.table.codecs[gap.name].decode(np.asarray(gap.lo, float)), float)
        step = time_step(time)
        floor = max(step, float(np.nanmin(edges))) if edges.size else step
        return cls(time.kind, step, float(lo), float(hi), edges, floor)

    def starts(self, start: pd.Series) -> np.ndarray:
        t = numeric_values(start, self.kind)
        t = np.nan_to_num(t, nan=float(np.nanmean(t)) if np.isfinite(t).any() else 0.0)
        return np.clip(t, self.lo, self.hi) if math.isfinite(self.hi) else t

    def feasible_count(self, start: np.ndarray, count: np.ndarray) -> np.ndarray:
        """Visit counts cut to what fits between each start and the bound at one unit per gap."""
        if not math.isfinite(self.hi):
            return count
        room = np.floor((self.hi - start) / self.step + 1e-9).astype(np.int64)
        return np.minimum(count, 1 + np.maximum(room, 0))

    def allowed_gap(self, now: np.ndarray, remaining: np.ndarray) -> np.ndarray:
        """The largest gap each patient may take now and still fit its ``remaining`` later visits."""
        if not math.isfinite(self.hi):
            return np.full(len(now), math.inf)
        room = self.hi - now
        allowed = room - remaining * self.floor
        allowed = np.where(allowed >= self.step, allowed, room - remaining * self.step)
        return np.floor(allowed / self.step + 1e-9) * self.step

    def feasible(self, allowed: np.ndarray) -> np.ndarray | None:
        """Per row, the gap states whose lower edge fits (None: every state, no bound)."""
        if not np.isfinite(allowed).any():
            return None
        return self.gap_lo[None, :] <= allowed[:, None] + 1e-9

    def draw_gap(self, model: VisitChain, states: np.ndarray, allowed: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
        """A gap (time units) within each drawn state, at most ``allowed`` and at least one unit."""
        var = model.variables_[-1]
        codec = model.encoder_.table.codecs[var.name]
        value = np.minimum(np.maximum(states, 0), len(var.lo) - 1)
        lo, hi = np.asarray(var.lo)[value], np.asarray(var.hi)[value]
        bounded = np.isfinite(allowed)
        if bounded.any():
            cap = codec.encode_values(np.where(bounded, allowed, 0.0))
            hi = np.where(bounded, np.maximum(np.minimum(hi, cap), lo), hi)
        gap = np.asarray(codec.decode(model._counting().within(var.name, lo, hi, rng.random(len(states)))), float)
        if self.kind == "datetime" and self.step < 1.0:
            gap = np.round(gap * _DAY_SECONDS) / _DAY_SECONDS
        return np.minimum(np.maximum(np.nan_to_num(gap, nan=self.step), self.step), allowed)


@dataclasses.dataclass
class Visits:
    """A long table split for the model: the per-patient table, the visit table and each row's place."""

    patients: pd.DataFrame     # one row per patient: per-patient columns, number of visits, start
    visits: pd.DataFrame       # one row per visit: visit columns and the gap (NaN at a first visit)
    patient: np.ndarray        # each row's patient index
    position: np.ndarray       # each row's 0-based visit number
    count: np.ndarray          # each patient's number of visits
    end: pd.Series | None = None  # each patient's last visit time (the time column's values)

    @property
    def remaining(self) -> np.ndarray:
        return self.count[self.patient] - 1 - self.position


def split_visits(df: pd.DataFrame, layout: Layout, time: ColumnSpec) -> Visits:
    """``df`` (sorted by patient and time) as a :class:`Visits`."""
    patient, _ = pd.factorize(df[layout.patient], sort=False)
    position = df.groupby(patient, sort=False).cumcount().to_numpy()
    count = np.bincount(patient)
    first = position == 0
    patients = df.loc[first, layout.per_patient].reset_index(drop=True)
    patients[layout.visits] = count.astype(float)
    patients[layout.start] = df.loc[first, layout.time].reset_index(drop=True)
    t = numeric_values(df[layout.time], time.kind)
    gap = np.where(first, np.nan, t - np.r_[np.nan, t[:-1]])
    visits = df[layout.per_visit].reset_index(drop=True)
    visits[layout.gap] = gap
    last = np.r_[first[1:], True]
    return Visits(patients, visits, patient, position, count, df.loc[last, layout.time].reset_index(drop=True))


# -- the encoder of the visit table -----------------------------------------------------------------
class VisitEncoder:
    """The visit table's :class:`TableEncoder` with the (wide) schema it was built on, saved together."""

    def __init__(self, schema: Schema, encoder: TableEncoder):
        self.schema = schema
        self.table = encoder

    def state_dict(self) -> dict[str, Any]:
        return {"visit_schema": self.schema.to_json(), **self.table.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> VisitEncoder:
        schema = Schema.from_json(state["visit_schema"], "the visit table's schema in encoder.json")
        return cls(schema, TableEncoder.from_state_dict(schema, {k: v for k, v in state.items() if k != "visit_schema"}))

