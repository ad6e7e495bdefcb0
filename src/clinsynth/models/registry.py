"""The model registry: a name, where the class lives, and one line saying what it is.

Entries name their class as ``"module:Class"`` and are imported only when used, so listing the
registry (``clinsynth models``) and ``import clinsynth`` never load PyTorch. A new model is a new
file in ``models/`` plus one entry here.

Differential privacy is given, not subclassed: a model whose constructor takes
``privacy: Privacy | None = None`` (stored by ``SynthModel._given``) declares its DP version with
one more line, ``dp_alias("<name>", "<summary>", defaults={...})`` — the name ``dp-<name>``, ε = 1
unless given, and the hyperparameters that suit a budget. ``create("<name>", privacy=Privacy(…))``,
``create("dp-<name>", epsilon=…)``, ``--epsilon`` and saved ``dp-<name>`` bundles then all work.
The older style still works: a ``dp-<name>`` entry (ε among its ``defaults``) naming a class of
its own — one that takes ``epsilon=``, ``delta=`` … itself gets the budget as those keywords; an
empty ``dp-`` subclass of a model that takes ``privacy=`` gets it as a ``Privacy``.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinsynth.errors import BundleError, ConfigError, DataKindError, HyperparameterError
from clinsynth.models.tags import ModelTags, tags_of
from clinsynth.privacy.budget import PRIVACY_FIELDS, Privacy, as_privacy, split_budget

if TYPE_CHECKING:
    from clinsynth.models.base import SynthModel


@dataclass(frozen=True)
class ModelEntry:
    """A registered name: the class it builds, one line on what it is, and hyperparameter defaults.

    A ``dp-`` alias (``private_of`` set) builds the same class as the model it names, given a
    ``Privacy`` (``privacy_defaults`` fill what the caller leaves out: ε = 1) and the
    hyperparameters that suit a budget (``defaults``). See :func:`dp_alias`.
    """

    name: str
    target: str
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)
    private_of: str | None = None
    privacy_defaults: dict[str, Any] = field(default_factory=dict)

    def load_class(self) -> type[SynthModel]:
        if self.private_of is not None:  # an alias builds the class of the model it names
            return _entry(self.private_of).load_class()
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)

    @property
    def is_private(self) -> bool:
        """A DP name: a ``dp-`` alias, or (the older style) a ``dp-`` class of its own."""
        return self.private_of is not None or self.name.startswith("dp-")

    def split_defaults(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(budget defaults of a DP name, or None; the other hyperparameter defaults). An entry
        in the older style keeps ε among its ``defaults``; it counts as a budget default here."""
        if not self.is_private:
            return None, dict(self.defaults)
        budget = {**{k: v for k, v in self.defaults.items() if k in PRIVACY_FIELDS}, **self.privacy_defaults}
        return budget, {k: v for k, v in self.defaults.items() if k not in PRIVACY_FIELDS}

    def tags(self) -> ModelTags:
        """The model's family and capabilities, read from its class (nothing is built)."""
        return tags_of(self.load_class())

    def takes_privacy(self) -> bool:
        """The class is given a ``Privacy`` (``privacy=``); the older style takes ``epsilon=`` … itself."""
        return "privacy" in _constructor_names(self.load_class())


