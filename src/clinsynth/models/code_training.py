"""How a code model (medGAN, corGAN, the VAE, the code tree) reads its patients: plainly, or privately.

A code model (``models/records.py``) is given a component, chosen once in ``fit``:
:class:`PlainCodes` or :class:`PrivateCodes` (when the model was given a ``Privacy``). Each
answers the same questions — what the codec may learn from, the batches of an epoch, the update
rule of a network that sees real records, what a checkpoint and a bundle keep — so the models'
training loops never ask whether they are private.

Under a budget (``dp-medgan``, ``dp-corgan``, ``dp-vae``, ``dp-codetree``) every use of the
records is charged to one ledger:

* **vocabulary** — declared public in the schema's code block, or chosen by the charged
  mechanism of :mod:`clinsynth.privacy.vocabulary`;
* **ordinary columns** — bounds and categories that are not public come from one charged Gaussian
  release (:mod:`clinsynth.privacy.statistics`) with the budget's ``stats_share``;
* **every network that sees real records** (an autoencoder's pretraining, a GAN's critic, a VAE)
  is a *phase* trained with DP-SGD on Poisson batches; all phases share one noise multiplier,
  calibrated together before training so the ledger's total stays within (ε, δ).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from clinsynth.data.ehr import CodeMatrix
from clinsynth.data.transforms import TableEncoder
from clinsynth.errors import UtilityWarning
from clinsynth.models.records import DP_FEW_PATIENTS, Phase, RealStep, static_schema
from clinsynth.privacy.dpsgd import PrivateGradient, expected_batch, poisson_batches
from clinsynth.privacy.ledger import Charge, PrivacyLedger, charge_calibrated
from clinsynth.schema import Schema

if TYPE_CHECKING:
    from clinsynth.models.records import CodeModel

Prepared = tuple[Schema, "TableEncoder | None", "CodeMatrix | None", "pd.DataFrame | None", "float | None"]


class PlainCodes:
    """The data as they are: the codec learns from them; shuffled fixed-size batches; plain SGD."""

    def __init__(self, model: CodeModel):
        self.model = model

    def problems(self, schema: Schema) -> list[str]:
        """What is wrong with the settings for this schema (nothing without a budget)."""
        return []

    def warn_if_few(self, n: int, codes: CodeMatrix | None) -> None:
        """Warn when the data are too few for this way of reading them (never without a budget)."""

    def prepare(self, schema: Schema, codes: CodeMatrix | None, static: pd.DataFrame | None) -> Prepared:
        """(schema, ordinary columns' encoder, codes, ordinary columns, count cap) the codec is made of."""
        part = static_schema(schema)
        table = TableEncoder(part).fit(static) if part is not None else None
        cap = None
        if codes is not None and not codes.binary:
            cap = float(schema.codes.max_count or max(codes.matrix.data.max(initial=1.0), 1.0))
        return schema, table, codes, static, cap

    def calibrate(self, n: int) -> None:
        """Fix what the phases need before training (the noise multiplier under a budget)."""

    def batches(self, phase: Phase, epoch: int) -> Iterator[np.ndarray]:
        """Shuffled fixed-size batches (the last short one dropped when there are several)."""
        m = self.model
        n = m.n_train_
        batch = min(phase.batch_size, n)
        order = np.random.default_rng((m.seed, epoch, len(phase.name))).permutation(n)
        for start in range(0, n - batch + 1, batch):
            yield order[start:start + batch]

    def step(self, phase: Phase, module: nn.Module, optimizer: torch.optim.Optimizer) -> RealStep:
        return RealStep(module, optimizer, None)

    def checkpoint_state(self) -> dict[str, Any]:
        return {}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Take back what ``checkpoint_state`` gave."""

    def conform(self, static: pd.DataFrame | None) -> pd.DataFrame | None:
        """The ordinary columns as the restored codec expects them on a resumed fit."""
        return static

    def fitted(self) -> dict[str, Any]:
        """What the bundle keeps: the losses (without a budget they may be kept)."""
        return {"history": getattr(self.model, "history_", [])}

    def restore(self, fitted: dict[str, Any]) -> None:
        """Take back what ``fitted`` gave."""


class PrivateCodes(PlainCodes):
    """Charged vocabulary and facts, Poisson batches and DP-SGD at one calibrated noise multiplier."""

    def problems(self, schema: Schema) -> list[str]:
        if schema.codes is not None and not schema.codes.binary and schema.codes.max_count is None:
            return ["a count code block needs a public cap under DP (one patient's count of a code above it is "
                    "capped): --max-count N on the command line, max_count in the schema's code block"]
        return []

    def warn_if_few(self, n: int, codes: CodeMatrix | None) -> None:
        m = self.model
        if codes is not None and n < DP_FEW_PATIENTS:
            warnings.warn(f"{m.name}: {n:,} patients are few for a differentially private code model at ε = "
                          f"{m.privacy.epsilon:g}: the noise swamps most codes' counts (300 patients × 170 codes at ε = 1: "
                          "prevalence correlation 0.37 for dp-codetree, ≤ 0 for the DP networks); raise ε or release "
                          "without DP only where that is allowed", UtilityWarning, stacklevel=3)

    def warn_if_vocabulary_thin(self, kept: int, candidates: int, threshold: float) -> None:
        """Say so (to the steward's console, never into the release) when the DP vocabulary keeps
        under half the codes: 8 of 296 on 1,920 simulated patients at ε = 1, where a declared code
        list would keep all at no cost."""
        m = self.model
        if kept < candidates / 2:
            warnings.warn(f"{m.name}: the DP vocabulary kept {kept:,} of the {candidates:,} codes in the data at ε = "
                          f"{m.privacy.epsilon:g} (a code's noisy patient count, each patient of m codes counting "
                          f"1/√m, must clear {threshold:.0f}); the others are never sampled. If the code list is public "
                          "knowledge (a coding system, a trial's form), declare it (--vocabulary FILE, or a schema "
                          "whose code block is public): that costs no budget and keeps every code. Or raise ε.",
                          UtilityWarning, stacklevel=4)

    def prepare(self, schema: Schema, codes: CodeMatrix | None, static: pd.DataFrame | None) -> Prepared:
        """Ledger, vocabulary and public facts: only charged or declared facts reach the codec."""
        from clinsynth.privacy.conform import conform
        from clinsynth.privacy.statistics import charged_release
        from clinsynth.privacy.vocabulary import charged_vocabulary

        m = self.model
        n = len(codes) if codes is not None else len(static)
        m.ledger_ = m.privacy.ledger(n, unit="patient")  # one record = one patient's codes and columns
        rng = np.random.default_rng(m.seed)
        m.vocabulary_release_ = None
        m._static_release = None  # plain data, for a checkpoint
        m.facts_ = {}
        if codes is not None and not schema.codes.public:
            release = charged_vocabulary(codes, m.ledger_, m.vocab_share, m.max_codes_per_patient, rng)
            keep = pd.Index(codes.vocabulary).get_indexer(list(release.vocabulary))
            codes = CodeMatrix(codes.matrix[:, keep], release.vocabulary, codes.patient_ids, codes.binary)
            schema = schema.model_copy(update={"codes": schema.codes.model_copy(update={"vocabulary": list(release.vocabulary)})})
            # not release.candidates: how many distinct codes the data holds is no charged release
            m.vocabulary_release_ = {"threshold": release.threshold, "kept": len(release.vocabulary)}
            self.warn_if_vocabulary_thin(len(release.vocabulary), release.candidates, release.threshold)
        table = None
        part = static_schema(schema)
        if part is not None:
            release = charged_release(static, part, m.ledger_, m.privacy.stats_share, rng)
            m._static_release = release.state_dict()
            m.facts_ = release.record()
            table = TableEncoder(release.schema).fit_from_statistics(release.numeric)
            static = conform(static, release)
            schema = release.schema.model_copy(update={"codes": schema.codes})
        cap = float(schema.codes.max_count) if codes is not None and not codes.binary else None
        return schema, table, codes, static, cap

    def calibrate(self, n: int) -> None:
        """One noise multiplier for every private phase, the smallest that keeps the ledger within ε."""
        m = self.model
        phases = [p for p in m._phases() if p.epochs > 0]
        batches = {p.name: expected_batch(p.batch_size, n, f"{m.name} {p.name}") for p in phases}
        self.rates = {p.name: batches[p.name] / n for p in phases}
        self.steps = {p.name: max(1, round(n / batches[p.name])) for p in phases}

        def charges(sigma: float) -> list[Charge]:
            return [Charge("dp-sgd", f"{p.purpose}: {p.epochs} epochs × {self.steps[p.name]} steps, Poisson sampling, "
                           f"clip {m.max_grad_norm:g}", noise_multiplier=sigma, sample_rate=self.rates[p.name],
                           steps=p.epochs * self.steps[p.name], unit="patient") for p in phases]

        if not phases:
            m.noise_multiplier_ = None
            return
        if m._resuming():  # σ and its charges come back with the checkpointed ledger
            return
        m.noise_multiplier_ = charge_calibrated(m.ledger_, charges, reserved=m._reserved_charges())

    def batches(self, phase: Phase, epoch: int) -> Iterator[np.ndarray]:
        """Poisson samples: what the accountant assumes."""
        m = self.model
        index = [p.name for p in m._phases()].index(phase.name)
        yield from poisson_batches(m.n_train_, self.rates[phase.name], self.steps[phase.name],
                                   seed=(m.seed * 1_000_003 + index) * 100_003 + epoch)

    def step(self, phase: Phase, module: nn.Module, optimizer: torch.optim.Optimizer) -> RealStep:
        m = self.model
        gen = torch.Generator(device=m.device_).manual_seed(m.seed * 31 + len(phase.name))
        expected = self.rates[phase.name] * m.n_train_
        return RealStep(module, optimizer, PrivateGradient(module, m.noise_multiplier_, m.max_grad_norm, expected, gen))

    def checkpoint_state(self) -> dict[str, Any]:
        m = self.model
        return {"ledger": m.ledger_.state_dict(), "noise_multiplier": m.noise_multiplier_,
                "vocabulary_release": m.vocabulary_release_, "release": m._static_release}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        m = self.model
        m.ledger_ = PrivacyLedger.from_state_dict(state["ledger"])
        m.noise_multiplier_ = state["noise_multiplier"]
        m.vocabulary_release_ = state["vocabulary_release"]
        m._static_release = state["release"]
        m.facts_ = {"budget": m._static_release.get("budget", {}),
                    "queries": m._static_release.get("facts", [])} if m._static_release else {}

    def conform(self, static: pd.DataFrame | None) -> pd.DataFrame | None:
        from clinsynth.privacy.conform import conform
        from clinsynth.privacy.statistics import DPRelease

        release = self.model._static_release
        return conform(static, DPRelease.from_state_dict(release)) if release is not None else static

    def fitted(self) -> dict[str, Any]:
        # losses on real records are statistics of them: not in a DP bundle; the ledger, σ and the
        # facts' record are saved by SynthModel._fitted_privacy
        return {"vocabulary_release": self.model.vocabulary_release_}

    def restore(self, fitted: dict[str, Any]) -> None:
        self.model.vocabulary_release_ = fitted.get("vocabulary_release")


def codes_training_for(model: CodeModel) -> PlainCodes:
    """The component of ``model``: private exactly when it was given a budget."""
    return PrivateCodes(model) if model.privacy is not None else PlainCodes(model)
