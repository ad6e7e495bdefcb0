"""DP AC-GAN (``dp-acgan``): the AC-GAN with every use of real records charged to one ledger.

After the SPRINT work, only the discriminator touches real records, so DP-SGD on it makes the
generator private too. Everything else that reads records is a charged mechanism as well, so the
(ε, δ) printed covers the whole model bundle:

1. **public facts** — bounds, scaling and categories of the columns the schema does not declare
   public, and the class × dropout table the generator is conditioned on, released by one
   Gaussian mechanism (``privacy.statistics``) given ``stats_share`` of the budget, raised for a
   table with few records per column (``privacy.facts_budget``);
2. **epoch selection** (``select="topK"``) — noisy scores of the candidate epochs
   (``clinsynth.selection``), given ``select_share`` of the budget;
3. **DP-SGD** on the discriminator (``privacy.dpsgd``) — Poisson sampling with rate
   ``batch_size / n`` (the batch shrinks to n / 4 on a smaller table, ``dpsgd.expected_batch``), per-record clipping to ``max_grad_norm``, and the smallest noise multiplier
   that keeps 1 + 2 + 3 within ε by the ledger's accountant, fixed before training starts.

Shares are of the budget in Gaussian-DP terms (μ², see ``share_noise_multiplier``): at the
defaults, the statistics and the selection take 10 % each and DP-SGD what is left, by the ledger's
exact composition (its table shows the running total ε after each charge). δ defaults to min(1e-5, 1/(10 n)) rounded down to one
significant digit — well below 1/n, the level at which releasing one whole record is "private".
The record count n is treated as public, as in Opacus' sample rate.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from clinsynth.data.transforms import TableEncoder
from clinsynth.errors import ConfigError
from clinsynth.models.acgan import ACGAN, acgan_loss
from clinsynth.privacy.dpsgd import PrivateGradient, expected_batch, poisson_batches
from clinsynth.privacy.ledger import Charge, PrivacyLedger, budget_problems, charge_calibrated, share_noise_multiplier
from clinsynth.schema import Schema
from clinsynth.selection import SelectionResult, bounded_score_sum, parse_select, private_top


class DPACGAN(ACGAN):
    """AC-GAN with differential privacy for the whole pipeline (``dp-acgan`` in the registry).

    Parameters (besides the AC-GAN's)
    ---------------------------------
    epsilon, delta : the budget; ``delta=None`` picks ``default_delta(n)``.
    max_grad_norm : per-record clipping norm of the discriminator's gradient.
    stats_share, select_share : parts of the budget (in μ², see the module docstring) for the
        public-facts release and the epoch selection.
    accountant : ``"prv"`` (tight, default) or ``"rdp"`` (fast, looser).

    The defaults differ from the AC-GAN's on purpose (measured on the simulated trial at ε = 1): a
    small discriminator (32 units; noise grows with its parameter count) trained fast (lr 1e-3) for
    few epochs (20; every step costs budget) in large Poisson batches (512), and the private top-5
    selection (``select="top5"``): single epochs of a DP GAN vary widely in quality. The AC-GAN's
    fidelity defaults are off here on purpose: quantiles cannot be learned from public bounds, and
    the weight average measured worse at ε = 1 on the simulated trial (TSTR/TRTR 0.81 → 0.59, seed 0;
    ``bench/bench_acgan_quality.py``).

    Example
    -------
    >>> model = DPACGAN(epsilon=1.0, select="top5").fit(df, Schema.infer(df, target="arm"))  # doctest: +SKIP
    >>> model.ledger_.table()                                                                 # doctest: +SKIP
    """

    name = "dp-acgan"

    def __init__(self, epsilon: float = 1.0, delta: float | None = None, max_grad_norm: float = 1.0,
                 stats_share: float = 0.1, select_share: float = 0.1, accountant: str = "prv",
                 epochs: int = 20, batch_size: int = 512, noise_dim: int = 32, hidden: int = 128,
                 disc_hidden: int = 32, conv_channels: int = 8, lr_g: float = 1e-3, lr_d: float = 1e-3,
                 beta1: float = 0.5, gumbel_tau: float = 0.2, g_steps: int = 1, weight_average: float = 0.0,
                 numeric_transform: str = "standard",
                 snapshots: str = "memory", snapshot_dir: str | None = None, select: str = "top5",
                 select_candidates: int = 20, device: str = "auto", seed: int = 0, progress: bool = True,
                 conditional_critic: bool = False, aux_weight: float = 1.0):
        super().__init__(epochs=epochs, batch_size=batch_size, noise_dim=noise_dim, hidden=hidden,
                         disc_hidden=disc_hidden, conv_channels=conv_channels, lr_g=lr_g, lr_d=lr_d, beta1=beta1,
                         gumbel_tau=gumbel_tau, g_steps=g_steps, weight_average=weight_average, numeric_transform=numeric_transform, snapshots=snapshots,
                         snapshot_dir=snapshot_dir, select=select, select_candidates=select_candidates,
                         device=device, seed=seed, progress=progress, conditional_critic=conditional_critic, aux_weight=aux_weight)
        self.epsilon = epsilon
        self.delta = delta
        self.max_grad_norm = max_grad_norm
        self.stats_share = stats_share
        self.select_share = select_share
        self.accountant = accountant

    # -- checks ------------------------------------------------------------------------
    def _validate_params(self, schema: Schema) -> None:
        super()._validate_params(schema)
        bad = budget_problems(self.epsilon, self.delta, self.accountant,
                              {"stats_share": self.stats_share, "select_share": self.select_share})
        if not (isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0):
            bad.append(f"max_grad_norm={self.max_grad_norm!r} (a positive number)")
        if bad:
            raise ConfigError(f"{self.name}: invalid privacy settings: {', '.join(bad)}")

    # -- 1. public facts ---------------------------------------------------------------
    def _prepare(self, df: pd.DataFrame, schema: Schema) -> tuple[Schema, TableEncoder, pd.DataFrame]:
        from clinsynth.privacy.statistics import charged_release, conform

        self.ledger_ = PrivacyLedger.for_records(self.epsilon, self.delta, len(df), self.accountant)
        self._rng = np.random.default_rng(self.seed)
        # the class × dropout table is one more query of the same mechanism: one record moves it by ≤ 1
        self.release_ = charged_release(df, schema, self.ledger_, self.stats_share, self._rng, extra=1.0,
                                        extra_purpose=", class × dropout table")
        self.facts_ = self.release_.record()
        released = self.release_.schema
        encoder = TableEncoder(released, self._numeric_transform()).fit_from_statistics(self.release_.numeric)
        return released, encoder, conform(df, self.release_)

    def _condition_table(self, counts: np.ndarray) -> np.ndarray:
        noisy = np.clip(self.release_.extra.answer(counts), 0.0, None)  # charged with the public facts
        if noisy.sum() <= 0:
            noisy = np.ones_like(noisy)
        return noisy / noisy.sum()

    def _conform(self, frame: pd.DataFrame) -> pd.DataFrame:
        from clinsynth.privacy.statistics import conform

        return conform(frame, self.release_) if getattr(self, "release_", None) is not None else frame

    # -- 3. DP-SGD ---------------------------------------------------------------------
    def _fit(self, df: pd.DataFrame, encoder: TableEncoder) -> None:
        n = len(df)
        self.batch_size_ = expected_batch(self.batch_size, n, self.name)
        self._sample_rate = self.batch_size_ / n
        self._steps_per_epoch = max(1, round(n / self.batch_size_))
        if not self._resuming():  # resumed: σ and its charge are in the checkpointed ledger already
            reserved = [self._selection_charge()] if parse_select(self.select) else []
            self.noise_multiplier_ = charge_calibrated(self.ledger_, self._sgd_charge, reserved)
        super()._fit(df, encoder)

    #: every step costs budget, so the DP model's length is given, never left to the table's size
    _data_decides: tuple[str, ...] = ()

    def _schedule(self, n: int) -> tuple[int, int]:
        return self.batch_size_, self.epochs  # the expected Poisson batch the ledger charges

    def _sgd_charge(self, sigma: float) -> Charge:
        return Charge("dp-sgd", f"discriminator training: {self.epochs} epochs × {self._steps_per_epoch} steps, "
                      f"Poisson sampling, clip {self.max_grad_norm:g}", noise_multiplier=sigma,
                      sample_rate=self._sample_rate, steps=self.epochs * self._steps_per_epoch, unit="record")

    def _batches(self, n: int, batch: int, epoch: int, rng: torch.Generator):
        return poisson_batches(n, self._sample_rate, self._steps_per_epoch, seed=self.seed * 100_003 + epoch)

    def _discriminator_update(self, D: nn.Module, opt_d: torch.optim.Optimizer, batch: int, device: torch.device):
        gen = torch.Generator(device=device).manual_seed(self.seed + 7)
        self._engine = PrivateGradient(D, self.noise_multiplier_, self.max_grad_norm, batch, gen)
        public = self._engine.public

        def update(x_real: torch.Tensor, y_real: torch.Tensor, x_fake: torch.Tensor, y_fake: torch.Tensor) -> float:
            opt_d.zero_grad(set_to_none=True)
            # fake records: public, plain gradient. Their class term is left out: with the real
            # records' class signal noised, it would teach the class head the generator's own
            # labelling, and generator and discriminator would agree on an arbitrary one
            loss_fake = acgan_loss(public(x_fake), False, y_fake, aux=False)
            loss_fake.backward()
            per_record = acgan_loss(self._engine.forward_private(x_real), True, y_real, reduction="none") if len(x_real) else None
            self._engine.add_private_gradient(per_record)
            opt_d.step()
            return loss_fake.item()
        return update, public

    def _finish_training(self) -> None:
        self.discriminator_ = self._engine.detach()

    def _training_objects(self) -> dict[str, Any]:
        return {"dp_noise": self._engine.generator}

    # -- checkpoints: what was released and charged before training comes back, never again ---------
    def _checkpoint_state(self) -> dict[str, Any]:
        return {**super()._checkpoint_state(), "ledger": self.ledger_.state_dict(),
                "release": self.release_.state_dict(), "rng": self._rng.bit_generator.state,
                "noise_multiplier": self.noise_multiplier_}

    def _load_checkpoint_state(self, state: dict[str, Any]) -> None:
        from clinsynth.privacy.statistics import DPRelease

        super()._load_checkpoint_state(state)
        self.ledger_ = PrivacyLedger.from_state_dict(state["ledger"])
        self.release_ = DPRelease.from_state_dict(state["release"])
        self.facts_ = self.release_.record()
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self.noise_multiplier_ = float(state["noise_multiplier"])

    # -- 2. private epoch selection ----------------------------------------------------
    def _selection_charge(self) -> Charge:
        sigma = share_noise_multiplier(self.select_share, self.epsilon, self.ledger_.delta)
        return Charge("gaussian", f"epoch selection: noisy train-on-synthetic scores of ≤ {self.select_candidates} epochs",
                      noise_multiplier=sigma, sample_rate=1.0, steps=1, unit="record")

    def _choose(self, frames: list[pd.DataFrame], real: pd.DataFrame, candidates: list[int], k: int) -> SelectionResult:
        def score_sums() -> np.ndarray:  # run only once the ledger has accepted the charge
            return np.array([bounded_score_sum(f, real, self.schema_, seed=self.seed) for f in frames])

        return private_top(self.ledger_, self._selection_charge(), score_sums, k, candidates, self._rng)

    # -- persistence ---------------------------------------------------------------------
    def _fitted_config(self) -> dict[str, Any]:
        return {**super()._fitted_config(), "ledger": self.ledger_.state_dict(),
                "noise_multiplier": self.noise_multiplier_, "facts_release": self.facts_}

    def _restore(self, fitted: dict[str, Any], encoder: TableEncoder, directory) -> None:
        super()._restore(fitted, encoder, directory)
        self.ledger_ = PrivacyLedger.from_state_dict(fitted["ledger"])
        self.noise_multiplier_ = fitted["noise_multiplier"]
        self.facts_ = fitted.get("facts_release", {})
        self.release_ = None
