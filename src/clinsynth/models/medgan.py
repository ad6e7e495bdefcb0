"""medGAN after Choi et al. (2017): a GAN that generates in the latent space of a pretrained autoencoder.

High-dimensional binary or count code vectors are hard for a GAN to emit directly, so an
autoencoder is pretrained on the real patients first; the generator then produces latent codes,
the *decoder* maps them to code vectors, and the discriminator compares those with real
patients. The decoder is fine-tuned by the generator's loss. As in the paper:

* autoencoder with a tanh code layer (``compress_dim``) and a sigmoid output (cross-entropy for
  binary codes; for counts the codec's log-scaled [0, 1] target);
* generator of dense layers with batch normalisation and **shortcut connections**
  (h ← ReLU(BN(W h)) + h), noise of the latent size;
* discriminator with **minibatch averaging**: each record is shown next to its batch's mean, so a
  generator emitting one patient over and over is easy to spot (mode collapse);
* the discriminator trained ``d_steps`` times per generator step, Adam with L2 regularisation.

One departure, by measurement: from 1,000 patients up (without DP) the critic compares the
generator's *latents* with the real patients' latents under the pretrained encoder, the decoder
stays as pretrained, and the generator ends in a linear layer (``critic_input``). Decoding the
real patients' own latents reproduces their co-occurrences (error 0.00 on the simulated EHR); the
paper's fine-tuning of the decoder by the generator's loss spoilt that (1.13), and its generator,
tanh(z + ReLU(…)), cannot emit a latent below tanh(z). On that path the generator's noise is not
N(0, I) but a Gaussian mixture fitted to the training patients' latents (``latent_mixture``, as the
VAE's prior: ``models/latent_prior.py``; a mixture latent space as in DeLiGAN, Gurumurthy et al.
2017), and the generator *refines* its draws: it starts as the identity and the adversarial loss
moves it. From N(0, I) the generator did not find the latents' shape — a linear classifier told
its latents from the real ones 97 % of the time, and their decoded co-occurrences were off by
0.5–0.6 after calibration. After training (without DP) the decoder's
code-presence logits are shifted so each code's mean probability over the generator's draws is its
training prevalence (``calibrate``, as the VAE: ``models/code_calibration.py``).

Under DP (``dp-medgan``) the autoencoder's pretraining and the discriminator see real records, so
both are DP-SGD phases of one ledger (``models/records.py``). Minibatch averaging mixes records
inside the discriminator — one patient would move every other's output, and per-record clipping
would no longer bound its influence — so it is off, and refused, in DP mode; so is batch
normalisation in any network that sees real records (the generator's is fine: it sees none).
"""
from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clinsynth.errors import ConfigError
from clinsynth.models.records import NeuralCodeModel, Phase
from clinsynth.models.training import TrainingProgress
from clinsynth.schema import Schema


CRITIC_INPUTS = ("latent", "records")


class ShortcutGenerator(nn.Module):
    """Noise → latent code through dense layers with batch norm, each added to its input (medGAN)."""

    def __init__(self, dim: int, layers: int = 2, output_layer: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, momentum=0.01), nn.ReLU())
            for _ in range(layers))
        # the output layer lets the latents move and shrink: without it h = z + ReLU(…) ≥ z, and
        # tanh(h) could never fall below tanh(z) (latent std 0.63 against the encoder's 0.33)
        self.out = nn.Linear(dim, dim) if output_layer else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for block in self.blocks:
            h = block(h) + h
        return torch.tanh(self.out(h))  # the encoder's code layer is tanh too


