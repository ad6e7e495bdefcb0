"""visitrnn: a neural sequence model of patients and their visits (long-format tables), with or without DP.

A synthetic patient is drawn in two parts:

1. **the patient**: the per-patient columns (the schema's level ``"patient"``: arm, sex, baseline
   age, the outcome) and the first visit's time, from a small VAE over the one-row-per-patient table;
2. **the visits**, one GRU step each, conditioned on those columns (the GRU's start state and every
   step's input). A step first says whether there is another visit (the *stop token*: end of
   follow-up; the first visit always exists), and if so draws its gap to the previous visit (log
   scale, a Gaussian), every visit-level number (a Gaussian in the encoder's scale) with its
   *missing* flag, and every visit-level category. So the number of visits varies, times strictly
   increase (each gap is at least the time column's resolution: a day for integer days or dates),
   no visit follows the last, and a patient stops at ``max_visits`` or at the time column's upper
   bound.

Training is teacher forcing: step ``k`` sees the real visit ``k − 1`` and learns visit ``k``;
padded steps are masked out of the loss. One patient's loss is the VAE's (reconstruction + β·KL)
plus the sum over their visits, so one patient is one sample.

Differential privacy (``dp-visitrnn``): **privacy unit: patient (all rows of one patient)**.

* **Contribution bound.** A patient's visits after the first ``max_visits`` are dropped before
  anything is read (``max_visits`` is public: the parameter, default
  :data:`~clinsynth.long_schema.MAX_VISITS` under DP).
* **Public facts** come from one charged Gaussian release (:func:`~clinsynth.privacy.statistics.charged_release`)
  on a table with *one row per patient*: their per-patient columns and, from one of their visits
  chosen uniformly at random (independently per patient, seeded), the time and every visit-level
  column, and from one random later visit the log gap (empty for a one-visit patient). Adding or
  removing a patient adds or removes one row of that table (the other rows' distribution is
  unchanged), so the release's sensitivity is that of one record of it: one patient. Bounds,
  categories, formats, missing policies and scalings of every column — visit-level ones included —
  come from it (or the schema's declared-public facts), never from the rows; the rows are then
  clipped into the released schema (:func:`~clinsynth.privacy.conform.conform`), a fixed function
  of each row.
* **DP-SGD with a patient as the sample.** Batches are Poisson samples of *patients* (rate =
  expected batch / patients); each patient's gradient is that of their whole loss (VAE term and
  every visit, through Opacus' ``DPGRU``, whose per-sample gradients sum over the recurrence),
  clipped to ``max_grad_norm`` and noised (:class:`~clinsynth.privacy.dpsgd.PrivateGradient`); the
  noise is calibrated so the ledger's total stays within (ε, δ).

Size: ~650 lines in four sections (the table as patients and visits, the codec, the network, the
model); the codec and the network exist for this model only and are tested through it.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from clinsynth import distributed
from clinsynth.data.codecs import decode_bounds
from clinsynth.data.io import write_with
from clinsynth.data.transforms import NumericCodec, TableEncoder, numeric_values, synthetic_ids
from clinsynth.errors import ConfigError, SchemaError
from clinsynth.long_schema import MAX_VISITS
from clinsynth.models import bundle
from clinsynth.models.base import Conditions
from clinsynth.models.long_base import PatientModel
from clinsynth.models.records import RealStep, RecordCodec
from clinsynth.models.tags import PATIENT_TAGS
from clinsynth.models.training import CategoricalNoise, TrainingProgress, flush_denormals, mlp, resolve_device, seeded
from clinsynth.privacy.budget import Privacy
from clinsynth.privacy.unit import LONG_PATIENT_UNIT
from clinsynth.schema import ColumnSpec, Schema


def gap_name(time_column: str) -> str:
    """The internal visit-level column holding log(gap to the previous visit)."""
    return f"{time_column}:log_gap"


# -- the table as patients and visits ----------------------------------------------------------
@dataclass
class Patients:
    """A long table split for the model: one row per patient, one row per visit (patients in order)."""

    static: pd.DataFrame   # per-patient columns and the first visit's time (under the time column's name)
    visits: pd.DataFrame   # visit-level columns and the log gap (NaN at first visits)
    lengths: np.ndarray    # visits per patient
    offsets: np.ndarray    # row of each patient's first visit in ``visits``
    frame: pd.DataFrame    # the long table sorted by patient and time (truncated to max_visits)


def patient_columns(schema: Schema) -> list[str]:
    return [c.name for c in schema.columns if c.level == "patient"]


def visit_columns(schema: Schema) -> list[str]:
    return [c.name for c in schema.columns if c.level == "visit"]


def split_patients(df: pd.DataFrame, schema: Schema, max_visits: int) -> Patients:
    """Sort by patient and time, keep each patient's first ``max_visits`` visits, and split."""
    pid, t_col = schema.patient, schema.time
    frame = df.sort_values([pid, t_col], kind="stable").reset_index(drop=True)
    k = frame.groupby(pid, sort=False).cumcount().to_numpy()
    if (k >= max_visits).any():
        frame = frame[k < max_visits].reset_index(drop=True)
        k = k[k < max_visits]
    first = np.flatnonzero(k == 0)
    lengths = np.diff(np.r_[first, len(frame)])
    return Patients(static=frame.loc[first, [*patient_columns(schema), t_col]].reset_index(drop=True),
                    visits=_visit_frame(frame, schema, k == 0), lengths=lengths, offsets=first, frame=frame)


