"""How the AC-GAN learns from real records: plainly, or privately when it is given a budget.

The AC-GAN (``models/acgan.py``) is one model; what differs under a ``Privacy`` is a component
it is given, chosen once in ``fit``: :class:`PlainTraining` or :class:`PrivateTraining`. Each
answers the same questions — the schedule, the class × dropout table, the batches of real
records, the discriminator's step, the epoch selection — so the training loop never asks
whether it is private.

Under DP (``dp-acgan``; after the SPRINT work only the discriminator touches real records, so
DP-SGD on it makes the generator private too) every use of records is a charged mechanism, so the
(ε, δ) printed covers the whole model bundle:

1. **public facts** — bounds, scaling and categories of the columns the schema does not declare
   public, and the class × dropout table the generator is conditioned on (one more query,
   :data:`EXTRA_QUERY`), released by one Gaussian mechanism (``privacy.statistics``) with the
   budget's ``stats_share``, raised for a table with few records per column
   (``privacy.facts_budget``) — done by the model base for every model given a budget;
2. **epoch selection** (``select="topK"``) — noisy scores of the candidate epochs
   (``privacy.top_k`` through ``clinsynth.selection``), given ``select_share`` of the budget;
3. **DP-SGD** on the discriminator (``privacy.dpsgd``) — Poisson sampling with rate
   ``batch_size / n`` (the batch shrinks to n / 4 on a smaller table, ``dpsgd.expected_batch``),
   per-record clipping to ``max_grad_norm``, and the smallest noise multiplier that keeps
   1 + 2 + 3 within ε by the ledger's accountant, fixed before training starts.

Shares are of the budget in Gaussian-DP terms (μ², see ``share_noise_multiplier``): at the
defaults, the statistics and the selection take 10 % each and DP-SGD what is left. δ defaults to
min(1e-5, 1/(10 n)) rounded down to one significant digit. The record count n is treated as
public, as in Opacus' sample rate.

The ``dp-acgan`` alias's defaults (registry) differ from the AC-GAN's on purpose (measured on the
simulated trial at ε = 1): a small discriminator (32 units; noise grows with its parameter count)
trained fast (lr 1e-3) for few epochs (20; every step costs budget) in large Poisson batches
(512), and the private top-5 selection: single epochs of a DP GAN vary widely in quality. The
fidelity defaults are off: quantiles cannot be learned from public bounds, and the weight average
measured worse at ε = 1 (TSTR/TRTR 0.81 → 0.59, seed 0; ``bench/bench_acgan_quality.py``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from clinsynth import distributed
from clinsynth.privacy.dpsgd import PrivateGradient, expected_batch, poisson_batches
from clinsynth.privacy.ledger import Charge, charge_calibrated, share_noise_multiplier
from clinsynth.selection import SelectionResult, bounded_score_sum, parse_select, private_top, select_top, tstr_auroc

if TYPE_CHECKING:
    from clinsynth.models.acgan import ACGAN

#: the class × dropout table is one more query of the public-facts release: one record moves it by ≤ 1
EXTRA_QUERY = (1.0, ", class × dropout table")
Update = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], float]


def _acgan_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
    from clinsynth.models.acgan import acgan_loss

    return acgan_loss(*args, **kwargs)


class PlainTraining:
    """Shuffled fixed-size batches, one joint pass of the discriminator over real and fake records,
    the exact class × dropout table, epochs scored by train-on-synthetic AUROC."""

    #: parameters that may be left ``None`` for the table's size to decide (``ACGAN._schedule``)
    data_decides: tuple[str, ...] = ("epochs", "batch_size", "disc_hidden")

    def __init__(self, model: ACGAN):
        self.model = model

    @staticmethod
    def problems(model: ACGAN) -> list[str]:
        """What is wrong with the settings this training reads (nothing without a budget)."""
        return []

    def schedule(self, n: int) -> tuple[int, int]:
        """(records per step, epochs) for ``n`` training records."""
        return self.model._schedule(n)

    def condition_table(self, counts: np.ndarray) -> np.ndarray:
        """Class × dropout probabilities from their counts."""
        return counts / counts.sum()

    def batches(self, n: int, batch: int, epoch: int, rng: torch.Generator) -> Iterator[np.ndarray]:
        order = torch.randperm(n, generator=rng, device=rng.device).cpu().numpy()
        for start in range(0, n - batch + 1, batch):
            yield order[start:start + batch]

    def discriminator_update(self, D: nn.Module, opt_d: torch.optim.Optimizer, batch: int,
                             device: torch.device) -> tuple[Update, nn.Module]:
        """One discriminator step on real and fake records, and the discriminator the generator's
        steps call. The step returns the fake-record loss only, so nothing computed from real
        records without noise ends in the saved history."""
        distributed.broadcast(D)  # several processes: rank 0's starting weights everywhere

        def update(x_real: torch.Tensor, y_real: torch.Tensor, x_fake: torch.Tensor, y_fake: torch.Tensor) -> float:
            opt_d.zero_grad(set_to_none=True)
            out = D(torch.cat([x_real, x_fake]))  # one pass over both halves: the critic has no batch statistics
            loss_fake = _acgan_loss(out[len(x_real):], False, y_fake)
            (_acgan_loss(out[:len(x_real)], True, y_real) + loss_fake).backward()
            distributed.average_gradients(D.parameters())  # several processes: DDP's mean
            opt_d.step()
            return loss_fake.item()
        return update, D

    def finish(self, D: nn.Module) -> nn.Module:
        """The discriminator to keep once training ends."""
        return D

    def state_objects(self) -> dict[str, Any]:
        """Further training state a checkpoint must hold."""
        return {}

    def checkpoint_state(self) -> dict[str, Any]:
        return {}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Take back what ``checkpoint_state`` gave."""

    def choose(self, frames: list[pd.DataFrame], real: pd.DataFrame, candidates: list[int], k: int) -> SelectionResult:
        m = self.model
        scores = [tstr_auroc(f, real, m.schema_, seed=m.seed) for f in frames]
        return SelectionResult(candidates, select_top(np.array(scores), k, candidates), scores=scores)


