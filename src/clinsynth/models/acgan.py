"""AC-GAN after the SPRINT work (Beaulieu-Jones et al.): a class-conditional GAN for trial tables.

The generator multiplies the noise vector by a learned embedding of the class label, passes it
through dense layers and, when the table has longitudinal groups, through a small 1-D convolution
over the visit axis whose channels are the measures (and their missing indicators); every other
column comes from a dense head. The discriminator answers twice: real or fake, and which class.
Adam with β1 = 0.5.

Dropout is a condition, not an output: the participant's last visit is drawn from its learned
distribution given the class, fed to the generator next to the noise and shown to the
discriminator with the record. A GAN left to emit it tends to drop the rare early-dropout states;
drawn as a condition its distribution is kept exactly, and the decoder blanks every later visit.

Departures from the published code, on purpose: the convolution is lean (channels ≤ 32 over the
visit axis instead of 256 filters over an upsampled grid) because sampling speed scales with it
(see ../shared/PERFORMANCE.md); the discriminator is dense with a single output layer holding both
heads, which keeps it compatible with per-sample gradient clipping for DP.

Measured departures for fidelity (issue 22; ``bench/bench_acgan_quality.py``, detection AUROC of a
random forest, real vs synthetic, on breast cancer / WHAS500): the old defaults trained a small
table for 150 steps (0.99 / 0.87: the samples had invented correlations up to 0.9 between unrelated
columns and lost real ones), so the schedule now counts steps (``_schedule``); the generator kept
is an exponential moving average of its weights (a GAN's last step oscillates); numbers go
through their empirical quantiles, so skewed values come out skewed; and the discriminator judges
the record together with its class (``conditional_critic``), the pair a detection test sees —
in SPRINT's design it saw the record alone and only its class head knew the label. Together:
0.69-0.74 on breast cancer and 0.51-0.58 on WHAS500 (3 seeds each; 0.99-1.00 on the simulated
trial still, where every deep model measured is). Tried and not kept: a 128-unit discriminator (cheaper steps,
worse detection), a 128-dimensional noise vector (no change on the trial), dropping the class
term from the generator's loss (worse utility).

On the trial (``bench_acgan_quality.py --diagnose``) each column group alone gives the records
away (a forest on the baseline columns 0.88, on the 11 systolic visits 0.94, on the 11 medication
counts 0.92): the generator invents correlations of ±0.4 between independent baseline values
(cholesterol × glucose), its consecutive-visit correlations wander (0.2-0.7 against a steady
0.5 for systolic pressure) and its medication counts step down between visits 10-20 % of the time
against 2 % in the real step-up regimen. A wider critic sees more of this: 512 units instead of
256 took the trial from 0.989 to 0.958 / 0.965 (seeds 0 / 1) at the same utility, for 1.4-1.6× the
fit's CPU time (still about half TVAE's; ``bench/results/acgan_vs_tvae.json``), but FLCHAIN from
0.70 to 0.82 (seed 0; breast cancer 0.69 → 0.57, WHAS500 0.53 → 0.50): so the width follows the
encoded record, 4 units per value within 256-512, which gives the trial (141 values) 512 and the
public tables (24-32 values) 256, as before. Measured on the trial (seed 0, detection, against 0.989) and
not kept: PacGAN packing of 4 or 8 records in the critic (0.998, 1.000; a batch of 128 is only 16-32
packs), no batch norm in the generator (1.000), no weight average (0.997), a 128-dimensional noise
(0.983) also with a 256-unit generator (0.988), 32 convolution channels (0.995).

What moved the trial (issue 22, same harness; figures in ``bench/results/acgan_quality.json``)
was the visit structure: the generator emits each visit series as its first value plus the
changes from visit to visit (``visit_steps``: its convolution's output summed along the visits,
a linear map the folded sampler absorbs), the critic reads those changes beside the record
(``critic_changes``), and fakes reach the critic as decoding reads them (``decoded_view``: no
value in a cell flagged missing or after dropout, where real encoded records hold 0 — the
critic otherwise tells fakes by values the decoder throws away). Together, seeds 0 / 1,
against the same code with them off run beside it: detection 0.847 / 0.868 (was 0.958 / 0.965) at
TSTR/TRTR [0.983] (was [0.958]), for 1.03× the fit's CPU time; a forest on the systolic visits
alone 0.71-0.74 (was 0.89-0.90), consecutive systolic correlations 0.42-0.55 (real 0.46-0.56; were
0.11-0.76). ``decoded_view`` alone: 0.927 (seed 0). Not kept: a hinge loss with spectral norm on
the critic, on top of the three (0.982, seed 0; 1.3× the CPU time). Left: medication counts still
step down between visits 6-13 % of the time (real 2 %), and that group is now the most telling
(0.77-0.80). Not kept either: such series (falling in ≤ 5 % of the training pairs) generated with
non-negative steps in a scale shared by their visits, then mapped to each visit's encoding (no fall
at all; meds alone 0.76 / 0.75), the whole record 0.877 / 0.907 at [0.977] / [0.975]. On tables without visits only ``decoded_view`` acts (FLCHAIN's missing creatinine:
0.699 / 0.744 against 0.698 / 0.736); DP mode keeps all three off (``dp-acgan``, as measured).

Then the missed visits (``missed_visits``, issue 22): the forest's feature importances on the
trial showed the missing-value indicators carrying ~11 % of its splits, and the records said why:
3.0 % of the visits before a participant's last are missed in the real records (all three measures
at once), 0.3-0.5 % in the generated ones, so a real record with a gap (about a quarter of them)
was plainly real. A GAN drops such rare events, as it did the early dropouts; so, like dropout,
they are drawn, not generated: each visit before the last is missed at its rate in the training
records and its flagged cells blanked, for the critic and in sampling (0.0295 against 0.0296 real
after). Seeds 0 / 1 / 2: detection 0.835 / 0.833 / 0.818 (mean 0.829) against 0.847 / 0.868 run beside it, TSTR/TRTR
[0.981] / [0.977] / [0.984] (was [0.983] / [0.984]), the indicators' share of the forest 11 % -> 3 %, the visit groups alone sbp 0.63-0.66,
dbp 0.66-0.68, meds 0.71-0.73 (were 0.71-0.80); the fit's CPU time 1.02× (interleaved in one
process). Tables without a dropout timeline draw nothing and are unchanged (breast cancer 0.687,
WHAS500 0.530, FLCHAIN 0.699, seed 0, identical draws). Off under DP (the rates are read without
noise). Measured and not kept: dropout 0.5 in the critic (``critic_dropout``, CTGAN's): breast
cancer 0.687 -> 0.906 (seed 0). Left: the medication counts still change between visits twice as
often as real ones (1.9 changes per participant against 1.0, a fall 7 % of the time against 2.5 %),
and invented correlations of ±0.15-0.2 between independent baseline values (glucose × creatinine);
the baseline columns alone are now the most telling group (0.73-0.76). A longer weight average
after it (``weight_average`` 0.995, ~200 steps, instead of 0.99): trial 0.824 / 0.827 / 0.814
(mean 0.822) at [0.982] / [0.980] / [0.984], breast cancer 0.692, WHAS500 0.536, FLCHAIN 0.696
(seed 0; level), at the same cost; kept.

Size: ~880 lines, one model kept whole (its networks, the encoded layout, the training loop, epoch
selection and the fast folded sampler read the same index maps); what DP changes lives apart, in
``acgan_training.py``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from clinsynth import distributed
from clinsynth.data.io import write_with
from clinsynth.data.transforms import NUMERIC_TRANSFORMS, GridLayout, NumericCodec, Span, TableEncoder
from clinsynth.errors import ConfigError
from clinsynth.models import bundle
from clinsynth.models.acgan_training import EXTRA_QUERY, PlainTraining, training_for
from clinsynth.models.base import TableModel, allocate
from clinsynth.models.training import (
    CategoricalNoise,
    Snapshots,
    SpanActivation,
    TrainingProgress,
    resolve_device,
    seeded,
)
from clinsynth.privacy.budget import Privacy
from clinsynth.schema import Schema
from clinsynth.selection import SelectionResult, candidate_epochs, parse_select


#: the training schedule when the table's size decides it (``ACGAN._schedule``)
TARGET_STEPS, MIN_EPOCHS, MAX_EPOCHS, MIN_BATCH, MAX_BATCH = 6000, 10, 150, 64, 128
#: the critic's width when the table decides it: CRITIC_PER_VALUE units per encoded value, within the bounds
CRITIC_PER_VALUE, MIN_CRITIC, MAX_CRITIC = 4, 256, 512

class Generator(nn.Module):
    """Noise × label embedding → dense body → (visit-grid convolution + dense head) → features."""

    def __init__(self, noise_dim: int, n_classes: int, hidden: int, n_features: int,
                 grid: np.ndarray | None, n_visits: int, conv_channels: int, n_conditions: int = 0,
                 step_channels: np.ndarray | None = None):
        super().__init__()
        self.embed = nn.Embedding(n_classes, noise_dim)
        self.noise_dim = noise_dim
        self.body = nn.Sequential(
            nn.Linear(noise_dim + n_conditions, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        )
        self.n_visits = n_visits
        self.conv_channels = conv_channels
        if grid is not None:
            n_grid_channels = grid.shape[0]
            flat = grid.reshape(-1)
            valid = np.flatnonzero(flat >= 0)
            rest = np.setdiff1d(np.arange(n_features), flat[valid])
            self.to_grid = nn.Linear(hidden, conv_channels * n_visits)
            self.conv = nn.Sequential(
                nn.ReLU(), nn.Conv1d(conv_channels, conv_channels, 3, padding=1),
                nn.ReLU(), nn.Conv1d(conv_channels, n_grid_channels, 3, padding=1),
            )
            source_of = np.empty(n_features, dtype=np.int64)
            source_of[flat[valid]] = np.arange(valid.size)
            source_of[rest] = valid.size + np.arange(rest.size)
            steps = np.zeros(n_grid_channels, dtype=bool)
            if step_channels is not None:
                steps[np.asarray(step_channels, dtype=np.int64)] = True
            # channels emitted as first visit + changes: the convolution's output is summed along the visits
            self.register_buffer("steps", torch.as_tensor(steps)[:, None], persistent=False)
            self.register_buffer("grid_valid", torch.as_tensor(valid), persistent=False)
            self.register_buffer("gather", torch.as_tensor(source_of), persistent=False)
            self.head = nn.Linear(hidden, rest.size) if rest.size else None
        else:
            self.to_grid = None
            self.head = nn.Linear(hidden, n_features)

    def forward(self, z: torch.Tensor, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Noise ``z``, class ``y`` and the one-hot conditions ``c`` (dropout) to raw outputs."""
        h = z * self.embed(y)
        h = self.body(h if c is None else torch.cat([h, c], dim=1))
        if self.to_grid is None:
            return self.head(h)
        grid = self.conv(self.to_grid(h).view(-1, self.conv_channels, self.n_visits))
        if bool(self.steps.any()):
            grid = torch.where(self.steps, grid.cumsum(-1), grid)
        grid = grid.flatten(1)
        parts = [grid[:, self.grid_valid]]
        if self.head is not None:
            parts.append(self.head(h))
        return torch.cat(parts, dim=1)[:, self.gather]


    @torch.no_grad()
    def folded(self) -> FoldedGenerator:
        """The same function for sampling: batch norm folded into the dense layers and the
        convolutions written as dense matrices, so a batch costs a few matrix products."""
        return FoldedGenerator(self)


