"""The model registry: a name, where the class lives, and one line saying what it is.

Entries name their class as ``"module:Class"`` and are imported only when used, so listing the
registry (``clinsynth models``) and ``import clinsynth`` never load PyTorch. A new model is a new
file in ``models/`` plus one entry here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinsynth.errors import BundleError, ConfigError

if TYPE_CHECKING:
    from clinsynth.models.base import SynthModel


@dataclass(frozen=True)
class ModelEntry:
    name: str
    target: str
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)

    def load_class(self) -> type[SynthModel]:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


REGISTRY: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in [
        ModelEntry(
            "acgan",
            "clinsynth.models.acgan:ACGAN",
            "class-conditional GAN (SPRINT work): label-embedded noise, convolution over the visit grid, "
            "real/fake + class heads",
        ),
        ModelEntry(
            "dp-acgan",
            "clinsynth.models.dp_acgan:DPACGAN",
            "the AC-GAN with differential privacy end to end: DP public facts, DP-SGD on the discriminator, "
            "private epoch selection, one ledger",
        ),
        ModelEntry(
            "medgan",
            "clinsynth.models.medgan:MedGAN",
            "medGAN (Choi et al.) for EHR code matrices: pretrained autoencoder, shortcut generator in its "
            "latent space, minibatch-averaging discriminator",
        ),
        ModelEntry(
            "dp-medgan",
            "clinsynth.models.medgan:DPMedGAN",
            "medGAN with DP-SGD on the autoencoder and the discriminator, DP vocabulary, one ledger",
            # few epochs in large batches: every step costs budget (measured on the simulated EHR at ε = 1)
            defaults={"epsilon": 1.0, "minibatch_averaging": False, "pretrain_epochs": 10, "epochs": 10,
                      "batch_size": 1000},
        ),
        ModelEntry(
            "corgan",
            "clinsynth.models.corgan:CorGAN",
            "corGAN (Torfi & Fox) for EHR code matrices: 1-D convolutional autoencoder, convolutional (or dense) "
            "generator and critic, Wasserstein loss",
        ),
        ModelEntry(
            "dp-corgan",
            "clinsynth.models.corgan:DPCorGAN",
            "corGAN with DP-SGD on the autoencoder and the critic, DP vocabulary, one ledger",
            defaults={"epsilon": 1.0, "minibatch_averaging": False, "pretrain_epochs": 10, "epochs": 10,
                      "batch_size": 1000},
        ),
        ModelEntry(
            "vae",
            "clinsynth.models.vae:VAE",
            "variational autoencoder (the medGAN work's baseline) for code matrices, mixed and ordinary tables",
        ),
        ModelEntry(
            "dp-vae",
            "clinsynth.models.vae:DPVAE",
            "the VAE with DP-SGD on the whole network, DP vocabulary and public facts, one ledger",
            defaults={"epsilon": 1.0, "epochs": 20, "batch_size": 1000},
        ),
        ModelEntry(
            "codetree",
            "clinsynth.models.codetree:CodeTree",
            "Chow–Liu tree over codes and ordinary columns for code matrices: pairwise counts from one sparse "
            "product, a maximum spanning forest of mutual information, ancestral sampling",
        ),
        ModelEntry(
            "dp-codetree",
            "clinsynth.models.codetree:DPCodeTree",
            "the Chow–Liu tree from two Gaussian count releases (structure, then the chosen edges' tables), "
            "codes capped per patient, DP vocabulary, one ledger",
            defaults={"epsilon": 1.0},
        ),
        ModelEntry(
            "bayesnet",
            "clinsynth.models.bayesnet:BayesNet",
            "Bayesian network over binned columns (PrivBayes-style): the target and one spanning-tree parent "
            "per column, missingness and dropout as states",
        ),
        ModelEntry(
            "dp-bayesnet",
            "clinsynth.models.bayesnet:DPBayesNet",
            "the Bayesian network from noisy histograms: bins and structure sized to the budget, one ledger; "
            "the choice for small tables under DP",
        ),
    ]
}


def list_models() -> list[ModelEntry]:
    """Every registered model, in registry order."""
    return list(REGISTRY.values())


def _entry(name: str) -> ModelEntry:
    if name not in REGISTRY:
        raise ConfigError(f"unknown model '{name}'; registered models: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def create(name: str, **hyperparameters: Any) -> SynthModel:
    """Build a registered model by name, e.g. ``create("acgan", epochs=200)``."""
    entry = _entry(name)
    return entry.load_class()(**{**entry.defaults, **hyperparameters})


def load(path: str | Path) -> SynthModel:
    """Load a model bundle written by ``model.save(path)``, whatever model it holds."""
    from clinsynth.models import bundle

    config = Path(path) / "config.json"
    if not config.is_file():
        raise BundleError(f"'{path}' is not a clinsynth model bundle (no config.json)")
    name = bundle.entry(Path(path), "config.json", bundle.read_json(Path(path), "config.json"), "model", str)
    return _entry(name).load_class().load(path)


def private_model(model: str, epsilon: float | None, delta: float | None, params: dict[str, Any]) -> str:
    """With ``--epsilon``, the DP version of ``model`` and the budget in ``params``."""
    if epsilon is None:
        if delta is not None:
            raise ConfigError("--delta needs --epsilon (the privacy budget)")
        if model.startswith("dp-"):
            raise ConfigError(f"model '{model}' is differentially private: give its budget with --epsilon (e.g. --epsilon 1)")
        return model
    private = model if model.startswith("dp-") else f"dp-{model}"
    if private not in REGISTRY:
        raise ConfigError(f"model '{model}' has no differentially private version; "
                          f"DP models: {', '.join(n for n in REGISTRY if n.startswith('dp-'))}")
    params["epsilon"] = epsilon
    if delta is not None:
        params["delta"] = delta
    return private