class RefiningGenerator(nn.Module):
    """Mixture draw → the draw plus a learned correction, kept inside the encoder's tanh box.

    The correction's last layer starts at zero, so before training the generator emits the
    mixture's draws unchanged; the adversarial loss then moves them toward the real latents."""

    def __init__(self, dim: int):
        super().__init__()
        self.correction = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.correction[2].weight)
        nn.init.zeros_(self.correction[2].bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.clamp(z + self.correction(z), -1.0, 1.0)


class MinibatchDiscriminator(nn.Module):
    """Dense discriminator; with ``averaging`` every record is concatenated with its batch's mean."""

    def __init__(self, dim: int, hidden: tuple[int, ...], averaging: bool):
        super().__init__()
        self.averaging = averaging
        layers: list[nn.Module] = []
        width = dim * (2 if averaging else 1)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.averaging:
            x = torch.cat([x, x.mean(0, keepdim=True).expand_as(x)], dim=1)
        return self.net(x).squeeze(1)


def dense_autoencoder(dim: int, out_dim: int, compress_dim: int) -> tuple[nn.Module, nn.Module]:
    encoder = nn.Sequential(nn.Linear(dim, compress_dim), nn.Tanh())
    decoder = nn.Linear(compress_dim, out_dim)  # logits; the codec applies the output activation
    return encoder, decoder


class MedGAN(NeuralCodeModel):
    """medGAN (``medgan``); ``dp-medgan`` is the same with a privacy budget.

    Parameters
    ----------
    pretrain_epochs : autoencoder pretraining epochs.
    epochs : GAN epochs; ``None``: ``mixture_epochs`` (30) with a latent mixture, ``latent_epochs``
        (200) with the latent critic alone, 100 with the record one.
    batch_size : records per batch (both phases); ``None``: 512, or 32 below 1,000 patients without
        DP (see ``small_batch``).
    compress_dim : the autoencoder's code size (= the generator's noise and output size).
    generator_layers : shortcut blocks in the generator.
    disc_hidden : the discriminator's hidden widths.
    minibatch_averaging : show each record with its batch's mean (not under DP).
    critic_input : ``"latent"``: the critic compares the generator's latents with the real patients'
        latents under the pretrained encoder, and the decoder stays as pretrained; ``"records"``
        (the paper): it compares decoded records with real ones, and the generator's loss
        fine-tunes the decoder. ``None``: latent from ``few_patients`` up without DP, records
        otherwise. Measured (see ``latent_epochs``): the record critic's fine-tuning spoilt the
        decoder — decoding the real patients' own latents gave co-occurrence error 0.00 before the
        GAN and 1.13 after it; on 300 patients × 170 codes the latent critic collapsed (0.06 codes
        per patient of 5) where the record critic reaches prevalence correlation 0.91–0.94.
    d_steps : discriminator steps per generator step; ``None``: 1 with the latent critic, 2 with the record one.
    lr, weight_decay : Adam's learning rate and L2 regularisation for the GAN's networks (``lr``
        ``None``: 1e-3; 1e-4 with a latent mixture, and below 1,000 patients without DP).
    ae_lr : the autoencoder's pretraining learning rate.
    calibrate : after training, shift the decoder's code-presence logits so each code's mean
        probability over the generator's draws is its prevalence in the training patients
        (``models/code_calibration.py``, as the VAE). Counts of real records, so refused under DP;
        ``None``: on without DP (measured: see ``calibrate_``), off under DP.
    latent_mixture : the generator's noise: 0, N(0, I) (the paper); k > 0, draws from a mixture of
        at most k full-covariance Gaussians (one per ``patients_per_component`` training patients)
        fitted to the training patients' latents after pretraining, which a
        :class:`RefiningGenerator` moves. A statistic of real records, so refused under DP;
        ``None``: ``mixture_components`` (40) with the latent critic without DP, 0 otherwise.
        Measured: see ``mixture_components``.
    Common parameters (ε, δ, clipping, device, seed, …): see :class:`CodeModel`;
    the DP calibration (``calibration_share``): :class:`NeuralCodeModel`.
    """

    name = "medgan"
    sampling_modules = ("generator", "decoder", "prior")
    optional_modules = ("prior",)  # bundles saved before it drew the generator's noise from N(0, I)

    def __init__(self, pretrain_epochs: int = 40, epochs: int | None = None, batch_size: int | None = None,
                 compress_dim: int = 128, generator_layers: int = 2, disc_hidden: tuple[int, ...] = (256, 128),
                 minibatch_averaging: bool = True, d_steps: int | None = None, lr: float | None = None,
                 weight_decay: float = 1e-4, ae_lr: float = 5e-3, critic_input: str | None = None,
                 calibrate: bool | None = None, latent_mixture: int | None = None, **common: Any):
        super().__init__(**common)
        self.calibrate = calibrate
        self.latent_mixture = latent_mixture
        self.critic_input = critic_input
        self.pretrain_epochs = pretrain_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.compress_dim = compress_dim
        self.generator_layers = generator_layers
        self.disc_hidden = disc_hidden
        self.minibatch_averaging = minibatch_averaging
        self.d_steps = d_steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.ae_lr = ae_lr

    # -- declaration ---------------------------------------------------------------------------
    def _phases(self) -> list[Phase]:
        return [Phase("autoencoder", "autoencoder pretraining", self.pretrain_epochs, self.batch_size_),
                Phase("discriminator", "discriminator training", self.epochs_, self.batch_size_)]

    #: below ``few_patients`` (without DP) medGAN trains in small batches at a lower rate, its decoder
    #: started at the codes' prevalences. Its defaults (batch 512, one step per epoch on a few hundred
    #: patients) collapsed there: on 300 patients × 170 codes, prevalence correlation −0.22 / −0.43
    #: and 88–100 codes per patient (real: 5); batch 32 at lr 1e-4 from the prevalences: 0.93 / 0.94
    #: and 4.4–5.0 codes (seeds 0, 1). From 1,000 patients up, batch 512 at lr 1e-3.
    small_batch: ClassVar[int] = 32
    small_lr: ClassVar[float] = 1e-4

    def _small_data(self) -> bool:
        n = getattr(self, "n_input_", None)
        return n is not None and n < self.few_patients and not self.private

    @property
    def batch_size_(self) -> int:
        """The batch size the fit uses: ``batch_size``, or chosen by the number of patients."""
        return self.batch_size if self.batch_size is not None else self.small_batch if self._small_data() else 512

    @property
    def critic_input_(self) -> str:
        """What the critic compares, as the fit used it: ``critic_input``, or ``"latent"`` from
        ``few_patients`` up without DP and ``"records"`` otherwise (see ``latent_epochs``)."""
        if self.critic_input is not None:
            return self.critic_input
        if getattr(self, "n_input_", None) is None:  # a loaded bundle: what it was trained with
            return getattr(self, "_fitted_critic_input", None) or "records"
        return "latent" if self._latent_by_default() else "records"

    def _latent_by_default(self) -> bool:
        """Whether the fit's data make the latent critic the default: ``few_patients`` up without DP."""
        return self.n_input_ >= self.few_patients and not self.private

    @property
    def epochs_(self) -> int:
        """The GAN's epochs the fit uses: ``epochs``, or ``mixture_epochs`` with a latent mixture,
        else ``latent_epochs`` / 100 by the critic's input."""
        if self.epochs is not None:
            return self.epochs
        if self.latent_mixture_:
            return self.mixture_epochs
        return self.latent_epochs if self._latent_critic else 100

    @property
    def d_steps_(self) -> int:
        """Critic steps per generator step: ``d_steps``, or 1 with the latent critic and 2 with the record one."""
        if self.d_steps is not None:
            return self.d_steps
        return 1 if self._latent_critic else 2

    #: the GAN's default epochs with the latent critic. On ``bench_ehr.py structure`` (8,000
    #: patients × 1,000 codes, seed 0): 100 epochs, dimension-wise prediction 0.71, co-occurrence
    #: 1.38; 200 epochs: 0.81, 1.05; and one critic step per generator step (``d_steps_``): 0.81,
    #: 0.76 (the record critic at 100 epochs, 2 critic steps: 0.67–0.72, 1.47–1.49).
    latent_epochs: ClassVar[int] = 200

    #: the latent mixture's default size, its patients per component, and the refining GAN's epochs
    #: and learning rate. On ``bench_ehr.py structure`` (8,000 patients × 1,000 codes, 128 latent
    #: dimensions), decoding mixture draws alone (calibrated) gave co-occurrence 0.29 / 0.18 / 0.05–0.15
    #: with 10 / 20 / 40 components (seed 0; diagonal covariances: 0.51 with 50, 0.30 with 200), and
    #: the GAN's refinement of the 40-component draws, seeds 0 / 1 / 2: 0.15 / 0.10 / 0.13 → 0.04 /
    #: 0.09 / 0.14 after 30 epochs at lr 1e-4 (seed 0: 0.09 after 10 epochs, 0.07 after 100),
    #: dimension-wise prediction 0.95 / 0.96 / 0.93 (the generator from N(0, I), 200 epochs: 0.51 /
    #: 0.55 / 0.64, 0.80 / 0.87 / 0.82). The model with these defaults, ``bench_ehr.py structure``:
    #: co-occurrence 0.14 / 0.15 / 0.16, prediction 0.95 / 0.99 / 0.92, prevalence r 0.998, fit 70–190 s
    #: under load 3–4. Decoded draws copied a training patient 10 % of the time, against 21 % for a
    #: real unseen patient (few codes each: many patients share a code set).
    mixture_components: ClassVar[int] = 40
    #: the mixture is fitted to at most this many patients' latents — enough for its 40 components
    #: (one per 200). On 100,000 patients × 5,000 codes a one-epoch fit took 20 s without the
    #: mixture and 118 s with one fitted to 16,000 patients' latents
    mixture_rows: ClassVar[int] = 8_000
    patients_per_component: ClassVar[int] = 200
    mixture_epochs: ClassVar[int] = 30
    mixture_lr: ClassVar[float] = 1e-4

    @property
    def latent_mixture_(self) -> int:
        """The mixture's components the fit uses: ``latent_mixture``, or ``mixture_components``
        with the latent critic without DP, 0 otherwise (a loaded bundle: what it was trained with)."""
        if self.latent_mixture is not None:
            return self.latent_mixture
        if getattr(self, "n_input_", None) is None:
            return getattr(self, "_fitted_latent_mixture", 0)
        return self.mixture_components if self._latent_critic and not self.private else 0

    def _fitted_config(self) -> dict[str, Any]:
        return {**super()._fitted_config(), "critic_input": self.critic_input_, "latent_mixture": self.latent_mixture_}

    def _restore(self, fitted: dict[str, Any], encoder: Any, directory: Any) -> None:
        # a bundle saved before the latent critic existed was trained on records, and one saved
        # before the latent mixture drew its noise from N(0, I)
        self._fitted_critic_input = fitted.get("critic_input", "records")
        self._fitted_latent_mixture = fitted.get("latent_mixture", 0)
        super()._restore(fitted, encoder, directory)

    @property
    def calibrate_(self) -> bool:
        """Whether the fit calibrates the codes to their prevalences: ``calibrate``, or on for codes
        without DP in a model that takes the setting (medGAN and corGAN both do).

        Measured on ``bench_ehr.py structure`` (8,000 × 1,000 + age, sex), seeds 0 / 1 / 2, without →
        with: co-occurrence 0.76 / 0.94 / 1.09 → 0.51 / 0.55 / 0.64 (bar 0.25 not met: what is left
        is the codes' dependence, not their rates), prevalence r 0.976 / 0.969 / 0.971 → 0.999 / 0.998
        / 0.999, codes per patient 8.39 / 7.69 / 7.82 → 8.69 / 8.99 / 9.39, dimension-wise prediction
        0.81 / 0.88 / 0.82 → 0.80 / 0.87 / 0.82; ``bench_ehr.py small`` (300 patients × 170 codes,
        the record critic) r 0.93 / 0.94 / 0.91 → 0.97 / 0.97 / 0.97. The generator's draws miss the
        prevalences as the VAE's mixture draws did, and every pair rate inherits the miss."""
        if self.calibrate is not None:
            return self.calibrate
        return ("calibrate" in self._param_names() and getattr(self, "input_kind_", "codes") == "codes"
                and not self.private)

    @property
    def lr_(self) -> float:
        """The GAN's learning rate the fit uses: ``lr``, or chosen by the number of patients and,
        from ``few_patients`` up, by whether the generator refines a latent mixture."""
        if self.lr is not None:
            return self.lr
        return self.small_lr if self._small_data() else self.mixture_lr if self.latent_mixture_ else 1e-3

    def _validate_model_params(self, schema: Schema) -> None:
        def whole(v: Any, low: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        bad = [f"{k}={getattr(self, k)!r}" for k in ("compress_dim",) if not whole(getattr(self, k), 1)]
        if self.d_steps is not None and not whole(self.d_steps, 1):
            bad.append(f"d_steps={self.d_steps!r}")
        if self.epochs is not None and not whole(self.epochs, 0):
            bad.append(f"epochs={self.epochs!r}")
        if not whole(self.generator_layers, 0):
            bad.append(f"generator_layers={self.generator_layers!r}")
        if not all(whole(h, 1) for h in tuple(self.disc_hidden)):
            bad.append(f"disc_hidden={self.disc_hidden!r}")
        for k in ("lr", "weight_decay", "ae_lr"):
            v = getattr(self, k)
            if k == "lr" and v is None:
                continue
            if not (isinstance(v, (int, float)) and v >= 0 and (k == "weight_decay" or v > 0)):
                bad.append(f"{k}={v!r}")
        if self.critic_input is not None and self.critic_input not in CRITIC_INPUTS:
            bad.append(f"critic_input={self.critic_input!r} ('latent' or 'records')")
        if self.latent_mixture is not None and not whole(self.latent_mixture, 0):
            bad.append(f"latent_mixture={self.latent_mixture!r} (a whole number ≥ 0)")
        if bad:
            raise ConfigError(f"{self.name}: invalid hyperparameters: {', '.join(bad)}")
        if self.private and self.latent_mixture:
            raise ConfigError(f"{self.name}: latent_mixture={self.latent_mixture} fits a mixture to the latents of real "
                              "records, an uncharged statistic of them; it is unavailable under DP (set it to 0)")
        self._check_calibrate(self.calibrate_)
        if self.private and self.minibatch_averaging:
            raise ConfigError(f"{self.name}: minibatch_averaging mixes records inside the discriminator, which "
                              "per-record clipping cannot bound; it is unavailable under DP (set it to false)")

    def _build(self, dim: int, out_dim: int) -> dict[str, nn.Module]:
        encoder, decoder = dense_autoencoder(dim, out_dim, self.compress_dim)
        return {"encoder": encoder, "decoder": decoder, **self._noise_and_generator(),
                "discriminator": MinibatchDiscriminator(self.compress_dim if self._latent_critic else dim,
                                                        tuple(self.disc_hidden), self.minibatch_averaging)}

    def _noise_and_generator(self, generator: nn.Module | None = None) -> dict[str, nn.Module]:
        """The generator's noise (``prior``: N(0, I) until fitted) and the generator: a
        :class:`RefiningGenerator` with a latent mixture, else ``generator`` (default medGAN's)."""
        from clinsynth.models.latent_prior import LatentPrior

        prior = LatentPrior(self.compress_dim, max(1, self.latent_mixture_))
        if self.latent_mixture_:
            return {"prior": prior, "generator": RefiningGenerator(self.compress_dim)}
        return {"prior": prior, "generator": generator if generator is not None else
                ShortcutGenerator(self.compress_dim, self.generator_layers, self._latent_critic)}

    @property
    def _latent_critic(self) -> bool:
        return self.critic_input_ == "latent"

    # -- training --------------------------------------------------------------------------------
    def _optimizer(self, params, lr: float | None = None) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr or self.lr_, weight_decay=self.weight_decay)

    def _train(self) -> None:
        started = time.perf_counter()
        phases = self._phases()
        self.history_ = []
        self._pretrain(phases[0])
        if self.latent_mixture_ and not self.private:  # refused under DP: checked in fit
            self._fit_latent_mixture()
        self._train_gan(phases[1])
        if self.calibrate_ and not self.private and self._codes is not None:  # refused under DP: checked in fit
            self._calibrate_to_prevalences(self._code_bias()[0])
        self.train_seconds_ = time.perf_counter() - started

    #: start the decoder at the codes' prevalences (corGAN). Not medGAN's default from
    #: ``few_patients`` up: measured, it drops a short fit on 1,500 patients × 80 codes (0.84 → 0.39).
    prevalence_start: ClassVar[bool] = False
    #: below this many patients medGAN uses its small-data schedule (``small_batch``, ``small_lr``)
    few_patients: ClassVar[int] = 1000

    def _code_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(bias, weight on a constant input or None) of the decoder's code logits."""
        return self.modules_["decoder"].bias, None

    def _start_at_prevalence(self) -> None:
        """Start the decoder's code logits at each code's log-odds of prevalence (without DP: a
        count of the records). Its output otherwise starts at 0.5 for every code, and on a few
        hundred patients (one batch per epoch) training ends before it has moved far: medGAN
        sampled every code of 170 at ~50 % (300 patients, prevalence correlation −0.33)."""
        if not (self.prevalence_start or self._small_data()) or self.private or self._codes is None:
            return
        a, v = self.codec_.static_dim, self.codec_.n_codes
        bias, weight = self._code_bias()
        with torch.no_grad():
            bias[a:a + v] = torch.as_tensor(self._prevalence_log_odds(), dtype=bias.dtype, device=bias.device)
            if weight is not None:
                weight[a:a + v] = 0.0

    def _pretrain(self, phase: Phase) -> None:
        m = self.modules_
        self._start_at_prevalence()  # no draw; a resumed fit's checkpoint then restores the weights
        autoencoder = nn.Sequential(m["encoder"], m["decoder"])
        step = self._step(phase, autoencoder, self._optimizer(autoencoder.parameters(), self.ae_lr))
        loss_of = self.codec_.reconstruction_loss
        state = {**m, **step.state_objects("autoencoder")}
        first = self._checkpoint.resume(phase.name, phase.epochs, state)
        with TrainingProgress(phase.epochs, f"{self.name} autoencoder", self.progress, start=first) as bar:
            for epoch in range(first, phase.epochs):
                total, count = 0.0, 0
                for rows in self._batches(phase, epoch):
                    if len(rows) == 0:
                        step(None)
                        continue
                    x = self._real(rows)
                    loss = loss_of(step.real(x), x)
                    step(loss)
                    total, count = total + loss.sum().item(), count + len(rows)
                self.history_.append({"phase": "autoencoder", "loss": total / max(count, 1)})
                bar.advance(loss=total / max(count, 1))
                self._checkpoint.epoch_done(phase.name, epoch, state)
        step.finish()

    def _fit_latent_mixture(self) -> None:
        """Fit the generator's noise to the training patients' latents under the pretrained encoder
        (without DP only: real records). Deterministic, so a resumed fit refits the same mixture."""
        encoder = self.modules_["encoder"]
        rows = np.arange(self.n_train_)
        if len(rows) > self.mixture_rows:  # a seeded subset: the fit's cost grows with rows × components × dim²
            rows = np.sort(np.random.default_rng((self.seed, 0x61A7)).choice(rows, self.mixture_rows, replace=False))
        with torch.no_grad():
            z = np.concatenate([encoder(self._real(rows[start:start + 4096])).cpu().numpy()
                                for start in range(0, len(rows), 4096)])
        self.modules_["prior"].fit(z.astype(np.float64), self.seed, patients_per_component=self.patients_per_component)

    def _noise(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """The generator's input: N(0, I) (the prior unfitted: exactly ``torch.randn``'s draws), or
        draws from the fitted latent mixture."""
        return self.modules_["prior"].sample(n, rng)

    def _fake(self, batch: int, rng: torch.Generator) -> torch.Tensor:
        """Generated records (or, with the latent critic, latents) as the critic sees them (differentiable)."""
        latent = self.modules_["generator"](self._noise(batch, rng))
        if self._latent_critic:
            return latent
        return self.codec_.activate(self.modules_["decoder"](latent), self._spans, 0.2)

    def _generator_optimizer(self) -> torch.optim.Optimizer:
        """The generator's optimiser; with the record critic it fine-tunes the decoder too, as in medGAN."""
        m = self.modules_
        if self._latent_critic:  # the decoder stays the pretrained one
            return self._optimizer(m["generator"].parameters())
        return self._optimizer(list(m["generator"].parameters()) + list(m["decoder"].parameters()))

    def _critic_view(self, x: torch.Tensor) -> torch.Tensor:
        """Real records as the critic sees them: their codes, or (``critic_input="latent"``) their
        latents under the pretrained encoder — one record's own function, so per-record clipping
        still bounds its influence under DP."""
        if not self._latent_critic:
            return x
        with torch.no_grad():
            return self.modules_["encoder"](x)

    def _critic_losses(self, d_real: torch.Tensor | None, d_fake: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(per-real-record loss, fake-batch loss) of the discriminator: the GAN's cross-entropy."""
        real = None if d_real is None else F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real), reduction="none")
        return real, F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))

    def _generator_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))

    def _after_critic_step(self) -> None:
        """Hook after each discriminator step (WGAN weight clipping in corGAN)."""

    def _train_gan(self, phase: Phase) -> None:
        m = self.modules_
        D = m["discriminator"]
        self._spans = self.codec_.activation(self.device_)
        rng = torch.Generator(device=self.device_).manual_seed(self.seed + 1)
        critic = self._step(phase, D, self._optimizer(D.parameters()))
        opt_g = self._generator_optimizer()
        batch = min(self.batch_size_, self.n_train_)
        state = {**m, **critic.state_objects("critic"), "generator_optimizer": opt_g, "rng": rng}
        first = self._checkpoint.resume(phase.name, phase.epochs, state)
        with TrainingProgress(phase.epochs, f"{self.name} GAN", self.progress, start=first) as bar:
            for epoch in range(first, phase.epochs):
                sums, steps, g_steps = {"d": 0.0, "g": 0.0}, 0, 0
                batches = list(self._batches(phase, epoch))
                for i, rows in enumerate(batches):
                    with torch.no_grad():
                        x_fake = self._fake(batch, rng)
                    d_real = critic.real(self._critic_view(self._real(rows))) if len(rows) else None
                    loss_real, loss_fake = self._critic_losses(d_real, critic.public(x_fake))
                    critic(loss_real, loss_fake)
                    self._after_critic_step()
                    sums["d"] += loss_fake.item()
                    steps += 1
                    # the generator's step reads no real record: free under DP. An epoch of fewer batches
                    # than d_steps ends with one (1,000 patients in batches of 512 with corGAN's two critic
                    # steps: one batch per epoch, and the generator never trained)
                    if (i + 1) % self.d_steps_ == 0 or (i == len(batches) - 1 and len(batches) < self.d_steps_):
                        opt_g.zero_grad(set_to_none=True)
                        loss_g = self._generator_loss(critic.public(self._fake(batch, rng)))
                        loss_g.backward()
                        opt_g.step()
                        sums["g"] += loss_g.item()
                        g_steps += 1
                means = {"d_fake": sums["d"] / max(steps, 1), "g": sums["g"] / max(g_steps, 1)}
                self.history_.append({"phase": "gan", **means})
                bar.advance(**means)
                self._checkpoint.epoch_done(phase.name, epoch, state)
        m["discriminator"] = critic.finish()

    # -- sampling --------------------------------------------------------------------------------
    def _generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.modules_["decoder"](self.modules_["generator"](self._noise(n, generator)))