def _fold_batchnorm(linear: nn.Linear, bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return linear.weight * scale[:, None], (linear.bias - bn.running_mean) * scale + bn.bias


def _conv_as_matrix(conv: nn.Conv1d, n_visits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(in_channels·visits → out_channels·visits) matrix and bias equal to a 1-D convolution."""
    n_in = conv.in_channels * n_visits
    basis = torch.eye(n_in, device=conv.weight.device).view(n_in, conv.in_channels, n_visits)
    bias = conv.bias.repeat_interleave(n_visits)
    return (conv(basis).flatten(1) - bias), bias


def _visit_sums(steps: torch.Tensor, n_visits: int) -> torch.Tensor:
    """(channels·visits)² matrix that sums the ``steps`` channels along the visits (cumulative
    sums: first value + changes) and passes the others through; channel-major like ``flatten``."""
    cumulative = torch.triu(torch.ones(n_visits, n_visits, device=steps.device))
    blocks = [cumulative if s else torch.eye(n_visits, device=steps.device) for s in steps.tolist()]
    return torch.block_diag(*blocks)


class FoldedGenerator(nn.Module):
    """Inference-only twin of ``Generator`` (eval mode): same outputs, fewer and larger kernels."""

    def __init__(self, g: Generator):
        super().__init__()
        lin1, bn1, _, lin2, bn2, _ = g.body
        w1, b1 = _fold_batchnorm(lin1, bn1)
        w2, b2 = _fold_batchnorm(lin2, bn2)
        self.embed = g.embed.weight.detach().clone()
        w1 = w1.t().contiguous()
        # the one-hot condition picks rows of the first weight matrix: a gather, not a product
        self.w1, self.w1_condition = w1[:g.noise_dim].contiguous(), w1[g.noise_dim:].contiguous()
        self.b1, self.w2, self.b2 = b1, w2.t().contiguous(), b2
        self.grid = g.to_grid is not None
        if not self.grid:
            self.w3, self.b3 = g.head.weight.t().contiguous(), g.head.bias.detach().clone()
            return
        heads = [g.to_grid] + ([g.head] if g.head is not None else [])
        self.w3 = torch.cat([h.weight for h in heads]).t().contiguous()
        self.b3 = torch.cat([h.bias for h in heads])
        self.n_grid_in = g.to_grid.out_features
        m1, c1 = _conv_as_matrix(g.conv[1], g.n_visits)
        m2, c2 = _conv_as_matrix(g.conv[3], g.n_visits)
        if bool(g.steps.any()):  # the sum along the visits is linear too: folded into the last matrix
            m2, c2 = m2 @ _visit_sums(g.steps[:, 0], g.n_visits), c2 @ _visit_sums(g.steps[:, 0], g.n_visits)
        self.m1, self.c1 = m1, c1
        self.m2, self.c2 = m2[:, g.grid_valid].contiguous(), c2[g.grid_valid]
        self.gather = g.gather

    def forward(self, z: torch.Tensor, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """As ``Generator.forward``, but ``c`` holds condition *indices*, not one-hots."""
        h = torch.addmm(self.b1, z * self.embed[y], self.w1)
        if c is not None:
            h += self.w1_condition[c]
        h = torch.relu(h)
        h = torch.relu(torch.addmm(self.b2, h, self.w2))
        out = torch.addmm(self.b3, h, self.w3)
        if not self.grid:
            return out
        g = torch.relu(torch.addmm(self.c1, torch.relu(out[:, :self.n_grid_in]), self.m1))
        grid = torch.addmm(self.c2, g, self.m2)
        return torch.cat([grid, out[:, self.n_grid_in:]], dim=1)[:, self.gather]

    def features_major(self, z: torch.Tensor, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """The outputs as a contiguous (features × rows) matrix, so that what follows (noise on
        categorical rows, decoding) reads whole rows; the products themselves run row-major."""
        return self.forward(z, y, c).t().contiguous()


class Discriminator(nn.Module):
    """Dense critic with one output layer: column 0 is real/fake, the rest are class logits."""

    def __init__(self, n_features: int, hidden: int, n_classes: int, changes: np.ndarray | None = None,
                 dropout: float = 0.0):
        super().__init__()
        # (2, k) input positions: the critic also reads x[changes[1]] - x[changes[0]], the change
        # from one visit to the next, so a trajectory that moves unlike real ones is in plain sight
        pairs = np.zeros((2, 0), dtype=np.int64) if changes is None else np.asarray(changes, dtype=np.int64)
        self.register_buffer("change_from", torch.as_tensor(pairs[0]), persistent=False)
        self.register_buffer("change_to", torch.as_tensor(pairs[1]), persistent=False)
        def drop() -> list[nn.Module]:  # none at all when 0: the same layers (and weight names) as before
            return [nn.Dropout(dropout)] if dropout else []

        self.net = nn.Sequential(
            nn.Linear(n_features + pairs.shape[1], hidden), nn.LeakyReLU(0.2), *drop(),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), *drop(),
            nn.Linear(hidden, 1 + n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.change_to.numel():
            x = torch.cat([x, x[:, self.change_to] - x[:, self.change_from]], dim=1)
        return self.net(x)


def acgan_loss(out: torch.Tensor, real: bool, labels: torch.Tensor, reduction: str = "mean",
               aux: bool = True, aux_weight: float = 1.0) -> torch.Tensor:
    """Real/fake cross-entropy plus (if ``aux``) the auxiliary class cross-entropy × ``aux_weight``,
    per record or averaged."""
    target = torch.full_like(out[:, 0], 1.0 if real else 0.0)
    adv = F.binary_cross_entropy_with_logits(out[:, 0], target, reduction="none")
    if not aux or not aux_weight or out.shape[1] <= 2:
        return adv if reduction == "none" else adv.mean()
    per_record = adv + aux_weight * F.cross_entropy(out[:, 1:], labels, reduction="none")
    return per_record if reduction == "none" else per_record.mean()


class ACGAN(TableModel):
    """Class-conditional GAN for trial and other tables (``acgan`` in the registry).

    Parameters
    ----------
    epochs, batch_size : passes over the data and records per step; ``None`` (the default) lets the
        table's size decide (``_schedule``: batches of n / 8 within 64-128, epochs for about 6,000
        steps, at most 150).
    noise_dim, hidden, disc_hidden, conv_channels : network sizes; the generator stays lean
        so that sampling runs at hundreds of thousands of rows per second on a CPU. ``disc_hidden``
        ``None`` (the default): 4 units per value of the critic's input, within 256-512 (the
        trial's 141 values get 512, tables of 20-40 values 256; see the module docstring).
    lr_g, lr_d, beta1 : Adam settings (β1 = 0.5 as in the AC-GAN and SPRINT work).
    gumbel_tau : temperature of the Gumbel-softmax for categorical outputs while training.
    g_steps : generator updates per discriminator update.
    weight_average : decay of an exponential moving average of the generator's weights, kept and
        snapshotted instead of the raw weights (0 = off; post-processing, so free under DP; 0.995, about
        200 steps, measured a little better than 0.99 on the trial, level elsewhere).
    numeric_transform : ``"standard"`` (mean/sd: fast, and the only one DP mode can use with public bounds)
        or ``"quantile"`` (through the empirical quantiles; see ``TableEncoder``; the default: skewed
        lab values come out skewed).
    conditional_critic : the discriminator reads the class one-hot beside the record, so its
        real/fake answer is about the (record, class) pair, as the detection test sees it.
    visit_steps : the generator emits each visit series as its first value plus the changes from
        visit to visit (the convolution's output summed along the visits), so a steady level with
        small moves, what real trajectories look like, is the easy output.
    critic_changes : the discriminator also reads the change of every visit series from one visit
        to the next, so trajectories that move unlike real ones are plain to it.
    decoded_view : fake records are shown to the discriminator as decoding reads them: a cell
        flagged missing, or after the participant's dropout, has no value (0, as in the encoded
        real records) and a visit after dropout is flagged missing. Without this the critic can
        tell fakes by values the decoder throws away, and the generator spends itself on them.
    missed_visits : visits missed before the participant's last (every flagged cell of the visit
        missing) are drawn like dropout, at each visit's rate in the training records, and their
        cells blanked, in training (what the critic sees) and in sampling; off under a privacy budget
        (the rates are read without noise). A GAN left to emit such rare gaps drops them.
    critic_dropout : dropout after each hidden layer of the critic while it trains (0 = none; CTGAN
        uses 0.5). Measured worse (breast cancer detection 0.687 -> 0.906 at 0.5), so off.
    aux_weight : weight of the auxiliary class loss in the generator's objective (1 as in AC-GAN).
    max_grad_norm, select_share : under a privacy budget, the per-record clipping norm of the
        discriminator's DP-SGD and the budget share (μ²) of the private epoch selection.
    privacy : a ``clinsynth.Privacy`` budget: the model is then ``dp-acgan``, trained as
        ``models/acgan_training.py`` describes (every use of records charged to one ledger).
    snapshots, snapshot_dir : keep the generator of every epoch (``"memory"``, ``"disk"``, ``"off"``)
        for epoch selection and ensembles.
    select : ``"last"`` (the final generator) or ``"topK"``: score up to ``select_candidates`` evenly
        spaced epochs by train-on-synthetic/test-on-real on the training records and sample from
        the ensemble of the K best (the SPRINT method; see ``clinsynth.selection``).
    device : ``"auto"`` (CUDA if present), ``"cpu"`` or ``"cuda"``.
    seed : makes training reproducible on CPU.
    progress : show a progress bar with the losses.

    Example
    -------
    >>> model = ACGAN(epochs=100).fit(df, Schema.infer(df, target="arm"))   # doctest: +SKIP
    >>> synth = model.sample(1000, conditions={"arm": {"0": 0.5, "1": 0.5}})  # doctest: +SKIP
    """

    name = "acgan"
    checkpoints = True

    def __init__(self, epochs: int | None = None, batch_size: int | None = None, noise_dim: int = 32, hidden: int = 128,
                 disc_hidden: int | None = None, conv_channels: int = 8, lr_g: float = 2e-4, lr_d: float = 2e-4,
                 beta1: float = 0.5, gumbel_tau: float = 0.2, g_steps: int = 1, weight_average: float = 0.995,
                 numeric_transform: str = "quantile", snapshots: str = "memory", snapshot_dir: str | None = None, select: str = "last",
                 select_candidates: int = 20, device: str = "auto", seed: int = 0, progress: bool = True,
                 conditional_critic: bool = True, visit_steps: bool = True, critic_changes: bool = True,
                 decoded_view: bool = True, missed_visits: bool = True, critic_dropout: float = 0.0, aux_weight: float = 1.0, max_grad_norm: float = 1.0,
                 select_share: float = 0.1, privacy: Privacy | None = None):
        self.epochs = epochs
        self.batch_size = batch_size
        self.noise_dim = noise_dim
        self.hidden = hidden
        self.disc_hidden = disc_hidden
        self.conv_channels = conv_channels
        self.lr_g = lr_g
        self.lr_d = lr_d
        self.beta1 = beta1
        self.gumbel_tau = gumbel_tau
        self.g_steps = g_steps
        self.weight_average = weight_average
        self.numeric_transform = numeric_transform
        self.snapshots = snapshots
        self.snapshot_dir = snapshot_dir
        self.select = select
        self.select_candidates = select_candidates
        self.device = device
        self.seed = seed
        self.progress = progress
        self.conditional_critic = conditional_critic
        self.visit_steps = visit_steps
        self.critic_changes = critic_changes
        self.decoded_view = decoded_view
        self.missed_visits = missed_visits
        self.critic_dropout = critic_dropout
        self.aux_weight = aux_weight
        self.max_grad_norm = max_grad_norm
        self.select_share = select_share
        self._given(privacy)

    # -- checks ------------------------------------------------------------------------
    def _validate_params(self, schema: Schema) -> None:
        def number(v: Any) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

        sizes = ("epochs", "batch_size", "noise_dim", "hidden", "disc_hidden", "conv_channels", "select_candidates", "g_steps")
        bad = [f"{k}={getattr(self, k)!r}" for k in sizes
               if not (getattr(self, k) is None and k in self._trainer().data_decides
                       or isinstance(getattr(self, k), (int, np.integer)) and not isinstance(getattr(self, k), bool)
                       and getattr(self, k) >= 1)]
        bad += [f"{k}={getattr(self, k)!r}" for k in ("lr_g", "lr_d", "gumbel_tau")
                if not (number(getattr(self, k)) and getattr(self, k) > 0)]
        if not (number(self.beta1) and 0 <= self.beta1 < 1):
            bad.append(f"beta1={self.beta1!r}")
        if not (number(self.weight_average) and 0 <= self.weight_average < 1):
            bad.append(f"weight_average={self.weight_average!r}")
        if not (number(self.critic_dropout) and 0 <= self.critic_dropout < 1):
            bad.append(f"critic_dropout={self.critic_dropout!r}")
        if not (number(self.aux_weight) and self.aux_weight >= 0):
            bad.append(f"aux_weight={self.aux_weight!r}")
        bad += [f"{k}={getattr(self, k)!r}" for k in ("conditional_critic", "visit_steps", "critic_changes", "decoded_view",
                                                     "missed_visits")
                if not isinstance(getattr(self, k), (bool, np.bool_))]
        if self.numeric_transform not in NUMERIC_TRANSFORMS:
            bad.append(f"numeric_transform={self.numeric_transform!r}")
        if bad:
            if self.privacy is not None and any(getattr(self, k) is None for k in ("epochs", "batch_size")):
                bad.append("(under a privacy budget every step costs budget: give epochs and batch_size)")
            raise ConfigError(f"{self.name}: invalid hyperparameters {', '.join(bad)} (sizes are whole numbers ≥ 1, "
                              "rates positive numbers, 0 ≤ beta1, weight_average, critic_dropout < 1, aux_weight ≥ 0, conditional_critic, visit_steps, critic_changes, decoded_view and missed_visits true or false, "
                              "numeric_transform 'standard' or 'quantile')")
        private = self._trainer().problems(self)
        if self.privacy is not None and self.missed_visits is True:
            private.append("missed_visits=True (its rates are read from the records without noise: set it to false)")
        if private:
            raise ConfigError(f"{self.name}: invalid privacy settings: {', '.join(private)}")
        Snapshots(self.snapshots, self.snapshot_dir)
        resolve_device(self.device)
        if parse_select(self.select):
            if schema.target is None:
                raise ConfigError(f"select={self.select!r} scores epochs by predicting the target: set a target column in the schema")
            if self.snapshots == "off":
                raise ConfigError(f"select={self.select!r} needs the epoch snapshots: set snapshots to 'memory' or 'disk'")

    # -- layout --------------------------------------------------------------------------
    def _layout(self, encoder: TableEncoder) -> None:
        """Index maps between the encoded record, the discriminator's input and the generator's output.

        encoded record = target span + condition span (dropout) + generated spans;
        discriminator input = everything but the target; generator output = the generated spans.
        """
        target = self.schema_.target
        t = encoder.span(target) if target is not None else None
        self.target_slice_ = (t.start, t.stop) if t else (0, 0)
        self.n_classes_ = t.dim if t else 1
        timeline = encoder.timelines[0].name if encoder.timelines else None
        c = encoder.span(timeline) if timeline else None
        self.condition_slice_ = (c.start, c.stop) if c else (0, 0)
        self.n_conditions_ = c.dim if c else 0
        everything = np.arange(encoder.dim)
        in_target = (everything >= self.target_slice_[0]) & (everything < self.target_slice_[1])
        in_condition = (everything >= self.condition_slice_[0]) & (everything < self.condition_slice_[1])
        self.feature_idx_ = everything[~in_target]
        self.generated_idx_ = everything[~in_target & ~in_condition]
        position = np.full(encoder.dim, -1, dtype=np.int64)
        position[self.generated_idx_] = np.arange(self.generated_idx_.size)
        # discriminator input = cat([generated, condition one-hot])[:, assemble]
        feature_pos = np.full(encoder.dim, -1, dtype=np.int64)
        feature_pos[self.feature_idx_] = np.arange(self.feature_idx_.size)
        source = np.concatenate([self.generated_idx_, everything[in_condition]])
        self.assemble_ = np.argsort(feature_pos[source])
        layout: GridLayout | None = encoder.grid_layout()
        linear = {s.start for s in encoder.spans if s.activation == "linear"}
        if layout is not None:
            self.grid_ = np.where(layout.channels >= 0, position[np.maximum(layout.channels, 0)], -1)
            self.n_visits_ = layout.visits
            # the grid's value channels (a measure per visit), as opposed to its missing-indicator channels
            self.value_channels_ = np.array([r for r, row in enumerate(layout.channels) if int(row[0]) in linear],
                                            dtype=np.int64)
        else:
            self.grid_ = None
            self.n_visits_ = 0
            self.value_channels_ = np.zeros(0, dtype=np.int64)
        self.generated_spans_ = [Span(s.name, s.dim, s.activation, int(position[s.start]))
                                 for s in encoder.spans if position[s.start] >= 0]
        # a conditional critic reads the class one-hot after the features: it judges (record, class) pairs
        self.critic_idx_ = (np.concatenate([self.feature_idx_, everything[in_target]])
                            if self.conditional_critic and target is not None else self.feature_idx_)
        critic_pos = np.full(encoder.dim, -1, dtype=np.int64)
        critic_pos[self.critic_idx_] = np.arange(self.critic_idx_.size)
        rows = layout.channels[self.value_channels_] if layout is not None else np.zeros((0, 2), dtype=np.int64)
        self.critic_change_pairs_ = np.stack([critic_pos[rows[:, :-1]].reshape(-1), critic_pos[rows[:, 1:]].reshape(-1)])
        self._decoded_view_maps(encoder, position, c)

    def _decoded_view_maps(self, encoder: TableEncoder, position: np.ndarray, timeline: Span | None) -> None:
        """Generated-output positions for ``_as_decoded``: numbers with a missing flag (value,
        observed, missing, visit), and visit cells without one (value, visit). The visit of a cell
        outside the dropout timeline is ``view_visits_``, a column of ones in the keep matrix."""
        visit_of: dict[str, int] = {}
        self.view_visits_ = timeline.dim - 1 if timeline is not None else 0
        if timeline is not None:
            for g in encoder.timelines[0].groups:
                visit_of.update({col: j for j, col in enumerate(g.columns)})
        flagged, plain = [], []
        for name, codec in encoder.codecs.items():
            if not isinstance(codec, NumericCodec) or position[encoder.span(name).start] < 0:
                continue
            value, visit = int(position[encoder.span(name).start]), visit_of.get(name, self.view_visits_)
            if codec.has_missing:
                obs = int(position[encoder.span(f"{name}:missing").start])
                flagged.append((value, obs, obs + 1, visit))
            elif name in visit_of:
                plain.append((value, visit))
        self.view_flagged_ = np.array(flagged, dtype=np.int64).reshape(-1, 4).T
        self.view_plain_ = np.array(plain, dtype=np.int64).reshape(-1, 2).T

    def _build(self, device: torch.device) -> None:
        self.device_ = device
        self.generator_ = self._new_generator()
        self.disc_hidden_ = self.disc_hidden if self.disc_hidden is not None else \
            int(np.clip(CRITIC_PER_VALUE * self.critic_idx_.size, MIN_CRITIC, MAX_CRITIC))
        self.discriminator_ = Discriminator(self.critic_idx_.size, self.disc_hidden_, self.n_classes_,
                                            self.critic_change_pairs_ if self.critic_changes_ else None,
                                            self.critic_dropout_).to(device)

    # -- training ------------------------------------------------------------------------
    def _fit(self, df: pd.DataFrame, encoder: TableEncoder) -> None:
        device = resolve_device(self.device)
        self.visit_steps_, self.critic_changes_ = bool(self.visit_steps), bool(self.critic_changes)
        self.critic_dropout_ = float(self.critic_dropout)
        self.batch_size_, self.epochs_ = self._trainer().schedule(len(df))
        self._layout(encoder)
        X = encoder.encode(df)
        labels = self._codes(X, self.target_slice_)
        conditions = self._codes(X, self.condition_slice_)
        self.missed_rates_ = self._missed_visit_rates(X, conditions) if self.missed_visits and self.privacy is None else None
        if not self._resuming():  # a resumed fit has its (under DP: noisy) table from the checkpoint
            joint = np.zeros((self.n_classes_, max(self.n_conditions_, 1)))
            np.add.at(joint, (labels, conditions), 1.0)
            self.condition_table_ = self._trainer().condition_table(joint)
        self.class_probs_ = self.condition_table_.sum(axis=1)
        with seeded(self.seed, device):
            self._build(device)
            self._train(torch.as_tensor(X[:, self.critic_idx_], device=device),
                        torch.as_tensor(labels, device=device), device)
        self.encoder_ = encoder  # selection samples through the encoder
        self.selection_ = self._select_epochs(df).to_dict() if parse_select(self.select) else None

    @staticmethod
    def _codes(X: np.ndarray, span: tuple[int, int]) -> np.ndarray:
        a, b = span
        return X[:, a:b].argmax(1) if b > a else np.zeros(len(X), dtype=np.int64)

    def _fake(self, G: nn.Module, batch: int, rng: torch.Generator, activate: SpanActivation,
              joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of fake discriminator inputs and their classes, conditions drawn from the joint table."""
        cell = torch.multinomial(joint, batch, replacement=True, generator=rng)
        y = cell // max(self.n_conditions_, 1)
        z = torch.randn(batch, self.noise_dim, generator=rng, device=joint.device)
        if not self.n_conditions_:
            x = activate(G(z, y), self.gumbel_tau)
            if self.decoded_view:
                x = self._as_decoded(x, None)
        else:
            attended = cell % self.n_conditions_
            c = F.one_hot(attended, self.n_conditions_).float()
            x = activate(G(z, y, c), self.gumbel_tau)
            missed = None
            if self.missed_rates_ is not None:
                rates = torch.as_tensor(self.missed_rates_, dtype=torch.float, device=joint.device)
                missed = (torch.rand(batch, rates.numel(), generator=rng, device=joint.device) < rates) & \
                    (torch.arange(rates.numel(), device=joint.device) < attended[:, None] - 1)
            if self.decoded_view or missed is not None:
                x = self._as_decoded(x, c, missed)
            x = torch.cat([x, c], dim=1)[:, self._assemble_t]
        if self.critic_idx_.size > self.feature_idx_.size:
            x = torch.cat([x, F.one_hot(y, self.n_classes_).float()], dim=1)
        return x, y

    def _as_decoded(self, x: torch.Tensor, c: torch.Tensor | None, missed: torch.Tensor | None = None) -> torch.Tensor:
        """Generated records as decoding reads them (``decoded_view``): the observed probability of
        a flagged number is zeroed after dropout, and its value is scaled by it; a visit cell after
        dropout has value 0. Encoded real records already look like this, so only fakes pass here."""
        if self._view is None:
            self._view = [torch.as_tensor(a, device=x.device) for a in (*self.view_flagged_, *self.view_plain_)]
        value, obs, miss, visit, plain, plain_visit = self._view
        ones = torch.ones(len(x), 1, device=x.device)
        # keep[:, j] = P(the participant attended up to visit j or later); the last column is 1
        keep = torch.cat([1.0 - c.cumsum(1)[:, :self.view_visits_], ones], dim=1) if c is not None else ones
        flagged = keep if missed is None else keep * torch.cat([1.0 - missed.float(), ones], dim=1)
        observed = x[:, obs] * flagged[:, visit]
        x = x.index_copy(1, obs, observed).index_copy(1, miss, 1.0 - observed)
        x = x.index_copy(1, value, x[:, value] * observed)
        return x.index_copy(1, plain, x[:, plain] * keep[:, plain_visit])

    #: the public-facts release answers one more query for the AC-GAN: its class × dropout table
    release_extra = EXTRA_QUERY

    def _trainer(self) -> PlainTraining:
        """How this model learns from real records: privately exactly when it was given a budget."""
        if getattr(self, "_training", None) is None:
            self._training = training_for(self)
        return self._training


    def _schedule(self, n: int) -> tuple[int, int]:
        """(records per step, epochs) for ``n`` training records; ``None`` parameters are decided here.

        A GAN learns per step, not per epoch: 150 epochs of a 455-row table in batches of 256 are
        150 steps, and a random forest told its samples from real ones with AUROC 0.99 (0.53-0.68
        after 7,000 steps in batches of 64). So the batch shrinks on small tables (n / 8, within
        ``MIN_BATCH``-``MAX_BATCH``) and the epochs are as many as make about ``TARGET_STEPS`` steps,
        within ``MIN_EPOCHS``-``MAX_EPOCHS``: 150 epochs of 64 on 400-455 rows (900-1,050 steps)
        measured detection 0.53-0.69 in half the time of 300 epochs (0.45-0.60).
        """
        batch = self.batch_size if self.batch_size is not None else int(np.clip(n // 8, MIN_BATCH, MAX_BATCH))
        batch = min(batch, n)
        epochs = self.epochs if self.epochs is not None else \
            int(np.clip(math.ceil(TARGET_STEPS / (n // batch)), MIN_EPOCHS, MAX_EPOCHS))
        return batch, epochs

    def _batch_size(self, n: int) -> int:
        """Records per step (fake records per step too)."""
        return self.batch_size_

    def _train(self, features: torch.Tensor, labels: torch.Tensor, device: torch.device) -> None:
        G, D = self.generator_, self.discriminator_
        # fused Adam: one kernel per step instead of ~10 per tensor (a third of a small table's step time)
        opt_g = torch.optim.Adam(G.parameters(), lr=self.lr_g, betas=(self.beta1, 0.999), fused=True)
        opt_d = torch.optim.Adam(D.parameters(), lr=self.lr_d, betas=(self.beta1, 0.999), fused=True)
        g_params = [p for p in G.parameters() if p.requires_grad]
        activate = SpanActivation(self.generated_spans_, device)
        rng = torch.Generator(device=device).manual_seed(self.seed)
        joint = torch.as_tensor(self.condition_table_.reshape(-1), dtype=torch.float, device=device)
        self._assemble_t = torch.as_tensor(self.assemble_, device=device)
        self._view = None
        snapshots = Snapshots(self.snapshots, self.snapshot_dir)
        n = features.shape[0]
        batch = self._batch_size(n)
        training = self._trainer()
        update_d, D = training.discriminator_update(D, opt_d, batch, device)
        self.history_: list[dict[str, float]] = []
        average = self._weight_average(G)
        state = {"generator": G, "discriminator": self.discriminator_, "opt_g": opt_g, "opt_d": opt_d, "rng": rng,
                 "average": average, "snapshots": snapshots, **training.state_objects()}
        first = self._checkpoint.resume("gan", self.epochs_, state)
        started = time.perf_counter()
        with TrainingProgress(self.epochs_, f"{self.name} training", self.progress, start=first) as bar:
            for epoch in range(first, self.epochs_):
                sums = {"d_fake": 0.0, "g": 0.0}
                steps = 0
                for idx in distributed.shard(training.batches(n, batch, epoch, rng), private=self.private):  # several processes: a share
                    x_fake, y_fake = self._fake(G, batch, rng, activate, joint)
                    idx_t = torch.as_tensor(idx, device=device)
                    sums["d_fake"] += update_d(features[idx_t], labels[idx_t], x_fake.detach(), y_fake)

                    for g_step in range(self.g_steps):  # generator steps read no real record: free under DP
                        if g_step:
                            x_fake, y_fake = self._fake(G, batch, rng, activate, joint)
                        loss_g = acgan_loss(D(x_fake), True, y_fake, aux_weight=self.aux_weight)
                        # the generator's gradient only: the critic's weight gradients, which a
                        # backward() would compute and the next critic step discard, are skipped
                        for p, grad in zip(g_params, torch.autograd.grad(loss_g, g_params)):
                            p.grad = grad
                        opt_g.step()
                    if average is not None:
                        average.update_parameters(G)
                    sums["g"] += loss_g.item()
                    steps += 1
                means = {k: v / max(steps, 1) for k, v in sums.items()}
                self.history_.append(means)
                snapshots.add(G if average is None else average.module)
                bar.advance(**means)
                self._checkpoint.epoch_done("gan", epoch, state)
        self.train_seconds_ = time.perf_counter() - started  # the loop alone, for throughput benchmarks
        if average is not None:
            G.load_state_dict(average.module.state_dict())
        self.snapshots_ = snapshots
        self._folded = None
        self.discriminator_ = training.finish(self.discriminator_).eval()  # no dropout once trained
        distributed.check_in_sync([G, self.discriminator_], self.name)
        G.eval()

    def _checkpoint_phases(self) -> list[str]:
        return ["gan"]

    def _checkpoint_state(self) -> dict[str, Any]:
        return {**super()._checkpoint_state(), "condition_table": self.condition_table_,
                **self._trainer().checkpoint_state()}

    def _load_checkpoint_state(self, state: dict[str, Any]) -> None:
        super()._load_checkpoint_state(state)
        self.condition_table_ = np.asarray(state["condition_table"], dtype=float)
        self._trainer().load_checkpoint_state(state)

    def _weight_average(self, G: nn.Module) -> torch.optim.swa_utils.AveragedModel | None:
        """An exponential moving average of the generator's weights (and batch-norm statistics),
        or None when ``weight_average`` is 0. The average is what is snapshotted and kept: a GAN's
        generator oscillates from step to step, its average much less."""
        if not self.weight_average:
            return None
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        return AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(self.weight_average), use_buffers=True)

    # -- epoch selection -----------------------------------------------------------------
    def _select_epochs(self, real: pd.DataFrame) -> SelectionResult:
        """Score candidate epochs on the training records and keep the top k as the ensemble."""
        k = parse_select(self.select)
        candidates = candidate_epochs(len(self.snapshots_), self.select_candidates)
        m = min(len(real), 5_000)
        generators = {e: self._snapshot(e) for e in candidates}  # each snapshot loaded once
        frames = [self._sample(m, self.class_probs_, self.seed + e, members=[generators[e].folded()])
                  for e in candidates]
        result = self._trainer().choose(frames, real, candidates, k)
        self.ensemble_ = [generators[e] for e in result.chosen]
        self._folded = None
        return result

    def _new_generator(self) -> Generator:
        return Generator(self.noise_dim, self.n_classes_, self.hidden, self.generated_idx_.size, self.grid_,
                         self.n_visits_, self.conv_channels, self.n_conditions_,
                         self.value_channels_ if self.visit_steps_ else None).to(self.device_)

    def _snapshot(self, epoch: int) -> Generator:
        """The generator as it was at the end of ``epoch`` (0-based)."""
        g = self._new_generator()
        g.load_state_dict(self.snapshots_[epoch])
        return g.eval()

    # -- sampling ------------------------------------------------------------------------
    def _default_class_probs(self) -> np.ndarray:
        return self.class_probs_

    def _sample(self, n: int, class_probs: np.ndarray, seed: int, block: int = 524_288, chunk: int = 4_096,
                members: list[FoldedGenerator] | None = None) -> pd.DataFrame:
        """Generate in small chunks (cache-sized matrix products), decode in large blocks.

        ``members`` overrides the generators to draw from (selection scores one snapshot at a time).
        """
        if self.schema_.target is None and not np.allclose(class_probs, self.class_probs_):
            raise ConfigError("this model was trained without a target, so it cannot be conditioned")
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(self.n_classes_), allocate(n, class_probs))
        rng.shuffle(labels)
        conditions = self._draw_conditions(labels, rng)
        missed = self._draw_missed(conditions, rng)
        gen = torch.Generator(device=self.device_).manual_seed(seed)
        members = members or self._samplers()
        # ensemble members take turns by chunk; small draws get smaller chunks so every member takes part
        chunk = max(1, min(chunk, -(-n // len(members))))
        draw = CategoricalNoise(self.generated_spans_, self.device_)
        enc = self.encoder_
        (ta, tb), (ca, cb) = self.target_slice_, self.condition_slice_
        frames = []
        with torch.inference_mode():
            for first in range(0, n, block):
                y_block, c_block = labels[first:first + block], conditions[first:first + block]
                m = len(y_block)
                # feature-major blocks: rows here are columns of the table, so every step is contiguous
                values_t = np.empty((enc.n_values, m), dtype=np.float32)
                codes_t = np.empty((enc.n_codes, m), dtype=np.int16)
                XT = np.zeros((enc.dim, min(chunk, m)), dtype=np.float32)
                for i, s in enumerate(range(0, m, chunk)):
                    e = min(s + chunk, m)
                    G = members[(first // chunk + i) % len(members)]
                    rows = np.arange(e - s)
                    y = torch.as_tensor(y_block[s:e], device=self.device_)
                    c = torch.as_tensor(c_block[s:e], device=self.device_) if cb > ca else None
                    z = torch.randn(e - s, self.noise_dim, generator=gen, device=self.device_)
                    XTc = XT[:, :e - s]
                    XTc[self.generated_idx_] = draw(G.features_major(z, y, c), gen).cpu().numpy()
                    if missed is not None:
                        self._blank_missed(XTc, missed[first + s:first + e])
                    for (a, b), code in (((ta, tb), y_block[s:e]), ((ca, cb), c_block[s:e])):
                        if b > a:
                            XTc[a:b] = 0.0
                            XTc[a + code, rows] = 1.0
                    values_t[:, s:e], codes_t[:, s:e] = enc.split_features_major(XTc)
                frames.append(enc.decode_parts(values_t.T, codes_t.T, id_start=first))
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def _draw_conditions(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Dropout state per record from its learned distribution given the record's class."""
        table = self.condition_table_
        cdf = np.cumsum(table / np.clip(table.sum(axis=1, keepdims=True), 1e-12, None), axis=1)
        cdf[:, -1] = 1.0
        u = rng.random(len(labels))
        return (u[:, None] > cdf[labels]).sum(axis=1)

    def _missed_visit_rates(self, X: np.ndarray, attended: np.ndarray) -> np.ndarray | None:
        """Per visit of the dropout timeline, the share of participants who missed it (every
        flagged cell of the visit missing) among those who came back later; None without such visits.

        A GAN drops rare events: on the trial 3 % of the visits before a participant's last are
        missed, and the generator made 0.3-0.5 % (a forest tells a record with a gap for real), so
        missed visits are drawn like dropout, as conditions, and their cells blanked."""
        value, obs, miss, visit = self.view_flagged_
        n_visits = self.view_visits_
        if not n_visits or not obs.size:
            return None
        observed = X[:, self.generated_idx_[obs]] > 0.5
        rates = np.zeros(n_visits)
        later = np.arange(n_visits)[None, :] < attended[:, None] - 1  # the last visit attended is never missed
        for j in range(n_visits):
            at_j = visit == j
            if at_j.any() and later[:, j].any():
                rates[j] = float((~observed[:, at_j].any(1) & later[:, j]).sum() / later[:, j].sum())
        return rates if rates.any() else None

    def _draw_missed(self, attended: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """(records × visits) missed visits, each with its rate, before the record's last visit."""
        rates = getattr(self, "missed_rates_", None)
        if rates is None:
            return None
        later = np.arange(rates.size)[None, :] < attended[:, None] - 1
        return (rng.random((len(attended), rates.size)) < rates) & later

    def _blank_missed(self, XT: np.ndarray, missed: np.ndarray) -> None:
        """Flag every flagged cell of a missed visit missing in the feature-major block ``XT``."""
        value, obs, miss, visit = self.view_flagged_
        on = visit < self.view_visits_
        blank = missed[:, visit[on]].T  # (cells × rows)
        for rows_, fill in ((self.generated_idx_[obs[on]], 0.0), (self.generated_idx_[miss[on]], 1.0)):
            XT[rows_] = np.where(blank, fill, XT[rows_])

    def _samplers(self) -> list[FoldedGenerator]:
        """The folded generators to sample from: the ensemble when one was selected, else the last."""
        if getattr(self, "_folded", None) is None:
            ensemble = getattr(self, "ensemble_", None) or [self.generator_]
            self._folded = [g.eval().folded() for g in ensemble]
        return self._folded

    # -- persistence ---------------------------------------------------------------------
    def _fitted_config(self) -> dict[str, Any]:
        return {"condition_table": self.condition_table_, "history": self.history_,
                "selection": getattr(self, "selection_", None), "epochs": self.epochs_, "batch_size": self.batch_size_,
                "visit_steps": self.visit_steps_, "critic_changes": self.critic_changes_,
                "critic_dropout": self.critic_dropout_,
                "missed_visit_rates": None if self.missed_rates_ is None else self.missed_rates_.tolist()}

    def _save_weights(self, directory: Path) -> None:
        nets = {"generator": self.generator_, "discriminator": self.discriminator_}
        nets.update({f"ensemble.{i}": g for i, g in enumerate(getattr(self, "ensemble_", None) or [])})
        state = {name: {k: v.detach().cpu() for k, v in net.state_dict().items()} for name, net in nets.items()}
        write_with(directory / "weights.pt", lambda tmp: torch.save(state, tmp))

    def _restore(self, fitted: dict[str, Any], encoder: TableEncoder, directory: Path) -> None:
        device = resolve_device(self.device, fallback_to_cpu=True)
        self._layout(encoder)
        self.condition_table_ = np.asarray(fitted["condition_table"], dtype=float)
        self.class_probs_ = self.condition_table_.sum(axis=1)
        self.history_ = fitted.get("history", [])
        self.epochs_ = fitted.get("epochs", self.epochs)
        self.batch_size_ = fitted.get("batch_size", self.batch_size)
        # the networks' shapes as trained: a bundle saved before these options had neither
        self.visit_steps_ = bool(fitted.get("visit_steps", False))
        self.critic_changes_ = bool(fitted.get("critic_changes", False))
        self.critic_dropout_ = float(fitted.get("critic_dropout", 0.0))
        rates = fitted.get("missed_visit_rates")
        self.missed_rates_ = None if rates is None else np.asarray(rates, dtype=float)
        self._build(device)
        state = bundle.load_torch(directory, device)
        bundle.restore_module(directory, self.generator_, state, "generator")
        bundle.restore_module(directory, self.discriminator_, state, "discriminator")
        self.discriminator_.eval()
        self.generator_.eval()
        self.ensemble_ = []
        for i in range(sum(name.startswith("ensemble.") for name in state)):
            g = self._new_generator()
            bundle.restore_module(directory, g, state, f"ensemble.{i}")
            self.ensemble_.append(g.eval())
        self.selection_ = fitted.get("selection")
        self._folded = None
        self.snapshots_ = Snapshots("off")

    # -- auditing --------------------------------------------------------------------------
    def membership_scores(self, frame: pd.DataFrame) -> np.ndarray:
        """White-box membership signal per record: minus the final discriminator's loss on it as a
        real record (members tend to have lower loss). For ``clinsynth.privacy.audit``."""
        self._check_fitted()
        X = self.encoder_.encode(self._conform(frame.reset_index(drop=True)))
        labels = torch.as_tensor(self._codes(X, self.target_slice_), device=self.device_)
        with torch.no_grad():
            out = self.discriminator_(torch.as_tensor(X[:, self.critic_idx_], device=self.device_))
            return -acgan_loss(out, True, labels, reduction="none").cpu().numpy()
