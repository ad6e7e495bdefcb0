"""What the EHR code models (medGAN, corGAN, VAE) share: the record codec, the data, DP and persistence.

A patient is one dense feature vector, built a batch at a time: the ordinary columns through the
:class:`~clinsynth.data.transforms.TableEncoder` (one-hot categories, scaled numbers, missing
flags, dropout), then the code block — presence 0/1, or counts mapped to [0, 1] by
log1p(min(x, cap)) / log1p(cap). A network's *output* for a count code is a hurdle: one logit for
"present" and one for the count given present (log-scaled between 1 and the cap), so a code
that is rare but, when present, recorded many times keeps both properties. The code matrix stays sparse; only the rows of a batch are ever
dense, so memory is bounded by the batch, not the data (``../shared/DESIGN.md``, "sparse all the way").

Differential privacy is the same for every code model, and it is given, not subclassed: a model
given a ``Privacy`` reads its patients through the private component of
``models/code_training.py`` (charged vocabulary and public facts, Poisson batches, DP-SGD at one
calibrated noise multiplier for every phase), otherwise through the plain one.

A model subclass declares its phases and networks and trains through :meth:`CodeModel._batches`
and :meth:`CodeModel._step`, which are plain minibatch SGD without a budget and DP-SGD with one.
A network of the family (the VAE, medGAN) may, without DP, shift its decoder's code-presence logits
to the training prevalences after training (:meth:`NeuralCodeModel._calibrate_to_prevalences`).

Size: ~570 lines: the record codec (features, loss, decoding) and the base model share one feature
layout; splitting them would only move the layout into a third file.
"""
from __future__ import annotations

import inspect
import math
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from clinsynth import distributed
from clinsynth.data.ehr import CodeMatrix, from_dense_rows
from clinsynth.data.io import write_with
from clinsynth.data.transforms import Span, TableEncoder
from clinsynth.errors import ConfigError, InputError, SchemaError
from clinsynth.models import bundle
from clinsynth.models.base import Conditions, SynthModel
from clinsynth.models.code_calibration import CodeShift
from clinsynth.models.tags import CODE_TAGS
from clinsynth.models.training import CategoricalNoise, SpanActivation, flush_denormals, resolve_device, seeded
from clinsynth.privacy.dpsgd import PrivateGradient
from clinsynth.privacy.budget import Privacy
from clinsynth.schema import CodeBlock, Schema

BINARIZE = ("round", "sample")
#: below this many patients a DP code model warns that its counts drown in the noise (bench/bench_ehr.py small)
DP_FEW_PATIENTS = 1000


# -- the data -----------------------------------------------------------------------------
def split_input(data: CodeMatrix | pd.DataFrame, model: str) -> tuple[CodeMatrix | None, pd.DataFrame | None]:
    """(codes, ordinary columns) of what ``fit`` was given (a table only reaches here for a model
    whose tags take tables)."""
    if isinstance(data, CodeMatrix):
        return data, data.static
    if isinstance(data, pd.DataFrame):
        return None, data
    raise InputError(f"{model}: expected a CodeMatrix or a DataFrame, got {type(data).__name__}")


def static_schema(schema: Schema) -> Schema | None:
    """The ordinary columns' part of a schema (None when there are none)."""
    if not schema.columns:
        return None
    return schema.model_copy(update={"codes": None})


def infer_record_schema(codes: CodeMatrix | None, static: pd.DataFrame | None) -> Schema:
    """A schema for codes (vocabulary read from the data, so not public) plus ordinary columns."""
    block = None if codes is None else CodeBlock(vocabulary=list(codes.vocabulary), binary=codes.binary)
    if static is None or static.shape[1] == 0:
        return Schema(columns=[], codes=block)
    return Schema.infer(static).model_copy(update={"codes": block})