def _visit_frame(frame: pd.DataFrame, schema: Schema, first: np.ndarray) -> pd.DataFrame:
    t = numeric_values(frame[schema.time], schema.column(schema.time).kind)
    gap = np.r_[np.nan, np.diff(t)]
    gap[first] = np.nan
    visits = frame[visit_columns(schema)].reset_index(drop=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # a gap clipped to 0 (DP bounds) is clipped again below
        visits[gap_name(schema.time)] = np.log(np.maximum(gap, 1e-9))
    return visits


def part_schema(schema: Schema, names: list[str], extra: tuple[ColumnSpec, ...] = ()) -> Schema:
    """A one-row-per-record schema of some of a long schema's columns (plus ``extra``)."""
    columns = [schema.column(n).model_copy(update={"level": None}) for n in names] + list(extra)
    target = schema.target if schema.target in names else None
    return Schema(columns=columns, target=target, privacy_unit="row")


def static_schema(schema: Schema) -> Schema:
    return part_schema(schema, [*patient_columns(schema), schema.time])


def visit_schema(schema: Schema, gap: ColumnSpec) -> Schema:
    return part_schema(schema, visit_columns(schema), (gap,))


def time_unit(spec: ColumnSpec) -> float:
    """The smallest step of the time column (in its numeric units: days for dates); 0 when none."""
    if spec.kind == "integer":
        return 1.0
    if spec.kind == "datetime":
        return 1.0 if spec.decimals == 0 else 1.0 / 86_400
    return 10.0 ** -spec.decimals if spec.decimals is not None else 0.0


# -- the codec -----------------------------------------------------------------------------------
class VisitCodec:
    """Per-patient features (a TableEncoder), per-visit features (another), and the visit loss
    and draws over the visit encoder's spans. A step's network output is
    ``[stop/continue logit | visit logits (visit encoder's dim) | log σ of each number]``."""

    def __init__(self, schema: Schema, static: TableEncoder, visit: TableEncoder, gap: ColumnSpec, max_visits: int):
        self.schema, self.static, self.visit, self.gap, self.max_visits = schema, static, visit, gap, int(max_visits)
        self.record = RecordCodec(static.schema, static)  # the VAE's loss and decoding of the patient
        self.static_dim, self.visit_dim = static.dim, visit.dim
        linear = [s for s in visit.spans if s.activation == "linear"]
        self.softmax = [s for s in visit.spans if s.activation == "softmax"]
        names = {s.name: s for s in visit.spans}
        self.n_linear = len(linear)
        self.out_dim = 1 + self.visit_dim + self.n_linear
        self._linear = torch.tensor([s.start for s in linear], dtype=torch.long)
        observed = [names[f"{s.name}:missing"].start if f"{s.name}:missing" in names else -1 for s in linear]
        self._observed = torch.tensor(observed, dtype=torch.long)
        self._gap = [s.name for s in linear].index(gap.name)
        self._missing_value = {names[f"{s.name}:missing"].start: s.start for s in linear if f"{s.name}:missing" in names}

    # -- training ------------------------------------------------------------------------------
    def sequence_loss(self, out: torch.Tensor, target: torch.Tensor, content: torch.Tensor,
                      exists: torch.Tensor, exist_mask: torch.Tensor) -> torch.Tensor:
        """Per-patient negative log-likelihood of their visits (padded steps masked): the stop token
        at every step after the first, Gaussian numbers where observed (the gap from the second
        visit on), cross-entropy of every category and missing flag."""
        loss = F.binary_cross_entropy_with_logits(out[..., 0], exists, reduction="none") * exist_mask
        logits = out[..., 1:1 + self.visit_dim]
        if self.n_linear:
            lin = self._linear.to(out.device)
            log_sigma = out[..., 1 + self.visit_dim:].clamp(-6.0, 3.0)
            z = (target[..., lin] - logits[..., lin]) * torch.exp(-log_sigma)
            weight = content.unsqueeze(-1).expand(-1, -1, self.n_linear).clone()
            obs = self._observed.to(out.device)
            has = obs >= 0
            if bool(has.any()):
                weight[..., has] = weight[..., has] * target[..., obs[has]]
            weight[:, 0, self._gap] = 0.0
            loss = loss + ((0.5 * z * z + log_sigma) * weight).sum(-1)
        for s in self.softmax:
            part = logits[..., s.start:s.stop]
            ce = F.cross_entropy(part.reshape(-1, s.dim), target[..., s.start:s.stop].argmax(-1).reshape(-1),
                                 reduction="none").view(content.shape)
            loss = loss + ce * content
        return loss.sum(1)

    # -- sampling ------------------------------------------------------------------------------
    def draw(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A visit's features (rows × visit dim) drawn from one step's output: numbers from their
        Gaussians, categories and missing flags from their softmaxes (a missing number's value is 0,
        as the encoder writes it)."""
        logits = out[:, 1:1 + self.visit_dim]
        feats = torch.zeros_like(logits)
        if self.n_linear:
            lin = self._linear.to(out.device)
            sigma = torch.exp(out[:, 1 + self.visit_dim:].clamp(-6.0, 3.0))
            noise = torch.randn(sigma.shape, generator=generator, device=out.device)
            feats[:, lin] = logits[:, lin] + sigma * noise
        if self.softmax:
            noisy = CategoricalNoise(self.softmax, out.device)(logits.T.contiguous(), generator).T
            rows = torch.arange(len(out), device=out.device)
            for s in self.softmax:
                pick = noisy[:, s.start:s.stop].argmax(1)
                feats[rows, s.start + pick] = 1.0
                if s.start in self._missing_value:  # flag index 1 = missing
                    feats[pick == 1, self._missing_value[s.start]] = 0.0
        return feats

    # -- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"static": self.static.state_dict(), "visit": self.visit.state_dict(),
                "gap": self.gap.model_dump(mode="json"), "max_visits": self.max_visits}

    @classmethod
    def from_state_dict(cls, schema: Schema, state: dict[str, Any]) -> VisitCodec:
        if not schema.is_long:
            raise SchemaError("the schema is not long format (no patient and time columns)")
        for key in ("static", "visit", "gap", "max_visits"):
            if key not in state:
                raise SchemaError(f"encoder state has no '{key}' entry")
        gap = ColumnSpec.model_validate(state["gap"])
        if gap.name != gap_name(schema.time):
            raise SchemaError(f"encoder state's gap column '{gap.name}' does not belong to time column '{schema.time}'")
        static = TableEncoder.from_state_dict(static_schema(schema), state["static"])
        visit = TableEncoder.from_state_dict(visit_schema(schema, gap), state["visit"])
        return cls(schema, static, visit, gap, int(state["max_visits"]))


# -- the network ---------------------------------------------------------------------------------
class VisitNet(nn.Module):
    """The patient VAE and the visit GRU. ``private`` builds Opacus' ``DPGRU`` (per-sample gradients
    through the recurrence) instead of the fused ``nn.GRU``; both hold the same parameters under
    the same names, so DP-trained weights load into the fused one for sampling."""

    def __init__(self, static_dim: int, visit_dim: int, out_dim: int, hidden: int, latent: int, private: bool = False):
        super().__init__()
        self.latent = latent
        self.encoder = mlp([static_dim, hidden, 2 * latent])
        self.decoder = mlp([latent, hidden, static_dim])
        self.start = nn.Linear(static_dim, hidden)
        in_dim = visit_dim + 2 + static_dim
        if private:
            from opacus.layers import DPGRU

            self.gru: nn.Module = DPGRU(in_dim, hidden, batch_first=True)
        else:
            self.gru = nn.GRU(in_dim, hidden, batch_first=True)
        self.head = mlp([hidden, hidden, out_dim])

    def forward(self, s: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(static logits, KL, step outputs) for patients' static features ``s`` (B × static dim)
        and step inputs ``x`` (B × steps × (visit dim + 2))."""
        mu, log_var = self.encoder(s).chunk(2, dim=1)
        log_var = log_var.clamp(-10.0, 10.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(1)
        h, _ = self.steps(s, x)
        return self.decoder(z), kl, self.head(h)

    def steps(self, s: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if h0 is None:
            h0 = torch.tanh(self.start(s)).unsqueeze(0)
        inputs = torch.cat([x, s.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)
        return self.gru(inputs, h0)


def public_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s weights under the fused GRU's names (a DPGRU also lists its cells' own names)."""
    return {k: v for k, v in net.state_dict().items() if not k.startswith("gru.l")}


# -- the model -----------------------------------------------------------------------------------
class VisitRNN(PatientModel):
    """Sequence model of patients and their visits (``visitrnn``; ``dp-visitrnn`` with a budget).

    Parameters
    ----------
    epochs, batch_size, lr : training length, patients per batch (the expected Poisson batch
        under DP), Adam's learning rate.
    hidden : width of the GRU, the VAE and the output head.
    latent_dim : size of the patient VAE's latent space; beta : weight of its KL term.
    max_visits : visits per patient at most; later visits are dropped before training, and
        sampling stops there. ``None``: the longest patient (no DP) or
        :data:`~clinsynth.long_schema.MAX_VISITS` (DP: it must not come from the data).
    max_grad_norm : the per-patient clipping norm of DP-SGD (with a budget only).
    privacy : the budget (:class:`~clinsynth.Privacy`: ε, δ, the accountant and the public facts'
        share, raised for few patients, see :mod:`clinsynth.privacy.facts_budget`), or ``None``
        (``create("dp-visitrnn", epsilon=1)`` is ``create("visitrnn", privacy=Privacy(epsilon=1))``).
    device, seed, progress : as for every model.

    ``sample(n)`` returns ``n`` synthetic patients as a long table: one row per visit, new patient ids.
    """

    name = "visitrnn"
    tags = PATIENT_TAGS  # long-format tables (one row per visit): the "patients" family

    def __init__(self, epochs: int = 40, batch_size: int = 128, lr: float = 2e-3, hidden: int = 96,
                 latent_dim: int = 16, beta: float = 0.2, max_visits: int | None = None,
                 max_grad_norm: float = 1.0, privacy: Privacy | None = None, device: str = "auto", seed: int = 0,
                 progress: bool = True):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.hidden = hidden
        self.latent_dim = latent_dim
        self.beta = beta
        self.max_visits = max_visits
        self.max_grad_norm = max_grad_norm
        self._given(privacy)
        self.device = device
        self.seed = seed
        self.progress = progress

    # -- checks ------------------------------------------------------------------------------------
    def _validate_params(self, schema: Schema) -> None:
        def whole(v: Any, low: int) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low

        bad = []
        for name in ("epochs", "batch_size", "hidden", "latent_dim"):
            if not whole(getattr(self, name), 1):
                bad.append(f"{name}={getattr(self, name)!r} (a whole number ≥ 1)")
        if self.max_visits is not None and not whole(self.max_visits, 1):
            bad.append(f"max_visits={self.max_visits!r} (a whole number ≥ 1, or None)")
        for name, low in (("lr", 0.0), ("max_grad_norm", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > low):
                bad.append(f"{name}={value!r} (> 0)")
        if isinstance(self.beta, bool) or not (isinstance(self.beta, (int, float)) and self.beta >= 0):
            bad.append(f"beta={self.beta!r} (≥ 0)")
        if bad:
            raise ConfigError(f"{self.name}: invalid settings: {', '.join(bad)}")
        resolve_device(self.device)

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, df: pd.DataFrame, schema: Schema | None = None, *,
            checkpoint_dir: str | Path | None = None) -> VisitRNN:
        """Learn from a long table (one row per visit) described by a long-format ``schema``
        (checked by :meth:`PatientModel.fit`)."""
        if checkpoint_dir is not None:
            raise ConfigError(f"{self.name} writes no checkpoints yet; fit without checkpoint_dir")
        return super().fit(df, schema)

    def _fit_patients(self, df: pd.DataFrame, schema: Schema) -> None:
        if self.max_visits is not None:
            cap = int(self.max_visits)
        elif self.private:
            cap = MAX_VISITS  # public: never the data's longest patient
        else:
            cap = int(df.groupby(schema.patient, sort=False).size().max())
        self.device_ = resolve_device(self.device)
        data = split_patients(df, schema, cap)
        if self.private:
            schema, codec, data = self._prepare_private(schema, data, cap)
        else:
            codec = self._prepare(schema, data, cap)
        self.schema_ = schema
        self.n_train_ = len(data.lengths)
        self.max_visits_ = cap
        self._static_x = codec.static.encode(data.static)
        self._visit_x = codec.visit.encode(data.visits)
        self._lengths, self._offsets = data.lengths, data.offsets
        if self.private:
            self._calibrate(self.n_train_)
        try:
            with seeded(self.seed, self.device_), flush_denormals():
                self.codec_ = codec
                self._train(codec)
        finally:
            del self._static_x, self._visit_x
        self.encoder_ = codec

    def _prepare(self, schema: Schema, data: Patients, cap: int) -> VisitCodec:
        gap = ColumnSpec(name=gap_name(schema.time), kind="continuous")
        static = TableEncoder(static_schema(schema)).fit(data.static)
        visits = data.visits
        if not np.isfinite(visits[gap.name].to_numpy(dtype=float)).any():  # every patient has one visit
            visits = visits.assign(**{gap.name: 0.0})
        visit = TableEncoder(visit_schema(schema, gap)).fit(visits)
        return VisitCodec(schema, static, visit, gap, cap)

    # -- DP ------------------------------------------------------------------------------------
    def release_table(self, schema: Schema, data: Patients) -> tuple[pd.DataFrame, Schema]:
        """One row per patient for the public facts: the per-patient columns, and the time and
        visit-level columns of one visit drawn uniformly per patient, and the log gap of one later
        visit (see the module docstring: the row of a patient depends on that patient alone)."""
        rng = np.random.default_rng((self.seed, 0x5EED))
        lengths, offsets = data.lengths, data.offsets
        pick = offsets + np.floor(rng.random(len(lengths)) * lengths).astype(np.int64)
        later = offsets + 1 + np.floor(rng.random(len(lengths)) * np.maximum(lengths - 1, 0)).astype(np.int64)
        table = data.static[patient_columns(schema)].copy()
        table[schema.time] = data.frame[schema.time].to_numpy()[pick]
        for name in visit_columns(schema):
            table[name] = data.frame[name].to_numpy()[pick]
        gaps = data.visits[gap_name(schema.time)].to_numpy(dtype=float)
        table[gap_name(schema.time)] = np.where(lengths >= 2, gaps[np.minimum(later, len(gaps) - 1)], np.nan)
        names = [*patient_columns(schema), schema.time, *visit_columns(schema)]
        gap = ColumnSpec(name=gap_name(schema.time), kind="continuous", missing="indicator")
        release_schema = part_schema(schema, names, (gap,))
        return table[[c.name for c in release_schema.columns]], release_schema

    def _prepare_private(self, schema: Schema, data: Patients, cap: int) -> tuple[Schema, VisitCodec, Patients]:
        from clinsynth.privacy.conform import conform
        from clinsynth.privacy.schema_facts import relabelled
        from clinsynth.privacy.statistics import charged_release

        assert self.privacy is not None
        self.ledger_ = self.privacy.ledger(len(data.lengths), unit="patient")
        table, release_schema = self.release_table(schema, data)
        release = charged_release(table, release_schema, self.ledger_, self.privacy.stats_share,
                                  np.random.default_rng(self.seed), never_flags={gap_name(schema.time)})
        record = release.record()  # the summary names the gap as a user reads it, not "week:log_gap"
        self.facts_ = {**record, "queries": relabelled(record["queries"],
                                                       {gap_name(schema.time): f"{schema.time} between visits"})}
        released = {c.name: c for c in release.schema.columns}
        columns = [released[c.name].model_copy(update={"level": c.level}) if c.name in released else c
                   for c in schema.columns]
        schema = Schema.model_validate({**schema.model_dump(), "columns": [c.model_dump() for c in columns]})
        name = gap_name(schema.time)
        gap_bounds = released[name].bounds
        gap = ColumnSpec(name=name, kind="continuous", bounds=gap_bounds)
        numeric = dict(release.numeric)
        numeric.setdefault(name, {"loc": 0.0, "scale": 1.0})
        static = TableEncoder(static_schema(schema)).fit_from_statistics(numeric)
        visit = TableEncoder(visit_schema(schema, gap)).fit_from_statistics(numeric)
        frame = conform(data.frame, release)  # clipped into the released schema, row by row
        first = np.zeros(len(frame), dtype=bool)
        first[data.offsets] = True
        visits = _visit_frame(frame, schema, first)
        if gap_bounds is not None:
            visits[name] = visits[name].clip(*gap_bounds)
        data = Patients(static=frame.loc[data.offsets, [*patient_columns(schema), schema.time]].reset_index(drop=True),
                        visits=visits, lengths=data.lengths, offsets=data.offsets, frame=frame)
        return schema, VisitCodec(schema, static, visit, gap, cap), data

    def _calibrate(self, n: int) -> None:
        """The DP-SGD charge: Poisson sampling of patients, one noise multiplier within what is left of ε."""
        from clinsynth.privacy.dpsgd import expected_batch
        from clinsynth.privacy.ledger import Charge, charge_calibrated

        batch = expected_batch(self.batch_size, n, f"{self.name} patients")
        self.sample_rate_ = batch / n
        self.steps_per_epoch_ = max(1, round(n / batch))

        def charge(sigma: float) -> Charge:
            return Charge("dp-sgd", f"visit model (patient VAE and visit GRU): {self.epochs} epochs × "
                          f"{self.steps_per_epoch_} steps, Poisson sampling of patients (one sample = one patient, "
                          f"all visits), clip {self.max_grad_norm:g} per patient", noise_multiplier=sigma,
                          sample_rate=self.sample_rate_, steps=self.epochs * self.steps_per_epoch_, unit="patient")

        self.noise_multiplier_ = charge_calibrated(self.ledger_, charge)

    # -- training ------------------------------------------------------------------------------
    def _batches(self, epoch: int) -> Any:
        """Patient indices of one epoch: Poisson samples under DP (what the accountant assumes),
        shuffled fixed-size batches otherwise."""
        from clinsynth.privacy.dpsgd import poisson_batches

        n = self.n_train_
        if self.private:
            yield from poisson_batches(n, self.sample_rate_, self.steps_per_epoch_, seed=self.seed * 1_000_003 + epoch)
            return
        batch = min(self.batch_size, n)
        order = np.random.default_rng((self.seed, epoch)).permutation(n)
        for start in range(0, n - batch + 1, batch):
            yield np.sort(order[start:start + batch])

    def batch(self, patients: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The padded tensors of some patients, every one of their visits (up to ``max_visits``):
        static features (B × static dim), step inputs, step targets, content mask, stop targets
        and stop mask (B × steps …). Steps beyond a patient's last are padding."""
        codec, dv = self.codec_, self.codec_.visit_dim
        lengths = self._lengths[patients]
        steps = int(min(lengths.max() + 1, self.max_visits_))
        k = np.arange(steps)
        content = k[None, :] < lengths[:, None]
        exists_mask = (k[None, :] < np.minimum(lengths + 1, self.max_visits_)[:, None]) & (k[None, :] >= 1)
        rows = (self._offsets[patients][:, None] + k[None, :])[content]
        target = np.zeros((len(patients), steps, dv), dtype=np.float32)
        target[content] = self._visit_x[rows]
        inputs = np.zeros((len(patients), steps, dv + 2), dtype=np.float32)
        inputs[:, 1:, :dv] = target[:, :-1]
        inputs[:, 0, dv] = 1.0
        inputs[:, :, dv + 1] = (np.log1p(k) / math.log1p(codec.max_visits))[None, :]
        dev = self.device_
        as_t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
        return (as_t(self._static_x[patients]), as_t(inputs), as_t(target), as_t(content.astype(np.float32)),
                as_t(content.astype(np.float32)), as_t(exists_mask.astype(np.float32)))

    def _train(self, codec: VisitCodec) -> None:
        from clinsynth.privacy.dpsgd import PrivateGradient

        started = time.perf_counter()
        net = VisitNet(codec.static_dim, codec.visit_dim, codec.out_dim, self.hidden, self.latent_dim,
                       private=self.private).to(self.device_)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr)
        engine = None
        if self.private:
            gen = torch.Generator(device=self.device_).manual_seed(self.seed * 31 + 7)
            engine = PrivateGradient(net, self.noise_multiplier_, self.max_grad_norm,
                                     self.sample_rate_ * self.n_train_, gen)
        step = RealStep(net, optimizer, engine)
        self.history_: list[dict[str, float]] = []
        with TrainingProgress(self.epochs, f"{self.name} training", self.progress) as bar, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*")
            for epoch in range(self.epochs):
                total, count = 0.0, 0
                for patients in distributed.shard(self._batches(epoch), private=self.private):  # several processes: a share
                    if len(patients) == 0:
                        step(None)  # an empty Poisson batch still releases noise
                        continue
                    s, x, target, content, exists, exists_mask = self.batch(patients)
                    static_logits, kl, out = step.real(s, x)
                    loss = (codec.record.reconstruction_loss(static_logits, s) + self.beta * kl
                            + codec.sequence_loss(out, target, content, exists, exists_mask))
                    step(loss)
                    total, count = total + float(loss.detach().sum()), count + len(patients)
                self.history_.append({"loss": total / max(count, 1)})
                bar.advance(loss=self.history_[-1]["loss"])
        net = step.finish()
        distributed.check_in_sync([net], self.name)
        self.net_ = self._public_net(codec)
        self.net_.load_state_dict(public_state(net))
        self.net_.eval()
        self.train_seconds_ = time.perf_counter() - started

    def _public_net(self, codec: VisitCodec) -> VisitNet:
        return VisitNet(codec.static_dim, codec.visit_dim, codec.out_dim, self.hidden, self.latent_dim).to(self.device_)

    # -- sample ---------------------------------------------------------------------------------
    def _draw(self, n: int, conditions: Conditions | None, seed: int, chunk: int = 4096) -> pd.DataFrame:
        """``n`` synthetic patients as a long table (one row per visit, new patient ids), drawn
        ``chunk`` patients at a time."""
        if conditions:
            raise ConfigError(f"{self.name} cannot be conditioned yet; sample without conditions")
        gen = torch.Generator(device=self.device_).manual_seed(seed)
        with torch.inference_mode():
            parts = [self._sample_chunk(min(chunk, int(n) - start), start, gen) for start in range(0, int(n), chunk)]
        return pd.concat(parts, ignore_index=True)

    def _sample_chunk(self, m: int, start: int, gen: torch.Generator) -> pd.DataFrame:
        codec, net, dv, dev = self.codec_, self.net_, self.codec_.visit_dim, self.device_
        schema = self.schema_
        z = torch.randn(m, net.latent, generator=gen, device=dev)
        static, _ = codec.record.decode(net.decoder(z), gen, "sample", id_start=start)
        s = torch.as_tensor(codec.static.encode(static), device=dev)
        alive = torch.arange(m, device=dev)
        h = torch.tanh(net.start(s)).unsqueeze(0)
        x = torch.zeros(m, 1, dv + 2, device=dev)
        x[:, 0, dv] = 1.0
        who, feats = [], []
        for k in range(codec.max_visits):
            out, h = net.steps(s[alive], x, h)
            o = net.head(out[:, 0])
            if k > 0:
                keep = torch.rand(len(o), generator=gen, device=dev) < torch.sigmoid(o[:, 0])
                alive, h, o = alive[keep], h[:, keep], o[keep]
                if len(alive) == 0:
                    break
            f = codec.draw(o, gen)
            who.append(alive.cpu().numpy())
            feats.append(f.cpu().numpy())
            step_feature = torch.full((len(f), 1), math.log1p(k + 1) / math.log1p(codec.max_visits), device=dev)
            x = torch.cat([f, torch.zeros(len(f), 1, device=dev), step_feature], dim=1).unsqueeze(1)
        patient = np.concatenate(who)
        order = np.argsort(patient, kind="stable")  # steps were appended in order: stable keeps them
        patient = patient[order]
        visits = codec.visit.decode(np.concatenate(feats)[order])
        return self._assemble(static, visits, patient, start, schema)

    def _assemble(self, static: pd.DataFrame, visits: pd.DataFrame, patient: np.ndarray, start: int,
                  schema: Schema) -> pd.DataFrame:
        """The long table of drawn patients: times from the first visit's time plus the gaps (each
        at least the time column's resolution), cut at the time column's upper bound."""
        t_spec = schema.column(schema.time)
        t_codec = self.codec_.static.codecs[schema.time]
        assert isinstance(t_codec, NumericCodec)
        first = np.r_[True, patient[1:] != patient[:-1]]
        gap = np.exp(visits[gap_name(schema.time)].to_numpy(dtype=float))
        unit = time_unit(t_spec)
        if unit > 0:
            gap = np.maximum(np.round(gap / unit) * unit, unit)
        gap[first] = 0.0
        t0 = numeric_values(static[schema.time], t_spec.kind)
        t = t0[patient] + pd.Series(gap).groupby(patient).cumsum().to_numpy()
        if unit == 0:  # no resolution: only make sure each time is above the one before
            prev = np.r_[-np.inf, t[:-1]]
            t = np.where(~first & (t <= prev), np.nextafter(prev, np.inf), t)
        keep = np.ones(len(t), dtype=bool)
        if t_spec.bounds is not None:
            hi = decode_bounds(t_spec)[1]
            keep = t <= hi + 1e-9 * max(1.0, abs(hi))
            keep |= first  # the first visit's time is within bounds already
        patient, t, visits = patient[keep], t[keep], visits[keep].reset_index(drop=True)
        per_patient = static.iloc[patient].reset_index(drop=True)
        n_patients = len(static)
        ids = synthetic_ids(n_patients, "syn-", start)
        out: dict[str, Any] = {}
        for spec in schema.columns:
            if spec.name == schema.patient:
                out[spec.name] = ids.take(patient)
            elif spec.name == schema.time:
                out[spec.name] = t_codec.decode(t, scaled=False)
            elif spec.level == "patient":
                out[spec.name] = per_patient[spec.name].array
            else:
                out[spec.name] = visits[spec.name].array
        return pd.DataFrame(out)

    # -- persistence ------------------------------------------------------------------------------
    @classmethod
    def _encoder_from_state(cls, schema: Schema, state: dict[str, Any]) -> VisitCodec:
        return VisitCodec.from_state_dict(schema, state)

    def _fitted_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_visits": self.max_visits_}
        if self.private:  # the ledger, noise multiplier and released facts: SynthModel._fitted_privacy
            out.update(sample_rate=self.sample_rate_, privacy_unit=LONG_PATIENT_UNIT)
        else:  # losses on real records are statistics of them: not in a DP bundle
            out["history"] = getattr(self, "history_", [])
        return out

    def _save_weights(self, directory: Path) -> None:
        state = {"net": self.net_.state_dict()}
        write_with(directory / "weights.pt", lambda tmp: torch.save(state, tmp))

    def _restore(self, fitted: dict[str, Any], encoder: VisitCodec, directory: Path) -> None:
        self.device_ = resolve_device(self.device, fallback_to_cpu=True)
        self.max_visits_ = int(fitted["max_visits"])
        self.codec_ = encoder
        if self.private:  # the ledger and the rest: SynthModel._restore_privacy
            self.sample_rate_ = fitted["sample_rate"]
        else:
            self.history_ = fitted.get("history", [])
        state = bundle.load_torch(directory, self.device_)
        self.net_ = self._public_net(encoder)
        bundle.restore_module(directory, self.net_, state, "net")
        self.net_.eval()

