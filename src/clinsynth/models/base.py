"""The contract every model honours, so the CLI, selection and benchmarks treat them alike.

:class:`SynthModel` is what all three model families share (parameters, privacy given, bundle,
checkpoints); :class:`TableModel` is the table family's contract (a DataFrame in, a DataFrame
out). The code-matrix family's base is ``models/records.py`` ``CodeModel``, the patients'
``models/long_base.py`` ``PatientModel``; each declares its family as a tag
(``models/tags.py``), which is what the CLI, the pipeline and ``auto`` read.

After scikit-learn: ``__init__`` only stores hyperparameters; ``fit`` validates, learns and
returns ``self``; learned state ends in ``_``; ``get_params`` rebuilds a model from its config;
``sample`` before ``fit`` raises ``NotFittedError``. A bundle on disk holds the weights, the
schema, the encoder state, the config and the library versions.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import replace
import platform
from abc import ABC, abstractmethod
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from clinsynth.data.io import jsonable
from clinsynth.data.transforms import TableEncoder
from clinsynth.errors import BundleError, ConfigError, NotFittedError, SchemaError
from clinsynth.models import bundle
from clinsynth.models.tags import TABLE_TAGS, ModelTags
from clinsynth.privacy.budget import Privacy, as_privacy
from clinsynth.schema import Schema, check_trainable

BUNDLE_FORMAT = 1
Conditions = Mapping[str, Mapping[str, float] | str | int]


def library_versions() -> dict[str, str]:
    """Versions of what made a model or a run; a bundle records them."""
    out = {"python": platform.python_version()}
    for pkg in ("clinsynth", "torch", "numpy", "pandas", "scikit-learn", "opacus", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def allocate(n: int, probs: np.ndarray) -> np.ndarray:
    """Split ``n`` rows over classes in proportion to ``probs`` exactly (largest remainder)."""
    raw = probs * n
    counts = np.floor(raw).astype(int)
    short = n - counts.sum()
    if short:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts


class SynthModel(ABC):
    """Base class of registered generative models, whatever their family (``tags``).

    A model is *given* its privacy: ``privacy`` (a :class:`~clinsynth.Privacy`, or ``None``) is
    one of its parameters, stored by :meth:`_given`. With a budget, the model's ``name`` is its
    registry alias ``dp-<name>``, the public facts it learns its encoder from are one charged
    release (a table model's :meth:`TableModel._prepare`), and the ledger, the released facts and the DP-SGD noise
    multiplier are saved and restored here, for every model alike.
    """

    name: ClassVar[str]
    #: the family: what ``fit`` takes and ``sample`` gives (``models/tags.py``)
    tags: ClassVar[ModelTags]
    privacy: Privacy | None = None

    def _given(self, privacy: Privacy | dict[str, Any] | None) -> None:
        """Store the budget this model is given; with one, it answers to its ``dp-`` name."""
        self.privacy = as_privacy(privacy)
        if self.privacy is not None and not type(self).name.startswith("dp-"):  # (a dp- subclass keeps its name)
            self.name = f"dp-{type(self).name}"  # the registry alias: reports, manifests and bundles say it

    @property
    def private(self) -> bool:
        """Whether this model was given a privacy budget."""
        return self.privacy is not None

    # -- scikit-learn style parameters ---------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def resolved_params(self) -> dict[str, Any]:
        """The parameters as the fit used them: a ``None`` left for the data to decide (a VAE's
        epochs, the network's bins, δ) replaced by what was decided, so a release's manifest says
        what made it and passing these back reproduces the fit."""
        out = {name: self._resolved(name) if value is None else value for name, value in self.get_params().items()}
        ledger = getattr(self, "ledger_", None)
        if out.get("privacy") is not None and out["privacy"].delta is None and ledger is not None:
            out["privacy"] = replace(out["privacy"], delta=ledger.delta)
        return out

    def _resolved(self, name: str) -> Any:
        """What the fit chose for a parameter given as ``None`` (``None`` while unfitted or undecided)."""
        ledger = getattr(self, "ledger_", None)
        if name == "delta" and ledger is not None:
            return ledger.delta
        return getattr(self, f"{name}_", None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "encoder_", None) is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {self.name} model is not fitted yet: call fit(df, schema) or clinsynth.load(dir) first")

    # -- public API (each family states its data) ------------------------------------------
    @abstractmethod
    def fit(self, data: Any, schema: Schema | None = None, *, checkpoint_dir: str | Path | None = None) -> SynthModel:
        """Validate ``data`` (the family's kind) against ``schema``, then train; returns ``self``."""

    @abstractmethod
    def sample(self, n: int, conditions: Conditions | None = None, seed: int | None = None) -> Any:
        """``n`` new synthetic records (or patients) of the family's kind."""

    def _refuse_other_kind(self, data: Any, schema: Schema | None) -> None:
        """Refuse, in one line before anything is read, data of a kind this model's family does not
        model (its ``tags``): e.g. a long-format table given to a model of independent records, whose
        visits are not independent and whose DP guarantee per row would not be per patient."""
        from clinsynth.data.kinds import data_kind
        from clinsynth.models.registry import refuse_kind

        refuse_kind(self.name, self.tags, data_kind(data, schema))

    @staticmethod
    def _check_n(n: Any, what: str = "rows") -> None:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"n must be a positive whole number of {what}, got {n!r}")

    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write the bundle so that it appears whole or not at all.

        ``path`` must be absent, empty or a previous clinsynth bundle (replaced only with
        ``overwrite``, and then only the files it listed are removed); a folder holding anything
        else is refused, never deleted. See :mod:`clinsynth.data.output_dir`.
        """
        from clinsynth.data.output_dir import staged_output

        self._check_fitted()
        with staged_output(path, "bundle", overwrite=overwrite) as stage:
            self.write_bundle(stage.dir)
        return Path(path)

    def write_bundle(self, directory: str | Path) -> Path:
        """Write the bundle's files into ``directory`` (made if absent), a folder of our own: a
        release's staging folder, or :meth:`save`'s."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "bundle_format": BUNDLE_FORMAT,
            "model": self.name,
            "params": jsonable(self.get_params()),
            "fitted": jsonable({"n_train": self.n_train_, **self._fitted_config(), **self._fitted_privacy()}),
            "versions": library_versions(),
        }
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (directory / "schema.json").write_text(self.schema_.to_json() + "\n")
        (directory / "encoder.json").write_text(json.dumps(self.encoder_.state_dict(), indent=1) + "\n")
        self._save_weights(directory)
        return directory

    @classmethod
    def load(cls, path: str | Path) -> SynthModel:
        """The model a bundle holds; a damaged bundle raises one ``BundleError`` naming the file
        and the problem (never a traceback from json, torch or numpy)."""
        path = Path(path)
        needed = ["config.json", "schema.json", "encoder.json"]
        absent = [f for f in needed if not (path / f).is_file()]
        if absent:
            raise BundleError(f"model bundle '{path}' is missing {', '.join(absent)}")
        config = bundle.read_json(path, "config.json")
        if config.get("bundle_format") != BUNDLE_FORMAT:
            raise BundleError(f"model bundle '{path}' has format {config.get('bundle_format')}, this clinsynth reads {BUNDLE_FORMAT}")
        takes_privacy = "privacy" in cls._param_names()
        names = (cls.name, f"dp-{cls.name}") if takes_privacy and not cls.name.startswith("dp-") else (cls.name,)
        if config.get("model") not in names:
            raise BundleError(f"model bundle '{path}' holds a '{config.get('model')}' model, not '{cls.name}'")
        params = bundle.entry(path, "config.json", config, "params")
        fitted = bundle.entry(path, "config.json", config, "fitted")
        try:
            if takes_privacy:  # the dp- alias's defaults and one Privacy, also from a bundle saved before it existed
                from clinsynth.models.registry import bundle_params

                params = bundle_params(config["model"], params)
            model = cls(**params)
            if model.name != config["model"]:
                raise ValueError(f"its parameters make a '{model.name}' model, the bundle names '{config['model']}'")
        except (TypeError, ValueError) as e:
            raise bundle.bundle_error(path, "config.json", f"is damaged: its parameters do not fit a {cls.name} "
                                                           f"model ({bundle.first_line(e)})") from None
        try:
            model.schema_ = Schema.load(path / "schema.json")
        except SchemaError as e:
            problem = e.problems[0] if e.problems else str(e).split(": ", 1)[-1]
            raise bundle.bundle_error(path, "schema.json", f"is damaged ({problem})") from None
        model.n_train_ = fitted.get("n_train")
        state = bundle.read_json(path, "encoder.json")
        try:
            encoder = cls._encoder_from_state(model.schema_, state)
        except (SchemaError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise bundle.bundle_error(path, "encoder.json", f"does not fit schema.json ({bundle.first_line(e)}): "
                                                            "one of them was changed or comes from another model") from None
        try:
            model._restore_privacy(fitted)
            model._restore(fitted, encoder, path)
        except BundleError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            what = f"no '{e.args[0]}' entry" if isinstance(e, KeyError) and e.args else bundle.first_line(e)
            raise bundle.bundle_error(path, "config.json", f"does not restore a {cls.name} model ({what}): its "
                                                           "fitted state, the schema and the weights do not fit together") from None
        model.encoder_ = encoder
        return model

    @classmethod
    @abstractmethod
    def _encoder_from_state(cls, schema: Schema, state: dict[str, Any]) -> Any:
        """The fitted encoder from ``encoder.json``."""

    # -- checkpoints (neural models) ---------------------------------------------------------
    #: whether ``fit(checkpoint_dir=...)`` writes per-epoch checkpoints (models that fit in seconds do not)
    checkpoints: ClassVar[bool] = False
    _checkpoint: Any = None

    def _checkpoint_phases(self) -> list[str]:
        """The training phases, in order, that checkpoints name."""
        return ["train"]

    def _open_checkpoint(self, checkpoint_dir: str | Path | None, schema: Schema, data: Any) -> Any:
        """This fit's ``Checkpoint`` (a disabled one without a directory), or None for a model
        that writes none."""
        if not self.checkpoints:
            return None
        from clinsynth.models.checkpoint import Checkpoint

        if checkpoint_dir is None:
            return Checkpoint.disabled(self, self._checkpoint_phases())
        return Checkpoint.open(checkpoint_dir, self, schema, data, self._checkpoint_phases())

    def _resuming(self) -> bool:
        """True while a fit continues from a checkpoint (what came before training is restored)."""
        return self._checkpoint is not None and self._checkpoint.resumed is not None

    def _checkpoint_state(self) -> dict[str, Any]:
        """Plain data the model computed before training besides schema and encoder (a condition
        table; under DP the ledger, released facts, RNG state), for the checkpoint."""
        return {}

    def _load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Take back what ``_checkpoint_state`` gave, instead of computing (or charging) it again."""

    # -- what a model implements -----------------------------------------------------------
    def _validate_params(self, schema: Schema) -> None:
        """Raise ``ConfigError`` for hyperparameters that cannot work (before any training)."""

    # -- what a budget adds to a bundle and a checkpoint (every model given one alike) ------------
    def _fitted_privacy(self) -> dict[str, Any]:
        """The ledger, the released facts' record and the DP-SGD noise multiplier, for the bundle."""
        if self.privacy is None:
            return {}
        return {"ledger": self.ledger_.state_dict(), "noise_multiplier": getattr(self, "noise_multiplier_", None),
                "facts_release": getattr(self, "facts_", None) or {}}

    def _restore_privacy(self, fitted: dict[str, Any]) -> None:
        if self.privacy is None:
            return
        from clinsynth.privacy.ledger import PrivacyLedger

        self.ledger_ = PrivacyLedger.from_state_dict(fitted["ledger"])
        self.noise_multiplier_ = fitted.get("noise_multiplier")
        self.facts_ = fitted.get("facts_release", {})
        self.release_ = None

    @abstractmethod
    def _fitted_config(self) -> dict[str, Any]: ...

    @abstractmethod
    def _save_weights(self, directory: Path) -> None: ...

    @abstractmethod
    def _restore(self, fitted: dict[str, Any], encoder: Any, directory: Path) -> None: ...


class ClassMix(ABC):
    """Sampling that can reshape the target's class mix (``conditions``): tables and patients."""

    name: str
    schema_: Schema

    def _class_probs(self, conditions: Conditions | None) -> np.ndarray:
        """Class probabilities for sampling: the learned mix, or the one asked for."""
        base = np.asarray(self._default_class_probs(), dtype=float)
        if not conditions:
            return base
        target = self.schema_.target
        unknown = [c for c in conditions if c != target]
        if unknown:
            raise ConfigError(f"{self.name} can condition only on its target '{target}', not on {', '.join(map(repr, unknown))}")
        categories = self.schema_.column(target).categories or []
        labels = [str(c) for c in categories]
        spec = conditions[target]
        if not isinstance(spec, Mapping):
            spec = {str(spec): 1.0}
        probs = np.zeros(len(labels))
        for key, weight in spec.items():
            if str(key) not in labels:
                raise ConfigError(f"condition {target}={key!r}: no such class; classes are {', '.join(labels)}")
            if not np.isfinite(weight) or weight < 0:
                raise ConfigError(f"condition {target}={key}: weight must be a non-negative number, got {weight!r}")
            probs[labels.index(str(key))] = float(weight)
        if probs.sum() <= 0:
            raise ConfigError(f"condition on '{target}': the weights sum to zero")
        return probs / probs.sum()

    @abstractmethod
    def _default_class_probs(self) -> np.ndarray:
        """The class mix the model learned."""


class TableModel(ClassMix, SynthModel):
    """Base class of the table family: a DataFrame of records in, a DataFrame of records out."""

    tags = TABLE_TAGS

    # -- the table contract --------------------------------------------------------------------
    def fit(self, df: pd.DataFrame, schema: Schema | None = None, *,
            checkpoint_dir: str | Path | None = None) -> TableModel:
        """Validate ``df`` against ``schema`` (inferred if absent), then train.

        ``checkpoint_dir``: a neural model writes a checkpoint there after every epoch and, when
        the directory already holds one of this same fit (model, parameters, seed, schema, data),
        continues from it — ending with the model an uninterrupted fit gives; one of another fit
        is refused (``ConfigError``). See ``clinsynth.models.checkpoint``. Models that fit in
        seconds (the Bayesian networks) write none and just fit.
        """
        if not isinstance(df, pd.DataFrame) and hasattr(df, "state_counts"):
            return self._fit_table(df, schema)
        self._refuse_other_kind(df, schema)
        schema = schema or Schema.infer(df)
        schema.validate(df)
        check_trainable(df)
        self._validate_params(schema)
        df = df.reset_index(drop=True)
        self._checkpoint = self._open_checkpoint(checkpoint_dir, schema, df)
        try:
            resumed = self._checkpoint.resumed if self._checkpoint is not None else None
            if resumed is None:
                self.schema_, encoder, df = self._prepare(df, schema)
            else:  # what _prepare made (DP: released and charged) comes back from the checkpoint
                self.schema_ = Schema.from_json(resumed["schema"], "checkpointed schema")
                encoder = self._encoder_from_state(self.schema_, resumed["encoder"])
                self._load_checkpoint_state(resumed["model"])
                df = self._conform(df)
            if self._checkpoint is not None:
                self._checkpoint.prepared(self.schema_, encoder)
            self.n_train_ = len(df)
            self._fit(df, encoder)
        finally:
            self._checkpoint = None
        self.encoder_ = encoder
        return self

    def sample(self, n: int, conditions: Conditions | None = None, seed: int | None = None) -> pd.DataFrame:
        """Draw ``n`` synthetic records; ``conditions`` reshapes the target's class mix."""
        self._check_fitted()
        self._check_n(n)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        return self._sample(int(n), self._class_probs(conditions), int(seed))

    @classmethod
    def _encoder_from_state(cls, schema: Schema, state: dict[str, Any]) -> TableEncoder:
        return TableEncoder.from_state_dict(schema, state)

    # -- under a budget ----------------------------------------------------------------------
    def _checkpoint_state(self) -> dict[str, Any]:
        """Under DP: the ledger, the released facts and the RNG state."""
        if self.privacy is None:
            return {}
        return {"ledger": self.ledger_.state_dict(), "release": self.release_.state_dict(),
                "rng": self._rng.bit_generator.state}

    def _load_checkpoint_state(self, state: dict[str, Any]) -> None:
        if self.privacy is None:
            return
        from clinsynth.privacy.ledger import PrivacyLedger
        from clinsynth.privacy.statistics import DPRelease

        self.ledger_ = PrivacyLedger.from_state_dict(state["ledger"])
        self.release_ = DPRelease.from_state_dict(state["release"])
        self.facts_ = self.release_.record()
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]

    def _conform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Records as the encoder expects them: under a budget, clipped into the released schema."""
        if getattr(self, "release_", None) is None:
            return frame
        from clinsynth.privacy.conform import conform

        return conform(frame, self.release_)

    def _numeric_transform(self) -> str:
        return getattr(self, "numeric_transform", "standard")

    def _prepare(self, df: pd.DataFrame, schema: Schema) -> tuple[Schema, TableEncoder, pd.DataFrame]:
        """The schema, fitted encoder and training frame the model learns from.

        Without a budget the encoder learns its scaling from the data. With one, only the schema's
        public facts and one charged Gaussian release of the others (``privacy.statistics``) reach
        it, and the records are clipped into what was released; the ledger is opened here, and
        the release's generator (``self._rng``, seeded by ``seed``) draws the model's later noise.
        """
        in_memory = isinstance(df, pd.DataFrame)
        if self.privacy is None:
            encoder = TableEncoder(schema, self._numeric_transform())
            if in_memory:
                return schema, encoder.fit(df), df
            return schema, encoder.fit_from_statistics(df.numeric_scaling(schema)), df
        from clinsynth.privacy.conform import conform
        from clinsynth.privacy.statistics import charged_release

        self.ledger_ = self.privacy.ledger(len(df))
        self._rng = np.random.default_rng(self.seed)
        extra, purpose = self.release_extra or (0.0, "")
        self.release_ = charged_release(df, schema, self.ledger_, self.privacy.stats_share, self._rng,
                                        extra=extra, extra_purpose=purpose)
        self.facts_ = self.release_.record()
        released = self.release_.schema
        encoder = TableEncoder(released, self._numeric_transform()).fit_from_statistics(self.release_.numeric)
        return released, encoder, conform(df, self.release_) if in_memory else df.conformed(self.release_)

    def _fit_table(self, table: Any, schema: Schema | None) -> TableModel:
        """``fit`` on an engine's table (``clinsynth.engines.duckdb_engine.DuckDBTable``): the schema
        inferred from its sample and completed from the whole table, the encoder and (under a budget)
        the public facts from its aggregates, then the model's own counts. A model that learns from
        counts alone (so the rows can stay in DuckDB, only GROUP BY results coming back) says so by
        defining ``_fit_engine(table, encoder)``; the others are refused here."""
        fit_engine = getattr(self, "_fit_engine", None)
        if fit_engine is None:
            raise ConfigError(f"{self.name} learns from the records themselves, so it needs the table in memory "
                              "(--engine pandas); only the counting models (bayesnet, dp-bayesnet) fit through DuckDB")
        schema = schema or table.infer_schema()
        self._refuse_other_kind(None, schema)
        table.check(schema)
        self._validate_params(schema)
        self.schema_, encoder, table = self._prepare(table, schema)
        self.n_train_ = len(table)
        fit_engine(table, encoder)
        self.encoder_ = encoder
        return self

    #: a query of the model's own answered inside the public-facts release under a budget:
    #: (squared L2 weight of one record, purpose), e.g. the AC-GAN's class × dropout table
    release_extra: ClassVar[tuple[float, str] | None] = None

    @abstractmethod
    def _fit(self, df: pd.DataFrame, encoder: TableEncoder) -> None: ...

    @abstractmethod
    def _sample(self, n: int, class_probs: np.ndarray, seed: int) -> pd.DataFrame: ...