def check_input(schema: Schema, codes: CodeMatrix | None, static: pd.DataFrame | None) -> None:
    """Raise ``SchemaError`` when the data do not match the schema, before any training."""
    if (codes is None) != (schema.codes is None):
        raise SchemaError("the schema has a code block but the data are a plain table" if codes is None
                          else "the data hold a code matrix but the schema has no code block")
    if codes is not None:
        block = schema.codes
        if tuple(block.vocabulary) != codes.vocabulary:
            absent = [c for c in codes.vocabulary if c not in set(block.vocabulary)][:5]
            raise SchemaError("the code matrix's vocabulary differs from the schema's code block"
                              + (f" (codes not in the schema: {', '.join(absent)})" if absent else " (order)")
                              + "; read the codes with read_long(vocabulary=schema.codes.vocabulary)")
        if block.binary != codes.binary:
            raise SchemaError(f"the schema's code block is {'binary' if block.binary else 'counts'}, "
                              f"the code matrix {'binary' if codes.binary else 'counts'}")
    part = static_schema(schema)
    if part is not None:
        if static is None:
            raise SchemaError(f"the schema has ordinary columns ({', '.join(part.names[:5])}) but the data have none; "
                              "attach them with clinsynth.data.ehr.attach_static")
        part.validate(static)
    elif static is not None and static.shape[1]:
        raise SchemaError(f"the data have ordinary columns ({', '.join(map(str, static.columns[:5]))}) the schema does not list")