class PrivateTraining(PlainTraining):
    """DP-SGD on the discriminator with Poisson batches, the noisy class × dropout table of the
    public-facts release, and private epoch selection — all charged to the model's ledger."""

    #: every step costs budget, so the length is given, never left to the table's size
    data_decides: tuple[str, ...] = ()

    def __init__(self, model: ACGAN):
        super().__init__(model)
        self.engine: PrivateGradient | None = None

    @staticmethod
    def problems(model: ACGAN) -> list[str]:
        bad = []
        if not (isinstance(model.max_grad_norm, (int, float)) and model.max_grad_norm > 0):
            bad.append(f"max_grad_norm={model.max_grad_norm!r} (a positive number)")
        if not (isinstance(model.select_share, (int, float)) and 0 < model.select_share < 1):
            bad.append(f"select_share={model.select_share!r} (between 0 and 1)")
        return bad

    def schedule(self, n: int) -> tuple[int, int]:
        """The expected Poisson batch the ledger charges, and the given epochs; σ is calibrated and
        charged here, before training (a resumed fit has it in its checkpointed ledger)."""
        m = self.model
        self.batch = expected_batch(m.batch_size, n, m.name)
        self.sample_rate = self.batch / n
        self.steps_per_epoch = max(1, round(n / self.batch))
        if not m._resuming():
            reserved = [self._selection_charge()] if parse_select(m.select) else []
            m.noise_multiplier_ = charge_calibrated(m.ledger_, self._sgd_charge, reserved)
        return self.batch, m.epochs

    def _sgd_charge(self, sigma: float) -> Charge:
        m = self.model
        return Charge("dp-sgd", f"discriminator training: {m.epochs} epochs × {self.steps_per_epoch} steps, "
                      f"Poisson sampling, clip {m.max_grad_norm:g}", noise_multiplier=sigma,
                      sample_rate=self.sample_rate, steps=m.epochs * self.steps_per_epoch)

    def _selection_charge(self) -> Charge:
        m = self.model
        sigma = share_noise_multiplier(m.select_share, m.privacy.epsilon, m.ledger_.delta)
        return Charge("gaussian", f"epoch selection: noisy train-on-synthetic scores of ≤ {m.select_candidates} epochs",
                      noise_multiplier=sigma, sample_rate=1.0, steps=1)

    def condition_table(self, counts: np.ndarray) -> np.ndarray:
        noisy = np.clip(self.model.release_.extra.answer(counts), 0.0, None)  # charged with the public facts
        if noisy.sum() <= 0:
            noisy = np.ones_like(noisy)
        return noisy / noisy.sum()

    def batches(self, n: int, batch: int, epoch: int, rng: torch.Generator) -> Iterator[np.ndarray]:
        return poisson_batches(n, self.sample_rate, self.steps_per_epoch, seed=self.model.seed * 100_003 + epoch)

    def discriminator_update(self, D: nn.Module, opt_d: torch.optim.Optimizer, batch: int,
                             device: torch.device) -> tuple[Update, nn.Module]:
        m = self.model
        gen = torch.Generator(device=device).manual_seed(m.seed + 7)
        engine = self.engine = PrivateGradient(D, m.noise_multiplier_, m.max_grad_norm, batch, gen)
        distributed.broadcast(D)
        public = engine.public

        def update(x_real: torch.Tensor, y_real: torch.Tensor, x_fake: torch.Tensor, y_fake: torch.Tensor) -> float:
            opt_d.zero_grad(set_to_none=True)
            # fake records: public, plain gradient. Their class term is left out: with the real
            # records' class signal noised, it would teach the class head the generator's own
            # labelling, and generator and discriminator would agree on an arbitrary one
            loss_fake = _acgan_loss(public(x_fake), False, y_fake, aux=False)
            loss_fake.backward()
            per_record = _acgan_loss(engine.forward_private(x_real), True, y_real, reduction="none") if len(x_real) else None
            engine.add_private_gradient(per_record)
            opt_d.step()
            return loss_fake.item()
        return update, public

    def finish(self, D: nn.Module) -> nn.Module:
        return self.engine.detach()

    def state_objects(self) -> dict[str, Any]:
        return {"dp_noise": self.engine.generator}

    def checkpoint_state(self) -> dict[str, Any]:
        return {"noise_multiplier": self.model.noise_multiplier_}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.model.noise_multiplier_ = float(state["noise_multiplier"])

    def choose(self, frames: list[pd.DataFrame], real: pd.DataFrame, candidates: list[int], k: int) -> SelectionResult:
        m = self.model

        def score_sums() -> np.ndarray:  # run only once the ledger has accepted the charge
            return np.array([bounded_score_sum(f, real, m.schema_, seed=m.seed) for f in frames])

        return private_top(m.ledger_, self._selection_charge(), score_sums, k, candidates, m._rng)


def training_for(model: ACGAN) -> PlainTraining:
    """The training component of ``model``: private exactly when it was given a budget."""
    return PrivateTraining(model) if model.privacy is not None else PlainTraining(model)
