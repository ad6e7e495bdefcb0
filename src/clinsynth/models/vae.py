"""A variational autoencoder: the baseline of the medGAN work, for code matrices and ordinary tables.

The encoder maps a patient (ordinary columns and codes, see ``models/records.py``) to a Gaussian
over a small latent space, the decoder maps a latent draw back to the record's likelihood:
categories and missing flags as softmaxes, numbers as Gaussians, codes as Bernoullis. Training
maximises the evidence lower bound (reconstruction − ``beta`` × KL to the standard normal prior);
sampling decodes prior draws — or, for codes without DP, draws from a Gaussian mixture fitted to
the training patients' latents, where the prior has holes (:data:`LATENT_MIXTURE`), through a
decoder calibrated to the codes' prevalences. The codes' correlations live only in the latent
(the decoder's Bernoullis are independent given it), so a code VAE is trained long enough for
the latent to carry them (see :data:`MIN_CODE_STEPS`). A longitudinal table's dropout is a category of the record (the last
visit), so a synthetic participant never comes back after leaving, as with every table model.

Under DP (``dp-vae``) both halves see real records through the loss, so the whole VAE is one
DP-SGD phase of the ledger (per-record clipping over all its parameters).
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from clinsynth.errors import ConfigError
from clinsynth.models.latent_prior import LatentPrior
from clinsynth.models.records import NeuralCodeModel, Phase
from clinsynth.models.tags import ModelTags
from clinsynth.models.training import TrainingProgress, mlp
from clinsynth.schema import Schema


class VAENet(nn.Module):
    """Encoder and decoder; ``forward`` returns (decoder logits, KL per record) for one record batch."""

    def __init__(self, dim: int, out_dim: int, hidden: tuple[int, ...], latent: int):
        super().__init__()
        self.latent = latent
        self.encoder = mlp([dim, *hidden, 2 * latent])
        self.decoder = mlp([latent, *reversed(hidden), out_dim])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.encoder(x).chunk(2, dim=1)
        log_var = log_var.clamp(-10.0, 10.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(1)
        return self.decoder(z), kl


#: Defaults by input when a setting is left ``None``. Code matrices: the ELBO (β = 1) keeps the
#: prevalence of sparse codes (dimension-wise probability 0.994 on the simulated EHR; β = 0.1 and
#: 0.3 gave 0.950 and 0.989). Ordinary tables: a lighter KL term trained longer in smaller
#: batches, as TVAE does (bench/compare.py, 2 seeds, TSTR/TRTR AUROC LR / RF / GB and detection
#: AUROC: breast cancer 0.705 / 0.952 / 0.918, 0.999 → 0.996 / 1.006 / 0.996, 0.807; WHAS500
#: 0.830 / 0.725 / 0.742, 1.000 → 0.960 / 0.963 / 0.938, 0.763).
DEFAULTS = {"codes": {"epochs": 60, "batch_size": 256, "beta": 1.0},
            "table": {"epochs": 300, "batch_size": 128, "beta": 0.2}}

#: Without DP a code VAE trains for at least ``MIN_CODE_STEPS`` optimiser steps (epochs rise on
#: smaller tables, at most ``MAX_CODE_EPOCHS``), its decoder's code logits started at the codes'
#: prevalences. 60 epochs are ~1,900 steps on 8,000 patients: the decoder spent them learning
#: prevalences, the latent carried ~1 nat (1.2 on 4,000 patients: posterior collapse) and codes came
#: out nearly independent. Measured (bench/bench_ehr.py structure, 8,000 × 1,000 + age, sex, seeds
#: 0 and 1): dimension-wise prediction 0.33–0.36 of the real F1 → 0.79 at 6,000 steps → 0.84–0.85
#: at 12,000; co-occurrence 0.94–0.95 → 0.44–0.48 → 0.38–0.40; prevalence r 0.99 throughout; fit
#: 6.4× the old steps there (2.6× at 20,000 patients); 3,000 since the calibrated mixture (below).
#: Measured worse on 4,000 patients: β 0.3 / 0.1 / 0.03 (the prior no longer matches the latents,
#: before the mixture), a KL warm-up, lr 3e-3 at the same steps,
#: sampling a mixture fitted to the latents (bench/results/ehr_structure.json) — of a 60-epoch
#: latent that carried ~1 nat; see ``LATENT_MIXTURE`` for the mixture on a trained one. DP keeps its
#: epochs: its ledger is calibrated on the steps, and the prevalences would be an uncharged count.
MIN_CODE_STEPS = 3000
MAX_CODE_EPOCHS = 1000
#: A step-trained code VAE (codes without DP) weighs its KL term by ``STEP_BETA``, draws new
#: latents from a mixture of at most ``LATENT_MIXTURE`` full-covariance Gaussians fitted after
#: training to ``POSTERIOR_DRAWS`` posterior draws per training patient in the active latent
#: dimensions (``models/latent_prior.py``), and shifts its decoder's code logits so each code's
#: mean probability over those draws is its training prevalence (``models/code_calibration.py``).
#: Co-occurrence excess beyond noise, bench/bench_ehr.py structure (8,000 × 1,000 + age, sex):
#: the previous default (β 0.5, 6,000 steps, 10 Gaussians over all 64 dimensions, one draw per
#: patient) 0.36 / 0.38 / 0.28 on seeds 0 / 1 / 2; this one 0.06 / 0.09 / 0.22 in 3,000 steps,
#: dimension-wise prediction 0.96–0.97 of the real F1 (0.86–0.94). On seed 0, one model each
#: (excess of decoding the patients' own posterior draws → mixture → calibrated mixture):
#: β 0.5 at 6,000 steps 0.25 → 0.30 → 0.15; β 0.5 at 3,000 steps 0.24 → 0.27 → 0.21; β 0.25 at
#: 3,000 steps 0.21 → 0.30 → 0.09. Most of the mixture's error was the codes' shortfall (8.2–8.3
#: codes per patient against the real 8.67), which every pair rate inherits. The mixture on
#: β 0.25's 14 active dimensions (of 64): one draw per patient, 60 / 120 / 250 Gaussians 0.35 /
#: 0.32 / 0.31, 4 draws 60 Gaussians 0.29; over all 64 dimensions, 10 Gaussians 0.40. Tried and
#: rejected: a decoder of (512, 256) (0.37 at 3,000 steps, 2× the time), a learned mixture prior
#: trained with the VAE (the latent collapsed: KL 0.9–5 nats, 1.1–1.4), mixture draws at a
#: temperature of 0.8 / 0.6 (0.37 / 0.59: fewer codes per patient).
STEP_BETA = 0.25
LATENT_MIXTURE = 60
POSTERIOR_DRAWS = 4


class VAE(NeuralCodeModel):
    """VAE (``vae``) for code matrices, mixed code + column tables and ordinary tables; ``dp-vae`` with a budget.

    Parameters
    ----------
    epochs, batch_size, lr : training length, records per batch, Adam's learning rate.
    hidden : widths of the encoder's hidden layers (the decoder mirrors them).
    latent_dim : size of the latent space.
    beta : weight of the KL term (1 is the ELBO).
    latent_mixture : draw new latents from a mixture of this many Gaussians fitted to the training
        patients' latents (0: from the N(0, I) prior). A statistic of real records, so refused
        under DP; ``None``: :data:`LATENT_MIXTURE` for codes without DP, 0 otherwise.
    calibrate : after training, shift the decoder's code logits so each code's mean probability
        over the sampler's latents is its prevalence in the training patients
        (``models/code_calibration.py``). Counts of real records, so refused under DP; ``None``:
        on for codes without DP, off otherwise.
    ``epochs``, ``batch_size`` and ``beta`` left ``None`` take the defaults of the input kind
    (:data:`DEFAULTS`: code matrices and mixed tables, or ordinary tables); without DP a code
    matrix's epochs rise so the fit takes at least :data:`MIN_CODE_STEPS` steps, its decoder
    starts at the codes' prevalences and its β is :data:`STEP_BETA`.
    Common parameters (ε, δ, clipping, binarize, device, seed, …): see :class:`CodeModel`;
    the DP calibration (``calibration_share``): :class:`NeuralCodeModel`.
    """

    name = "vae"
    tags = ModelTags("codes", also_tables=True)  # codes, mixed and ordinary tables
    sampling_modules = ("vae", "prior")
    optional_modules = ("prior",)  # bundles saved before it draw from N(0, I), as they did

    def __init__(self, epochs: int | None = None, batch_size: int | None = None, lr: float = 1e-3,
                 hidden: tuple[int, ...] = (256, 128), latent_dim: int = 64, beta: float | None = None,
                 latent_mixture: int | None = None, calibrate: bool | None = None, **common: Any):
        super().__init__(**common)
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.hidden = hidden
        self.latent_dim = latent_dim
        self.beta = beta
        self.latent_mixture = latent_mixture
        self.calibrate = calibrate

    def _setting(self, name: str) -> Any:
        """A setting as given, or the default of the input kind (known once ``fit`` has its data)."""
        value = getattr(self, name)
        if value is not None:
            return value
        if name == "epochs":
            return self._default_epochs()
        if name == "beta" and self._trains_by_steps():
            return STEP_BETA
        if name == "latent_mixture":
            return LATENT_MIXTURE if getattr(self, "input_kind_", "codes") == "codes" and not self.private else 0
        if name == "calibrate":
            return getattr(self, "input_kind_", "codes") == "codes" and not self.private
        return DEFAULTS[getattr(self, "input_kind_", "codes")][name]

    def _trains_by_steps(self) -> bool:
        """True for codes without DP, once ``fit`` knows the number of patients."""
        return (getattr(self, "input_kind_", None) == "codes" and getattr(self, "n_input_", None) is not None
                and not self.private)

    def _default_epochs(self) -> int:
        kind = getattr(self, "input_kind_", "codes")
        epochs = DEFAULTS[kind]["epochs"]
        if not self._trains_by_steps():
            return epochs
        steps = max(1, self.n_input_ // min(self._setting("batch_size"), self.n_input_))
        return int(min(MAX_CODE_EPOCHS, max(epochs, math.ceil(MIN_CODE_STEPS / steps))))

    def _resolved(self, name: str) -> Any:
        kind = getattr(self, "input_kind_", None)  # known once fit has seen the data
        if kind is not None and (name in DEFAULTS[kind] or name in ("latent_mixture", "calibrate")):
            return self._setting(name)
        return super()._resolved(name)

    def _phases(self) -> list[Phase]:
        return [Phase("vae", "VAE training (encoder and decoder)", self._setting("epochs"), self._setting("batch_size"))]

    def _validate_model_params(self, schema: Schema) -> None:
        bad = []
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            bad.append(f"lr={self.lr!r} (> 0)")
        beta = self._setting("beta")
        if isinstance(beta, bool) or not (isinstance(beta, (int, float)) and beta >= 0):
            bad.append(f"beta={beta!r} (≥ 0)")
        sizes = [*tuple(self.hidden), self.latent_dim]
        if not sizes or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in sizes):
            bad.append(f"hidden={self.hidden!r}, latent_dim={self.latent_dim!r} (whole numbers ≥ 1)")
        mixture = self._setting("latent_mixture")
        if isinstance(mixture, bool) or not isinstance(mixture, int) or mixture < 0:
            bad.append(f"latent_mixture={mixture!r} (a whole number ≥ 0)")
        if bad:
            raise ConfigError(f"{self.name}: invalid hyperparameters: {', '.join(bad)}")
        if self.private and mixture:
            raise ConfigError(f"{self.name}: latent_mixture={mixture} fits a mixture to the latents of real records, an "
                              "uncharged statistic of them; it is unavailable under DP (set it to 0)")
        self._check_calibrate(self._setting("calibrate"))

    def _build(self, dim: int, out_dim: int) -> dict[str, nn.Module]:
        return {"vae": VAENet(dim, out_dim, tuple(self.hidden), self.latent_dim),
                "prior": LatentPrior(self.latent_dim, max(1, self._setting("latent_mixture")))}

    def _train(self) -> None:
        started = time.perf_counter()
        phase = self._phases()[0]
        net = self.modules_["vae"]
        if self._trains_by_steps() and self._codes is not None:
            a, v = self.codec_.static_dim, self.codec_.n_codes
            bias = net.decoder[-1].bias
            with torch.no_grad():  # no draw; a resumed fit's checkpoint then restores the weights
                bias[a:a + v] = torch.as_tensor(self._prevalence_log_odds(), dtype=bias.dtype, device=bias.device)
        step = self._step(phase, net, torch.optim.Adam(net.parameters(), lr=self.lr))
        loss_of = self.codec_.reconstruction_loss
        beta = self._setting("beta")
        self.history_ = []
        state = {"vae": net, **step.state_objects("vae")}
        first = self._checkpoint.resume(phase.name, phase.epochs, state)
        with TrainingProgress(phase.epochs, f"{self.name} training", self.progress, start=first) as bar:
            for epoch in range(first, phase.epochs):
                total, kl_total, count = 0.0, 0.0, 0
                for rows in self._batches(phase, epoch):
                    if len(rows) == 0:
                        step(None)
                        continue
                    x = self._real(rows)
                    logits, kl = step.real(x)
                    loss = loss_of(logits, x) + beta * kl
                    step(loss)
                    total, kl_total, count = total + loss.sum().item(), kl_total + kl.sum().item(), count + len(rows)
                means = {"loss": total / max(count, 1), "kl": kl_total / max(count, 1)}
                self.history_.append(means)
                bar.advance(**means)
                self._checkpoint.epoch_done(phase.name, epoch, state)
        self.modules_["vae"] = step.finish()
        if self._setting("latent_mixture") and not self.private:  # refused under DP: checked in fit
            draws, means = self._training_latents()
            self.modules_["prior"].fit(draws, self.seed, mean=means)
        if self._setting("calibrate") and not self.private and self._codes is not None:  # refused under DP too
            self._calibrate_to_prevalences(self.modules_["vae"].decoder[-1].bias)
        self.train_seconds_ = time.perf_counter() - started

    def _training_latents(self) -> tuple[np.ndarray, np.ndarray]:
        """(:data:`POSTERIOR_DRAWS` latent draws per training patient, their posterior means) from the
        encoder (without DP only: real records)."""
        net = self.modules_["vae"]
        gen = torch.Generator(device=self.device_).manual_seed(self.seed + 17)
        draws, means = [], []
        with torch.no_grad():
            for start in range(0, self.n_train_, 4096):
                mu, log_var = net.encoder(self._real(np.arange(start, min(start + 4096, self.n_train_)))).chunk(2, dim=1)
                sd = torch.exp(0.5 * log_var.clamp(-10.0, 10.0))
                means.append(mu.cpu().numpy())
                draws += [(mu + torch.randn(mu.shape, generator=gen, device=mu.device) * sd).cpu().numpy()
                          for _ in range(POSTERIOR_DRAWS)]
        return np.concatenate(draws).astype(np.float64), np.concatenate(means).astype(np.float64)

    def _generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        prior = self.modules_.get("prior")
        z = prior.sample(n, generator) if prior is not None else torch.randn(n, self.latent_dim, generator=generator,
                                                                             device=self.device_)
        return self.modules_["vae"].decoder(z)
