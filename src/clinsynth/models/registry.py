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
            "auto",
            "clinsynth.models.auto:AutoModel",
            "the default: chooses one of the models below by the rule of `choose_model` (input kind, size, ε), "
            "and says which and why",
        ),
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
        ModelEntry(
            "visitchain",
            "clinsynth.models.visitchain:VisitChain",
            "patients with their visits (long format): the Bayesian network per patient (columns, number of "
            "visits, start) and a Markov chain over visits (values, missing states, gaps) given the class and "
            "the visits remaining",
        ),
        ModelEntry(
            "dp-visitchain",
            "clinsynth.models.visitchain:DPVisitChain",
            "the visit chain with DP per patient: noisy per-patient network and transition tables, each "
            "patient's visits capped and its counts in each table summing to 1, one ledger",
            defaults={"epsilon": 1.0},
        ),
        ModelEntry(
            "visitrnn",
            "clinsynth.models.visitrnn:VisitRNN",
            "long-format patients (one row per visit): a VAE over the per-patient columns, then a GRU over "
            "visits (gap, labs with missing flags, a stop token), so visit counts vary and times increase",
        ),
        ModelEntry(
            "dp-visitrnn",
            "clinsynth.models.visitrnn:DPVisitRNN",
            "visitrnn with DP per patient: public facts from one row per patient, DP-SGD with Poisson "
            "sampling of patients (one sample = all of a patient's visits), one ledger",
            # fewer, larger Poisson batches: each step costs budget, and per-patient gradients through
            # the GRU's recurrence cost more than the fused non-DP step (bench/bench_visitrnn.py)
            defaults={"epsilon": 1.0, "epochs": 20, "batch_size": 500},
        ),
    ]
}


# -- auto: the default model ------------------------------------------------------------------
@dataclass(frozen=True)
class InputFacts:
    """What ``auto`` may know before a record is read: the input's kind and shape and the budget.

    The number of records is the one count it uses; DP releases treat it as public here as
    everywhere in clinsynth (δ is set from it), never the values.
    """

    kind: str  # "table" (one row per record), "codes" (a patient × code matrix) or "patients" (long format)
    n_records: int  # rows, or patients
    n_columns: int  # columns, or codes (plus attached per-patient columns)
    n_visit_groups: int = 0  # longitudinal groups of a wide visit table
    epsilon: float | None = None


@dataclass(frozen=True)
class ModelChoice:
    name: str  # a registry name: the dp- version when ε is given
    reason: str  # one sentence for the console, the report header and the manifest
    facts: InputFacts

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"chosen": self.name, "by": "auto", "reason": self.reason, "facts": asdict(self.facts)}


# The rule, from bench/compare.py (TSTR/TRTR AUROC ratio, mean of LR/RF/GB and 3 seeds; fit seconds),
# recorded in bench/results/compare.md and the README:
#  tables: bayesnet is best or within 0.01 of the best on breast cancer (0.992 vs the VAE's 0.999),
#   WHAS500 (1.003), FLCHAIN (0.996) and the 49-column trial (0.967) and fits in 0.1-0.2 s against
#   3-120 s for the neural models; under DP dp-bayesnet leads every table at ε = 1 and 4 (0.955-0.993;
#   the best peer 0.82-0.96, dp-acgan 0.34-0.85), in 1.2-1.4 s.
#  code matrices: codetree leads the simulated EHR table without DP (0.996 against medgan's 0.963 and
#   the VAE's 0.814; detection 0.56 against 0.99) and is the only code model that keeps how codes go
#   together (dimension-wise prediction 101-104 % of the real F1, co-occurrence error 14-21 %); it
#   keeps prevalences at 300 patients × 170 codes (r 0.96-0.98; medgan 0.91-0.94 with its small-data schedule), and fits in
#   seconds. Under DP dp-codetree leads at ε = 1 (0.851; dp-medgan 0.837, dp-vae 0.834, DP-CTGAN 0.842)
#   with detection 0.97 against 1.00. Below 1,000 patients no DP code model is usable at ε = 1: the
#   model warns (records.py).