def dp_alias(of: str, summary: str, defaults: dict[str, Any] | None = None, epsilon: float = 1.0) -> ModelEntry:
    """``dp-<of>``: registered model ``of`` given a privacy budget (ε = ``epsilon`` unless the caller
    gives one) and the hyperparameter ``defaults`` measured to suit one. The model's class takes
    ``privacy=`` (see ``SynthModel._given``)."""
    return ModelEntry(f"dp-{of}", f"alias of {of}", summary, dict(defaults or {}), private_of=of,
                      privacy_defaults={"epsilon": epsilon})

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
        dp_alias(
            "acgan",
            "the AC-GAN with differential privacy end to end: DP public facts, DP-SGD on the discriminator, "
            "private epoch selection, one ledger",
            # measured on the simulated trial at ε = 1 (models/acgan_training.py): a small critic trained
            # fast for few epochs in large Poisson batches, the private top-5; quantiles and the weight
            # average off (they cannot be learned from public bounds / measured worse)
            defaults={"epochs": 20, "batch_size": 512, "disc_hidden": 32, "lr_g": 1e-3, "lr_d": 1e-3,
                      "weight_average": 0.0, "numeric_transform": "standard", "select": "top5",
                      "conditional_critic": False, "visit_steps": False, "critic_changes": False,
                      "decoded_view": False, "missed_visits": False},
        ),
        ModelEntry(
            "medgan",
            "clinsynth.models.medgan:MedGAN",
            "medGAN (Choi et al.) for EHR code matrices: pretrained autoencoder, generator in its latent space "
            "(from 1,000 patients: refining draws from a mixture of the training latents), minibatch-averaging "
            "discriminator",
        ),
        dp_alias(
            "medgan",
            "medGAN with DP-SGD on the autoencoder and the discriminator, DP vocabulary, one ledger",
            # few epochs in large batches: every step costs budget (measured on the simulated EHR at ε = 1)
            defaults={"minibatch_averaging": False, "pretrain_epochs": 10, "epochs": 10, "batch_size": 1000},
        ),
        ModelEntry(
            "corgan",
            "clinsynth.models.corgan:CorGAN",
            "corGAN (Torfi & Fox) for EHR code matrices: 1-D convolutional autoencoder (with a dense path from "
            "1,000 patients), convolutional (or dense) generator and critic, Wasserstein loss",
        ),
        dp_alias(
            "corgan",
            "corGAN with DP-SGD on the autoencoder and the critic, DP vocabulary, one ledger",
            defaults={"minibatch_averaging": False, "pretrain_epochs": 10, "epochs": 10, "batch_size": 1000},
        ),
        ModelEntry(
            "vae",
            "clinsynth.models.vae:VAE",
            "variational autoencoder (the medGAN work's baseline) for code matrices, mixed and ordinary tables",
        ),
        dp_alias(
            "vae",
            "the VAE with DP-SGD on the whole network, DP vocabulary and public facts, one ledger",
            defaults={"epochs": 20, "batch_size": 1000},
        ),
        ModelEntry(
            "codetree",
            "clinsynth.models.codetree:CodeTree",
            "Chow–Liu tree over codes and ordinary columns for code matrices: pairwise counts from one sparse "
            "product, a maximum spanning forest of mutual information, patient groups (a Bernoulli mixture) as "
            "codes' second parent, ancestral sampling",
        ),
        dp_alias(
            "codetree",
            "the Chow–Liu tree from two Gaussian count releases (structure, then the chosen edges' tables), "
            "codes capped per patient, DP vocabulary, one ledger",
        ),
        ModelEntry(
            "bayesnet",
            "clinsynth.models.bayesnet:BayesNet",
            "Bayesian network over binned columns (PrivBayes-style): the target and one spanning-tree parent "
            "per column, missingness and dropout as states",
        ),
        dp_alias(
            "bayesnet",
            "the Bayesian network from noisy histograms: bins and structure sized to the budget, one ledger; "
            "the choice for small tables under DP",
            # the structure sized to the budget ("auto"); its tables shrink by `shrinkage` noise sds instead
            defaults={"structure": "auto", "smoothing": 0.0},
        ),
        ModelEntry(
            "visitchain",
            "clinsynth.models.visitchain:VisitChain",
            "patients with their visits (long format): the Bayesian network per patient (columns, number of "
            "visits, start) and a Markov chain over visits (values, missing states, gaps) given the class and "
            "the visits remaining",
        ),
        dp_alias(
            "visitchain",
            "the visit chain with DP per patient: noisy per-patient network and transition tables, each "
            "patient's visits capped and its counts in each table summing to 1, one ledger",
            # coarse views of earlier visits and no pseudo-records: the noisy tables shrink by `shrinkage`
            defaults={"parent_bins": 3, "smoothing": 0.0},
        ),
        ModelEntry(
            "visitrnn",
            "clinsynth.models.visitrnn:VisitRNN",
            "long-format patients (one row per visit): a VAE over the per-patient columns, then a GRU over "
            "visits (gap, labs with missing flags, a stop token), so visit counts vary and times increase",
        ),
        dp_alias(
            "visitrnn",
            "visitrnn with DP per patient: public facts from one row per patient, DP-SGD with Poisson "
            "sampling of patients (one sample = all of a patient's visits), one ledger",
            # fewer, larger Poisson batches: each step costs budget, and per-patient gradients through
            # the GRU's recurrence cost more than the fused non-DP step (bench/bench_visitrnn.py). So few
            # steps (80 at 2,000 patients) move Adam's weights ≤ steps × lr: at 2e-3 the stop token stayed
            # near its start (visits KS 0.736, mean 3.2 visits against 11.5); 1e-2: 0.359, 9.5; 3e-2
            # diverges (0.479) — bench/results/long_visitrnn_lr.json
            defaults={"epochs": 20, "batch_size": 500, "lr": 1e-2},
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
#  code matrices: codetree leads the simulated EHR table without DP (0.997 against medgan's 0.989 and
#   the VAE's 0.987; detection 0.52 against 0.64 / 0.57) and keeps how codes go together best
#   (dimension-wise prediction 103-105 % of the real F1, co-occurrence error 0 % with its patient
#   groups, 14-21 % without); it keeps prevalences at 300 patients × 170 codes (r 0.97-0.98; medgan
#   0.97 calibrated with its small-data schedule), and fits in seconds. Under DP at ε = 1 dp-codetree has 0.851 (detection 0.97; DP-CTGAN 0.842, detection 1.00);
#   since their calibration to a charged release of class and code counts dp-corgan has 0.937, dp-vae
#   0.934 and dp-medgan 0.926 (detection 0.99 / 0.99 / 0.97; dp-corgan fits in 47 s) on that table's sex target (a weak one: real AUROC ~0.60, seed spread
#   ±0.03-0.07), in ~20 s against 2-6 s; at ε = 4 dp-vae 1.005, dp-medgan 1.001, dp-codetree 0.987
#   (detection 0.977 / 0.961 / 0.960). So under DP auto takes dp-medgan (within 0.01 of the best at both
#   ε, the code tree's detection). On bench_ehr.py structure (8,000 patients, ε = 1, seed 0) dp-medgan keeps the
#   prevalences better (r 0.986 vs 0.969) and how codes go together a little worse (dimension-wise
#   prediction 0.06 vs 0.12 of the real F1, co-occurrence 1.46 vs 1.30): neither keeps structure at ε = 1.
#   Below 1,000 patients no DP code model is usable at ε = 1: the model
#   warns (records.py), and auto keeps dp-codetree (prevalence r 0.27-0.38 at 300 × 170 against ≤ 0.11).


def _dp_few_patients() -> int:
    """Below this many patients every DP code model warns (``models/records.py``; imported here, when
    a code matrix is chosen for, so listing models does not load torch)."""
    from clinsynth.models.records import DP_FEW_PATIENTS

    return DP_FEW_PATIENTS


def choose_model(facts: InputFacts) -> ModelChoice:
    """The model ``auto`` runs for these facts, and the sentence that says why."""
    dp = facts.epsilon is not None
    budget = f" at ε = {facts.epsilon:g}" if dp else " without DP"
    size = f"{facts.n_records:,} {'rows' if facts.kind == 'table' else 'patients'} × {facts.n_columns:,} " \
           f"{'codes' if facts.kind == 'codes' else 'columns'}"
    few = _dp_few_patients() if facts.kind == "codes" and dp else 0
    if facts.kind == "codes" and dp and facts.n_records >= few:
        name = "dp-medgan"
        why = (f"a code matrix of {size}{budget}: from {few:,} patients up, DP medGAN calibrated to a charged "
               "release of its class and code counts had the best or near-best train-on-synthetic utility on "
               "the simulated EHR at ε = 1 and 4 with the code tree's detection (bench/compare.py)")
    elif facts.kind == "codes":
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


def models_of(kind: str) -> list[str]:
    """The registered names (``auto`` aside) whose family takes ``kind`` of data ("table", "codes",
    "patients"), by their declared tags; loads each model's module."""
    return [name for name, entry in REGISTRY.items() if name != "auto" and entry.tags().takes(kind)]


def check_model_takes(name: str, kind: str) -> None:
    """Refuse, in one line, registered model ``name`` given ``kind`` of data its family does not model."""
    if name != "auto":
        refuse_kind(name, _entry(name).tags(), kind)


def refuse_kind(name: str, tags: ModelTags, kind: str) -> None:
    """Refuse, in one line that names the models that would take it, ``kind`` of data given to the
    model ``name`` whose family (``tags``) does not model it."""
    from clinsynth.data.kinds import MANY, ONE

    if tags.takes(kind):
        return
    long = (" (or, for a long-format table, a schema that names its patient and time columns, e.g. "
            "Schema.infer(df, patient='id', time='day'))") if tags.input == "patients" else ""
    raise DataKindError(f"{name} models {MANY[tags.input]}, not {ONE[kind]}: name one of "
                      f"{', '.join(models_of(kind))}, or auto{long}")


def _entry(name: str) -> ModelEntry:
    if name not in REGISTRY:
        raise ConfigError(f"unknown model '{name}'; registered models: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _constructor_names(cls: type) -> list[str]:
    names = getattr(cls, "_param_names", None)
    if names is not None:
        return list(names())
    sig = inspect.signature(cls.__init__)
    return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]


def hyperparameters(name: str) -> list[str]:
    """The hyperparameters ``create(name, ...)`` takes, in the model's order (the budget, given as
    ``privacy=`` or ``epsilon=``/``delta=``, is not one of them)."""
    if name == "auto":
        return []
    return [p for p in _constructor_names(_entry(name).load_class()) if p != "privacy"]


def private_entry(name: str) -> ModelEntry:
    """The registry entry that builds model ``name`` with a privacy budget (itself for a DP name)."""
    entry = _entry(name)
    if entry.is_private or name == "auto":
        return entry
    for other in REGISTRY.values():
        if other.private_of == name:
            return other
    legacy = REGISTRY.get(f"dp-{name}")  # a DP class of its own, registered in the older style
    if legacy is not None:
        return legacy
    raise ConfigError(f"model '{name}' has no differentially private version; "
                      f"DP models: {', '.join(n for n, e in REGISTRY.items() if e.is_private)}")


def create(name: str, privacy: Privacy | None = None, **hyperparameters: Any) -> SynthModel:
    """Build a registered model by name, e.g. ``create("acgan", epochs=200)``.

    ``privacy=Privacy(epsilon=1)`` (or the shorthand ``epsilon=1``, ``delta=…``) gives it a budget:
    ``create("medgan", privacy=Privacy(epsilon=1))`` is ``create("dp-medgan", epsilon=1)`` — the
    same model, named ``dp-medgan``, with the DP alias's hyperparameter defaults.
    """
    entry = _entry(name)
    if name == "auto":
        budget, params = split_budget(hyperparameters, privacy)
        return entry.load_class()(privacy=budget, **params)
    if privacy is not None or hyperparameters.get("epsilon") is not None:
        entry = private_entry(name)
    if not entry.takes_privacy():  # the older style: a dp- class of its own takes epsilon=… itself
        if privacy is not None:
            hyperparameters = {**as_privacy(privacy).to_dict(), **hyperparameters}
            hyperparameters = {k: v for k, v in hyperparameters.items()
                               if k not in PRIVACY_FIELDS or k in _constructor_names(entry.load_class())}
        _refuse_unknown(entry.name, hyperparameters, _constructor_names(entry.load_class()))
        return entry.load_class()(**{**entry.defaults, **hyperparameters})
    budget_defaults, defaults = entry.split_defaults()
    budget, params = split_budget(hyperparameters, privacy, budget_defaults)
    if entry.is_private and budget is None:  # a dp- entry registered without a default ε
        raise ConfigError(f"model '{entry.name}' is differentially private: give it a budget, e.g. privacy=Privacy(epsilon=1)")
    _refuse_unknown(entry.name, params, _constructor_names(entry.load_class()))
    return entry.load_class()(**{**defaults, **params}, privacy=budget)


def _refuse_unknown(name: str, params: dict[str, Any], allowed: list[str]) -> None:
    unknown = sorted(set(params) - set(allowed) - {"privacy"})
    if unknown:
        takes = [p for p in allowed if p != "privacy"]
        raise HyperparameterError(f"model '{name}' has no hyperparameter {', '.join(unknown)} (it takes {', '.join(takes)})")


def load(path: str | Path) -> SynthModel:
    """Load a model bundle written by ``model.save(path)``, whatever model it holds."""
    from clinsynth.models import bundle

    config = Path(path) / "config.json"
    if not config.is_file():
        raise BundleError(f"'{path}' is not a clinsynth model bundle (no config.json)")
    name = bundle.entry(Path(path), "config.json", bundle.read_json(Path(path), "config.json"), "model", str)
    return _entry(name).load_class().load(path)


def bundle_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a bundle of model ``name`` saved with ``params``: a ``dp-``
    alias's defaults under them, and the budget as one ``Privacy`` — also from a bundle saved
    before ``Privacy`` existed, which kept ε, δ, the accountant and the share as flat parameters."""
    entry = _entry(name)
    budget_defaults, defaults = entry.split_defaults()
    budget, rest = split_budget(params, params.get("privacy"), budget_defaults)
    rest.pop("privacy", None)
    return {**defaults, **rest, "privacy": budget}


def check_hyperparameters(model: str, params: dict[str, Any], choice: ModelChoice | None = None,
                          reserved: tuple[str, ...] = ("seed", "progress")) -> None:
    """Refuse, in one line, a hyperparameter ``model`` does not take. ``reserved`` names settings
    the caller sets itself (a run's seed and progress), refused as hyperparameters."""
    if model not in REGISTRY or model == "auto":  # an unknown name is reported by create(); auto checks its choice
        return
    allowed = [p for p in hyperparameters(model) if p not in reserved]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        kind = "code matrices" if choice is not None and choice.facts.kind == "codes" else "tables"
        chosen = f" (auto's choice for {kind} like this one; name another model to use its hyperparameters)" if choice else ""
        own = f"; {' and '.join(reserved)} are set by the run, not as hyperparameters" if set(unknown) & set(reserved) else ""
        raise HyperparameterError(f"model '{model}'{chosen} has no hyperparameter {', '.join(unknown)} "
                          f"(it takes {', '.join(allowed)}{own})")


def private_name(model: str, privacy: Privacy | None) -> str:
    """The registry name to build for ``model`` given ``privacy``: its DP alias with a budget; a DP
    name without one is refused (a budget is never picked silently for a release)."""
    if privacy is None:
        if _entry(model).is_private:
            raise ConfigError(f"model '{model}' is differentially private: give it a privacy budget (epsilon)")
        return model
    return private_entry(model).name