class RecordCodec:
    """Ordinary columns then codes, as one feature vector; the loss and the decoding that go with it.

    ``count_cap`` (counts only) is the cap of the log scaling: public in DP mode (the code
    block's ``max_count``), the data's largest count otherwise.
    """

    def __init__(self, schema: Schema, table: TableEncoder | None, count_cap: float | None = None):
        self.schema = schema
        self.table = table
        block = schema.codes
        self.static_dim = table.dim if table is not None else 0
        self.n_codes = len(block.vocabulary) if block is not None else 0
        self.binary = block.binary if block is not None else True
        self.count_cap = count_cap
        if not self.binary and not (count_cap and count_cap >= 1):
            raise ConfigError("a count code block needs a count cap ≥ 1")
        self.dim = self.static_dim + self.n_codes
        self.out_dim = self.dim + (0 if self.binary else self.n_codes)  # counts: presence and size logits
        self.static_spans: list[Span] = list(table.spans) if table is not None else []
        self._softmax = [s for s in self.static_spans if s.activation == "softmax"]
        self._linear = torch.tensor([s.start for s in self.static_spans if s.activation == "linear"], dtype=torch.long)

    # -- features ------------------------------------------------------------------------
    def encode_static(self, static: pd.DataFrame | None, n: int) -> np.ndarray:
        if self.table is None:
            return np.zeros((n, 0), dtype=np.float32)
        return self.table.encode(static)

    def scale_codes(self, dense: np.ndarray) -> np.ndarray:
        if self.binary:
            return dense
        return (np.log1p(np.minimum(dense, self.count_cap)) / math.log1p(self.count_cap)).astype(np.float32)

    def features(self, codes: sp.csr_array | None, static_x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Dense features of the patients at ``rows`` (a batch; never the whole table)."""
        parts = [static_x[rows]] if self.static_dim else []
        if codes is not None:
            parts.append(self.scale_codes(codes[rows].toarray()))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    # -- training ------------------------------------------------------------------------
    def reconstruction_loss(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-record negative log-likelihood: cross-entropy per category, squared error per number,
        Bernoulli (binary) or fractional Bernoulli (scaled counts) per code."""
        loss = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for s in self._softmax:
            loss = loss + F.cross_entropy(logits[:, s.start:s.stop], x[:, s.start:s.stop].argmax(1), reduction="none")
        if self._linear.numel():
            idx = self._linear.to(x.device)
            loss = loss + 0.5 * ((logits[:, idx] - x[:, idx]) ** 2).sum(1)
        if self.n_codes:
            a, v = self.static_dim, self.n_codes
            if self.binary:
                loss = loss + F.binary_cross_entropy_with_logits(logits[:, a:], x[:, a:], reduction="none").sum(1)
            else:
                present = (x[:, a:] > 0).to(x.dtype)
                loss = loss + F.binary_cross_entropy_with_logits(logits[:, a:a + v], present, reduction="none").sum(1)
                size = self._size_of_scaled(x[:, a:])
                loss = loss + (present * F.binary_cross_entropy_with_logits(logits[:, a + v:], size, reduction="none")).sum(1)
        return loss

    # counts: x → s = log1p(x) / log1p(cap) (features); given present, size t = log(x) / log(cap) ∈ [0, 1]
    def _size_of_scaled(self, s: torch.Tensor) -> torch.Tensor:
        if self.count_cap <= 1:
            return torch.zeros_like(s)
        count = torch.expm1(s * math.log1p(self.count_cap)).clamp(min=1.0)
        return (torch.log(count) / math.log(self.count_cap)).clamp(0.0, 1.0)

    def _count_given_present(self, size_logits: torch.Tensor) -> torch.Tensor:
        return torch.exp(torch.sigmoid(size_logits) * math.log(max(self.count_cap, 1.0)))

    def activation(self, device: torch.device) -> SpanActivation:
        return SpanActivation(self.static_spans, device)

    def activate(self, logits: torch.Tensor, spans: SpanActivation, tau: float) -> torch.Tensor:
        """Network outputs as a discriminator sees records: relaxed one-hots, numbers, code probabilities."""
        if not self.n_codes:
            return spans(logits, tau)
        a, v = self.static_dim, self.n_codes
        if self.binary:
            codes = torch.sigmoid(logits[:, a:])
        else:  # expected scaled count: P(present) × scale(count given present)
            count = self._count_given_present(logits[:, a + v:])
            codes = torch.sigmoid(logits[:, a:a + v]) * torch.log1p(count) / math.log1p(self.count_cap)
        return torch.cat([spans(logits[:, :a], tau), codes], dim=1) if a else codes

    # -- sampling ------------------------------------------------------------------------
    def decode(self, logits: torch.Tensor, generator: torch.Generator, binarize: str,
               id_start: int, shift: CodeShift | None = None) -> tuple[pd.DataFrame | None, np.ndarray | None]:
        """(ordinary columns, dense code rows) of generated patients; categories are drawn, not argmaxed.

        ``shift`` (a DP network's calibration, ``models/code_calibration.py``) moves the target's
        class logits before the class is drawn and each patient's code logits by its drawn class."""
        static = None
        span = shift.span if shift is not None else None
        drawn = None
        if self.static_dim:
            head = logits[:, :self.static_dim].T.contiguous()
            if span is not None:
                head[span[0]:span[1]] += shift.classes[:, None]
            XT = CategoricalNoise(self.static_spans, logits.device)(head, generator)
            if span is not None:
                drawn = XT[span[0]:span[1]].argmax(0)
            values, codes = self.table.split_features_major(XT.cpu().numpy())
            static = self.table.decode_parts(values.T, codes.T, id_start=id_start)
        if not self.n_codes:
            return static, None
        a, v = self.static_dim, self.n_codes
        code_logits = logits[:, a:a + v]
        if shift is not None:
            code_logits = code_logits + (shift.codes[drawn] if drawn is not None else shift.codes[0])
        p = torch.sigmoid(code_logits)
        present = torch.rand(p.shape, generator=generator, device=p.device) < p if binarize == "sample" else p > 0.5
        if self.binary:  # as booleans: a float copy of a mostly-zero block is only more to scan
            return static, present.cpu().numpy()
        value = self._count_given_present(logits[:, a + v:])
        if binarize == "sample":  # stochastic rounding keeps the mean count
            value = torch.floor(value) + (torch.rand(value.shape, generator=generator, device=value.device) < value - torch.floor(value))
        else:
            value = torch.round(value)
        counts = present * value.clamp(1.0, self.count_cap)
        return static, counts.cpu().numpy().astype(np.float32)

    # -- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"table": self.table.state_dict() if self.table is not None else None, "count_cap": self.count_cap}

    @classmethod
    def from_state_dict(cls, schema: Schema, state: dict[str, Any]) -> RecordCodec:
        part = static_schema(schema)
        table = TableEncoder.from_state_dict(part, state["table"]) if part is not None else None
        return cls(schema, table, state.get("count_cap"))


# -- training phases ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    """One network trained on real records: a DP-SGD charge of its own in DP mode."""

    name: str
    purpose: str
    epochs: int
    batch_size: int


class RealStep:
    """One optimiser step whose loss has a part on real records: plain SGD, or DP-SGD.

    ``real`` is the module for real records (per-record clipping hooks in DP mode) and
    ``public`` the same parameters for everything else (fake records, a generator's step).
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, engine: PrivateGradient | None):
        self.module, self.optimizer, self.engine = module, optimizer, engine
        distributed.broadcast(module)  # several processes: rank 0's starting weights everywhere
        self.real = distributed.own_stream(engine.forward_private if engine is not None else module)
        self.public = engine.public if engine is not None else module

    def __call__(self, per_record_loss: torch.Tensor | None, public_loss: torch.Tensor | None = None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if public_loss is not None:
            public_loss.backward()
        if self.engine is not None:
            self.engine.add_private_gradient(per_record_loss)
        else:
            if per_record_loss is not None and per_record_loss.numel():
                per_record_loss.mean().backward()
            distributed.average_gradients(self.module.parameters())  # several processes: DDP's mean
        self.optimizer.step()

    def finish(self) -> nn.Module:
        """The plain module, hooks removed."""
        return self.engine.detach() if self.engine is not None else self.module

    def state_objects(self, prefix: str) -> dict[str, Any]:
        """What a checkpoint keeps of this step: the optimiser and, under DP, the noise generator."""
        out: dict[str, Any] = {f"{prefix}_optimizer": self.optimizer}
        if self.engine is not None:
            out[f"{prefix}_noise"] = self.engine.generator
        return out


# -- the base model -------------------------------------------------------------------------------
class CodeModel(SynthModel):
    """Base of the models over patients' code vectors (with or without ordinary columns).

    Common parameters (every code model takes them)
    ------------------------------------------------
    privacy : a ``clinsynth.Privacy`` budget (ε, δ, accountant, the ordinary columns' facts'
        share); with one the model is its ``dp-`` alias and every phase below is private.
    max_grad_norm : per-record clipping norm of every private phase.
    vocab_share : the budget's part (μ², see ``share_noise_multiplier``) for choosing the
        vocabulary; spent only when needed (a public vocabulary costs nothing).
    max_codes_per_patient : per-patient cap of the vocabulary mechanism.
    binarize : ``"sample"`` (Bernoulli draws from the decoder's probabilities) or ``"round"``
        (probability > 0.5, as the medGAN code did) for binary codes. Sampling keeps codes the
        decoder is unsure of at their rate; rounding drops them (measured on the simulated EHR,
        medGAN 100 epochs: dimension-wise probability correlation 0.95 sampled, 0.88 rounded).
    device, seed, progress : as for every model.
    """

    tags = CODE_TAGS  # a model that also fits ordinary tables says so: ModelTags("codes", also_tables=True)
    checkpoints = True
    _common = ("privacy", "max_grad_norm", "vocab_share", "max_codes_per_patient", "binarize", "device", "seed",
               "progress")

    def __init__(self, privacy: Privacy | None = None, max_grad_norm: float = 1.0, vocab_share: float = 0.1,
                 max_codes_per_patient: int = 50, binarize: str = "sample", device: str = "auto",
                 seed: int = 0, progress: bool = True):
        self.max_grad_norm = max_grad_norm
        self.vocab_share = vocab_share
        self.max_codes_per_patient = max_codes_per_patient
        self.binarize = binarize
        self.device = device
        self.seed = seed
        self.progress = progress
        self._given(privacy)

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        own = [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]
        return own + [c for c in cls._common if c not in own]

    # -- what a code model implements ---------------------------------------------------------------
    @abstractmethod
    def _phases(self) -> list[Phase]:
        """The networks trained on real records, in training order."""

    @abstractmethod
    def _build(self, dim: int, out_dim: int) -> dict[str, nn.Module]:
        """Fresh networks for records of ``dim`` features whose decoders emit ``out_dim`` logits,
        by name (all of them, also those not saved)."""

    sampling_modules: ClassVar[tuple[str, ...]] = ()
    #: sampling modules that bundles saved by an earlier clinsynth may lack: left as built there
    optional_modules: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def _train(self) -> None:
        """Train ``self.modules_`` through ``self._batches`` / ``self._real`` / ``self._step``."""

    def _validate_model_params(self, schema: Schema) -> None:
        """Raise ``ConfigError`` for the model's own hyperparameters."""

    def _after_training(self) -> None:
        """What a model does with its trained networks while it still holds the records (nothing here)."""

    def _reserved_charges(self) -> list[Any]:
        """Charges the model makes after training, kept within the budget when the phases' noise
        multiplier is calibrated (none here)."""
        return []

    # -- checks ------------------------------------------------------------------------------
    def _validate_params(self, schema: Schema) -> None:
        bad = []
        if not (isinstance(self.vocab_share, (int, float)) and 0 < self.vocab_share < 1):
            bad.append(f"vocab_share={self.vocab_share!r} (between 0 and 1)")
        bad += self._reader().problems(schema)
        if not (isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0):
            bad.append(f"max_grad_norm={self.max_grad_norm!r} (a positive number)")
        if isinstance(self.max_codes_per_patient, bool) or not isinstance(self.max_codes_per_patient, int) \
                or self.max_codes_per_patient < 1:
            bad.append(f"max_codes_per_patient={self.max_codes_per_patient!r} (a whole number ≥ 1)")
        if self.binarize not in BINARIZE:
            bad.append(f"binarize={self.binarize!r} ('round' or 'sample')")
        if bad:
            raise ConfigError(f"{self.name}: invalid settings: {', '.join(bad)}")
        for phase in self._phases():
            if isinstance(phase.epochs, bool) or not isinstance(phase.epochs, int) or phase.epochs < 0:
                raise ConfigError(f"{self.name}: {phase.name} epochs must be a whole number ≥ 0, got {phase.epochs!r}")
            if isinstance(phase.batch_size, bool) or not isinstance(phase.batch_size, int) or phase.batch_size < 1:
                raise ConfigError(f"{self.name}: {phase.name} batch_size must be a whole number ≥ 1, got {phase.batch_size!r}")
        self._validate_model_params(schema)
        resolve_device(self.device)

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, data: CodeMatrix | pd.DataFrame, schema: Schema | None = None, *,
            checkpoint_dir: str | Path | None = None) -> CodeModel:
        """Learn from a code matrix (optionally with ordinary columns, ``CodeMatrix.static``) or,
        for models that take them, an ordinary table. Everything is checked before training.

        ``checkpoint_dir``: write a checkpoint there after every epoch of every phase, and continue
        from one of this same fit (see ``SynthModel.fit`` and ``clinsynth.models.checkpoint``).
        """
        self._refuse_other_kind(data, schema)
        codes, static = split_input(data, self.name)
        schema = schema or infer_record_schema(codes, static)
        check_input(schema, codes, static)
        self.input_kind_ = "codes" if codes is not None else "table"  # some defaults depend on it
        n = len(codes) if codes is not None else len(static)
        self.n_input_ = n  # and some on the number of patients (public, as everywhere in clinsynth)
        self._validate_params(schema)
        self._reader().warn_if_few(n, codes)
        self._checkpoint = self._open_checkpoint(checkpoint_dir, schema, data)
        try:
            resumed = self._checkpoint.resumed
            if resumed is not None:
                schema, codec, codes, static = self._resume_prepared(resumed, codes, static)
            else:
                schema, table, codes, static, cap = self._reader().prepare(schema, codes, static)
                codec = RecordCodec(schema, table, cap)
            self._checkpoint.prepared(schema, codec)
            self.schema_ = schema
            self.codec_ = codec
            self.n_train_ = n
            self._codes = codes.matrix if codes is not None else None
            self._static_x = codec.encode_static(static, n)
            self.device_ = resolve_device(self.device)
            self._reader().calibrate(n)
            with seeded(self.seed, self.device_), flush_denormals():
                self.modules_ = {k: m.to(self.device_) for k, m in self._build(codec.dim, codec.out_dim).items()}
                self._train()
                self._after_training()
            distributed.check_in_sync(self.modules_.values(), self.name)
        finally:
            self._checkpoint = None
        for m in self.modules_.values():
            m.eval()
        del self._codes, self._static_x
        self.encoder_ = codec
        return self

    # -- checkpoints ---------------------------------------------------------------------------
    def _checkpoint_phases(self) -> list[str]:
        return [p.name for p in self._phases()]

    def _reader(self) -> Any:
        """How this model reads its patients (``models/code_training.py``): privately exactly when
        it was given a budget."""
        if getattr(self, "_reading", None) is None:
            from clinsynth.models.code_training import codes_training_for

            self._reading = codes_training_for(self)
        return self._reading

    def _checkpoint_state(self) -> dict[str, Any]:
        return self._reader().checkpoint_state()

    def _load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self._reader().load_checkpoint_state(state)

    def _resume_prepared(self, resumed: dict[str, Any], codes: CodeMatrix | None, static: pd.DataFrame | None):
        """What ``fit`` prepares before training, from a checkpoint: schema, codec and (DP) the
        released vocabulary and public facts — restored, never drawn or charged again."""
        schema = Schema.from_json(resumed["schema"], "checkpointed schema")
        codec = RecordCodec.from_state_dict(schema, resumed["encoder"])
        self._load_checkpoint_state(resumed["model"])
        if codes is not None and tuple(schema.codes.vocabulary) != codes.vocabulary:  # the DP vocabulary
            keep = pd.Index(codes.vocabulary).get_indexer(list(schema.codes.vocabulary))
            codes = CodeMatrix(codes.matrix[:, keep], tuple(schema.codes.vocabulary), codes.patient_ids, codes.binary)
        return schema, codec, codes, self._reader().conform(static)

    def _prevalences(self) -> np.ndarray:
        """Each code's share of the training patients, clipped half a patient from 0 and 1 (a count
        of the records, so never under DP)."""
        if self.private:
            raise RuntimeError("code prevalences are counts of real records: not without a charged release")
        n, v = max(self.n_train_, 1), self.codec_.n_codes
        return np.clip(np.bincount(self._codes.indices, minlength=v) / n, 0.5 / n, 1 - 0.5 / n)

    def _prevalence_log_odds(self) -> np.ndarray:
        """Each code's log-odds of presence in the training patients: where a decoder's code logits start."""
        p = self._prevalences()
        return np.log(p / (1 - p))

    def _real(self, rows: np.ndarray) -> torch.Tensor:
        """The real patients at ``rows`` as a dense batch on the device."""
        x = self.codec_.features(self._codes, self._static_x, np.sort(rows))
        return torch.as_tensor(x, device=self.device_)

    def _batches(self, phase: Phase, epoch: int) -> Iterator[np.ndarray]:
        """Row indices of one epoch: Poisson samples under a budget (what the accountant assumes),
        shuffled fixed-size batches otherwise."""
        return distributed.shard(self._reader().batches(phase, epoch), private=self.private)  # several processes: this one's share

    def _step(self, phase: Phase, module: nn.Module, optimizer: torch.optim.Optimizer) -> RealStep:
        """The update rule for ``module`` in ``phase``: DP-SGD under a budget."""
        return self._reader().step(phase, module, optimizer)

    # -- sample ----------------------------------------------------------------------------------
    def _sample_seed(self, n: int, conditions: Conditions | None, seed: int | None) -> int:
        """The checks every code model's ``sample`` makes, and the seed it draws with (a fresh one for None)."""
        self._check_fitted()
        self._check_n(n)
        if conditions:
            raise ConfigError(f"{self.name} cannot be conditioned (reshaping is an AC-GAN feature)")
        return int(np.random.SeedSequence().generate_state(1)[0]) if seed is None else int(seed)

    # -- persistence -----------------------------------------------------------------------------
    @classmethod
    def _encoder_from_state(cls, schema: Schema, state: dict[str, Any]) -> RecordCodec:
        return RecordCodec.from_state_dict(schema, state)

    def _fitted_config(self) -> dict[str, Any]:
        return {"input_kind": self.input_kind_, **self._reader().fitted()}

    def _save_weights(self, directory: Path) -> None:
        state = {name: self.modules_[name].state_dict() for name in self.sampling_modules}
        write_with(directory / "weights.pt", lambda tmp: torch.save(state, tmp))

    def _restore(self, fitted: dict[str, Any], encoder: RecordCodec, directory: Path) -> None:
        self.device_ = resolve_device(self.device, fallback_to_cpu=True)
        self.input_kind_ = fitted["input_kind"]
        self.history_ = fitted.get("history", [])
        self.codec_ = encoder
        self._reader().restore(fitted)
        state = bundle.load_torch(directory, self.device_)
        built = self._build(encoder.dim, encoder.out_dim)
        self.modules_ = {}
        for name in self.sampling_modules:
            module = built[name].to(self.device_)
            if name in self.optional_modules and name not in state:
                self.modules_[name] = module.eval()
                continue
            bundle.restore_module(directory, module, state, name)
            self.modules_[name] = module.eval()


class NeuralCodeModel(CodeModel):
    """The networks of the code family (vae, medgan, corgan): a generator of logits that the record
    codec decodes into new patients. A counting model of codes (codetree) samples its own way, so
    it is a ``CodeModel`` without this.

    calibration_share : under DP, the budget share (μ², see ``share_noise_multiplier``) of one
        Gaussian release of the patients per class of the schema's target and per class and code,
        to which the trained network's class and code logits are then shifted
        (``models/code_calibration.py``); 0: none. ``None``: ``PRIVATE_SHARE`` (0.5) for a code
        matrix under DP, 0 otherwise. Without DP it must be 0 or ``None``.
    """

    _common = CodeModel._common + ("calibration_share",)

    def __init__(self, calibration_share: float | None = None, **common: Any):
        super().__init__(**common)
        self.calibration_share = calibration_share

    @property
    def calibration_share_(self) -> float:
        """The calibration's share as the fit uses it (see ``calibration_share``)."""
        from clinsynth.models.code_calibration import PRIVATE_SHARE

        if self.calibration_share is not None:
            return float(self.calibration_share)
        return PRIVATE_SHARE if self.private and getattr(self, "input_kind_", "codes") == "codes" else 0.0

    def _validate_params(self, schema: Schema) -> None:
        super()._validate_params(schema)
        share = self.calibration_share
        if share is None:
            return
        if isinstance(share, bool) or not (isinstance(share, (int, float)) and 0 <= share < 1):
            raise ConfigError(f"{self.name}: invalid settings: calibration_share={share!r} (at least 0, below 1)")
        if share > 0 and not self.private:
            raise ConfigError(f"{self.name}: calibration_share={share!r} is a share of a privacy budget; without "
                              "one leave it at 0 or None")

    def _calibrates(self) -> bool:
        return self.private and self.calibration_share_ > 0 and getattr(self, "_codes", None) is not None

    def _class_span(self) -> tuple[int, int] | None:
        """(start, stop) of the schema's target among the decoder's outputs when it is a category of
        the ordinary columns (the classes the DP calibration counts codes in), else None."""
        target = self.schema_.target
        for s in self.codec_.static_spans:
            if target is not None and s.name == target and s.activation == "softmax":
                return s.start, s.stop
        return None

    def _calibration_charge(self) -> Any:
        from clinsynth.models.code_calibration import calibration_charge
        from clinsynth.privacy.ledger import share_noise_multiplier

        span = self._class_span()
        sigma = share_noise_multiplier(self.calibration_share_, self.privacy.epsilon, self.ledger_.delta)
        return calibration_charge(sigma, span[1] - span[0] if span is not None else 1, self.codec_.n_codes)

    def _reserved_charges(self) -> list[Any]:
        return [self._calibration_charge()] if self._calibrates() else []

    def _after_training(self) -> None:
        """Under DP with a calibration share: release the class and code counts (charged) and fit the
        shift of the sampler's logits to them (``models/code_calibration.py``)."""
        self.calibration_ = None
        if not self._calibrates():
            return
        from clinsynth.models.code_calibration import calibration_draws, charged_class_counts, fit_code_shift

        for m in self.modules_.values():
            m.eval()  # draw as ``sample`` does (a generator's batch norm at its running statistics)
        span = self._class_span()
        n_classes = span[1] - span[0] if span is not None else 1
        classes = (self._static_x[:, span[0]:span[1]].argmax(1) if span is not None
                   else np.zeros(self.n_train_, dtype=np.int64))
        rng = np.random.default_rng((self.seed, 0xCA1B))
        counts = charged_class_counts(self.ledger_, self._calibration_charge(), self._codes, classes, n_classes, rng)
        gen = torch.Generator(device=self.device_).manual_seed(self.seed + 41)
        a, v = self.codec_.static_dim, self.codec_.n_codes
        with torch.no_grad():  # a quarter of the plain calibration's draws: the release's noise dominates
            logits = self._generate(max(1024, calibration_draws(v) // 4), gen)
        self.calibration_ = fit_code_shift(logits, span, slice(a, a + v), counts)

    def _fitted_config(self) -> dict[str, Any]:
        shift = getattr(self, "calibration_", None)
        return {**super()._fitted_config(), "calibration": shift.state_dict() if shift is not None else None}

    def _restore(self, fitted: dict[str, Any], encoder: RecordCodec, directory: Path) -> None:
        super()._restore(fitted, encoder, directory)
        self.calibration_ = CodeShift.from_state_dict(fitted.get("calibration"), self.device_)

    @abstractmethod
    def _generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Logits (n × dim) of ``n`` new patients, as the codec's ``decode`` reads them."""

    # -- calibration to the codes' prevalences (without DP) ------------------------------------
    def _check_calibrate(self, calibrate: Any) -> None:
        """Refuse a ``calibrate`` setting that is not a bool, or that is on under DP."""
        if not isinstance(calibrate, bool):
            raise ConfigError(f"{self.name}: invalid hyperparameters: calibrate={calibrate!r} (True or False)")
        if self.private and calibrate:
            raise ConfigError(f"{self.name}: calibrate=True shifts the codes to their prevalences in the real records, an "
                              "uncharged count of them; it is unavailable under DP (set it to False)")

    def _calibrate_to_prevalences(self, bias: torch.Tensor) -> None:
        """After training, add to ``bias`` (the decoder's output bias, one per logit) the shift of the
        code-presence logits that puts each code's mean probability over the sampler's own draws
        (``_generate``, the sampling networks in eval mode) on its training prevalence
        (``models/code_calibration.py``). The shift lives in the decoder's weights, so a bundle
        keeps it. Counts of real records: without DP only."""
        from clinsynth.models.code_calibration import calibration_draws, prevalence_shift

        if self.private:
            raise RuntimeError("calibrating to the code prevalences reads a count of real records: not under DP")
        for name in self.sampling_modules:
            self.modules_[name].eval()  # sampling's batch norm (medGAN's generator), as ``fit`` leaves it
        a, v = self.codec_.static_dim, self.codec_.n_codes
        gen = torch.Generator(device=self.device_).manual_seed(self.seed + 29)
        with torch.no_grad():
            shift = prevalence_shift(self._generate(calibration_draws(v), gen)[:, a:a + v], self._prevalences())
            bias[a:a + v] += shift

    def sample(self, n: int, conditions: Conditions | None = None, seed: int | None = None,
               chunk: int = 4096) -> CodeMatrix | pd.DataFrame:
        """``n`` new patients: a CodeMatrix with new ids (and its ordinary columns), or a table
        for a model fitted on one. Drawn ``chunk`` patients at a time."""
        seed = self._sample_seed(n, conditions, seed)
        gen = torch.Generator(device=self.device_).manual_seed(seed)
        frames: list[pd.DataFrame] = []

        def blocks() -> Iterator[np.ndarray]:
            with torch.inference_mode():
                for start in range(0, int(n), chunk):
                    m = min(chunk, int(n) - start)
                    static, codes = self.codec_.decode(self._generate(m, gen), gen, self.binarize, start,
                                                       getattr(self, "calibration_", None))
                    if static is not None:
                        frames.append(static)
                    if codes is not None:
                        yield codes

        if self.input_kind_ == "table":
            for _ in blocks():
                pass
            return pd.concat(frames, ignore_index=True)
        block = self.schema_.codes
        out = from_dense_rows(blocks(), block.vocabulary, block.binary)
        if frames:
            out = CodeMatrix(out.matrix, out.vocabulary, out.patient_ids, out.binary, pd.concat(frames, ignore_index=True))
        return out