def choose_model(facts: InputFacts) -> ModelChoice:
    """The model ``auto`` runs for these facts, and the sentence that says why."""
    dp = facts.epsilon is not None
    budget = f" at ε = {facts.epsilon:g}" if dp else " without DP"
    size = f"{facts.n_records:,} {'rows' if facts.kind == 'table' else 'patients'} × {facts.n_columns:,} " \
           f"{'codes' if facts.kind == 'codes' else 'columns'}"
    if facts.kind == "codes":
        name = "dp-codetree" if dp else "codetree"
        why = (f"a code matrix of {size}{budget}: the code tree had the best train-on-synthetic utility and the "
               "lowest detection on the simulated EHR (bench/compare.py), keeps how codes go together, does not "
               "collapse on a few hundred patients and fits in seconds")
    elif facts.kind == "table":
        name = "dp-bayesnet" if dp else "bayesnet"
        why = (f"a table of {size}{budget}: the Bayesian network had the best or near-best train-on-synthetic "
               "utility on every benchmark table (bench/compare.py) and fits in seconds")
    elif facts.kind == "patients":
        name = "dp-visitchain" if dp else "visitchain"
        why = (f"a long-format table of {size}{budget}: the visit chain draws each patient's columns once, then "
               "their visits in order (gaps, labs and missing values given the previous visit), fits in seconds"
               + (" and bounds each patient's contribution, so ε is per patient" if dp else ""))
    else:
        raise ConfigError(f"auto chooses for a 'table', 'codes' or 'patients' input, not {facts.kind!r}")
    return ModelChoice(name, f"auto chose {name} — {why}", facts)


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
    unknown, allowed = _unknown_hyperparameters(name, hyperparameters) if name != "auto" else ([], [])  # auto: on its choice
    if unknown:
        raise ConfigError(f"model '{name}' has no hyperparameter {', '.join(unknown)} (it takes {', '.join(allowed)})")
    return entry.load_class()(**{**entry.defaults, **hyperparameters})


def _unknown_hyperparameters(name: str, params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The names in ``params`` that model ``name`` does not take, and those it takes."""
    allowed = list(_entry(name).load_class()._param_names())
    return sorted(set(params) - set(allowed)), allowed


def load(path: str | Path) -> SynthModel:
    """Load a model bundle written by ``model.save(path)``, whatever model it holds."""
    from clinsynth.models import bundle

    config = Path(path) / "config.json"
    if not config.is_file():
        raise BundleError(f"'{path}' is not a clinsynth model bundle (no config.json)")
    name = bundle.entry(Path(path), "config.json", bundle.read_json(Path(path), "config.json"), "model", str)
    return _entry(name).load_class().load(path)


def check_hyperparameters(model: str, params: dict[str, Any], choice: ModelChoice | None = None) -> None:
    """Refuse, in one line, a hyperparameter ``model`` does not take (``--param``, ``--epochs``, ``--select``)."""
    if model not in REGISTRY or model == "auto":  # an unknown name is reported by create(); auto checks its choice
        return
    _, allowed = _unknown_hyperparameters(model, {})
    allowed = [p for p in allowed if p not in ("seed", "progress")]  # the CLI's --seed and --quiet
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        kind = "code matrices" if choice is not None and choice.facts.kind == "codes" else "tables"
        chosen = f" (auto's choice for {kind} like this one; name another with --model)" if choice else ""
        raise ConfigError(f"--param: model '{model}'{chosen} has no hyperparameter {', '.join(unknown)} "
                          f"(it takes {', '.join(allowed)}; seed and progress are --seed and --quiet)")


def private_model(model: str, epsilon: float | None, delta: float | None, params: dict[str, Any]) -> str:
    """With ``--epsilon``, the DP version of ``model`` and the budget in ``params``."""
    if epsilon is None:
        if delta is not None:
            raise ConfigError("--delta needs --epsilon (the privacy budget)")
        if model.startswith("dp-"):
            raise ConfigError(f"model '{model}' is differentially private: give its budget with --epsilon (e.g. --epsilon 1)")
        return model
    private = model if model.startswith("dp-") or model == "auto" else f"dp-{model}"
    if private not in REGISTRY:
        raise ConfigError(f"model '{model}' has no differentially private version; "
                          f"DP models: {', '.join(n for n in REGISTRY if n.startswith('dp-'))}")
    params["epsilon"] = epsilon
    if delta is not None:
        params["delta"] = delta
    return private
