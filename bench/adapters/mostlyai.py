"""mostlyai-engine adapter: TabularARGN, without DP and with DP-SGD (Opacus); on a long table of visits
(meta.json names a patient column) its sequential mode, in ``adapters/mostlyai_long.py``.

Facts this relies on (mostlyai-engine 2.7.3, read from its source in the peer venv):

- The documented entry point is ``mostlyai.engine.TabularARGN`` (a scikit-learn style
  estimator): ``fit(df)`` runs the engine's own ``split`` → ``analyze`` → ``encode`` →
  ``train`` pipeline in a workspace directory; ``sample(n_samples=...)`` runs
  ``generate`` and reads the table back. Each cell gets its own temporary workspace,
  removed when the process ends.
- **What it is given** (the same public knowledge as the other tools, as far as its API
  takes it): the column kinds from meta.json as its encoding types (categories and
  binaries as ``TABULAR_CATEGORICAL``, numbers as ``TABULAR_NUMERIC_AUTO``, integers as
  pandas ``Int64``), δ = meta.json's δ, and the seed as ``random_state``. Its API has no
  place for public bounds or category lists, so it does **not** get them: it learns value
  ranges and category lists from the data itself (below).
- **What it does on its own**: it holds out 20 % of the rows it is given as a validation
  set (``split(trn_val_split=0.8)``), trains on the other 80 % and keeps the checkpoint with
  the best validation loss, stopping early after 4 epochs without improvement (or at 100
  epochs). Its *value protection* (on by default) drops categories seen fewer than ~5 times
  and clips numbers to non-extreme minima/maxima; the adapter samples with
  ``rare_category_replacement_method="SAMPLE"`` (a documented option) so a dropped
  category is replaced by a frequent one instead of the token ``_RARE_``, which no other
  tool emits and which no declared category matches.
- **Its DP** (``DifferentialPrivacyConfig``): ``max_epsilon`` is the total budget; of it,
  ``value_protection_epsilon`` is spent in ``analyze`` on value ranges and non-rare
  categories (Laplace noisy log-histograms and counts, split evenly over the columns plus
  the row count), and training gets the rest: DP-SGD (Opacus, Poisson sampling,
  ``noise_multiplier`` 1.5, ``max_grad_norm`` 1.0 by default) whose RDP accountant is read
  at the end of each epoch; an epoch that pushes value-protection ε + training ε above
  ``max_epsilon`` is not kept and ends training. The engine's own defaults are
  ``max_epsilon`` 10 with ``value_protection_epsilon`` 1, i.e. a tenth of the budget for
  value ranges; the adapter keeps that share (``value_protection_share``, default 0.1), so
  at ε = 1 it spends 0.1 on ranges and up to 0.9 on training. δ goes whole to the training
  accountant (the value-range mechanisms are pure ε).
- **Where its DP value ranges fail**: the value-range budget is split over every column plus
  the row count, so on a small wide table each column's share is tiny (breast cancer at ε = 4:
  0.4 / 32 = 0.0125 per column on 455 rows) and its noisy histogram finds no range: the engine
  then treats every value as protected and the column comes out all missing. The variant
  ``--param value_protection=false`` (cells labelled ``[value_protection=false]``) turns value
  protection off: the ranges and categories are then read from the data as they are (the
  nearest it has to the public bounds the other tools get, but *not* covered by its ε), and
  the whole budget goes to DP-SGD.
- **What its DP does not cover**: the validation rows (20 % of the training split) pick the
  kept checkpoint and the stopping epoch through their unnoised loss; whether a column has
  missing or negative values, and the digit ranges and decimal precision of numbers, are
  read from the data without noise. If the very first epoch already exceeds the budget the
  engine keeps that model anyway; the adapter then says so in the notes.
- **The ε it reports**: every epoch's total ε (value protection + accountant) is in the
  workspace's ``progress-messages.csv``; the adapter records ``epsilon_reported`` (the ε of
  the checkpoint kept), ``epsilon_at_last_epoch_kept_under_budget`` (what the release really
  cost, since the choice among checkpoints used every epoch up to it),
  ``value_protection_epsilon_spent`` and the epochs trained.
- Threads: one PyTorch thread (the benchmark machine has 2 shared cores); its joblib
  steps use ``cpu_count() - 1`` workers, i.e. one on this machine. Device: CPU.
"""
from __future__ import annotations

import atexit
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

SYNTHESIZERS = {
    "tabularargn": {"dp": False},
    "dp-tabularargn": {"dp": True},
}

# run_cell.py --check: tiny runs for a smoke test (NOT the documented defaults)
CHECK_PARAMS = {
    "tabularargn": {"max_epochs": 1},
    "dp-tabularargn": {"max_epochs": 1},
}

VALUE_PROTECTION_SHARE = 0.1  # the engine's defaults: value_protection_epsilon 1.0 of max_epsilon 10.0
RARE_REPLACEMENT = "SAMPLE"

# TabularARGN constructor arguments a --param may set (the rest are the adapter's job)
_ESTIMATOR_PARAMS = ("model", "max_training_time", "max_epochs", "batch_size", "gradient_accumulation_steps",
                     "enable_flexible_generation", "value_protection")
# DifferentialPrivacyConfig fields a --param may set (max_epsilon and delta come from the cell)
_DP_PARAMS = ("noise_multiplier", "max_grad_norm")
# adapter-level params
_ADAPTER_PARAMS = ("value_protection_share", "rare_category_replacement_method", "sampling_temperature",
                   "subject_share")  # subject_share: long tables only (adapters/mostlyai_long.py)


def version() -> str:
    import mostlyai.engine as engine  # import the tool before run_cell's memory baseline

    return str(engine.__version__)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set by run_cell: the intra-op count is what matters here


def encoding_types(meta: dict) -> dict[str, str]:
    """The engine's encoding type of each column, from meta.json's public kinds."""
    return {c["name"]: "TABULAR_CATEGORICAL" if c["kind"] in ("categorical", "binary") else "TABULAR_NUMERIC_AUTO"
            for c in meta["columns"]}


def prepare(train: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The training frame as the engine reads it: categories as text (missing = None), integers as
    ``Int64`` so the engine sees whole numbers, continuous columns as floats."""
    out = {}
    for c in meta["columns"]:
        s = train[c["name"]]
        if c["kind"] in ("categorical", "binary"):
            out[c["name"]] = pd.Series([str(v) if pd.notna(v) else None for v in s], index=s.index, dtype=object)
        elif c["kind"] == "integer":
            out[c["name"]] = pd.to_numeric(s, errors="raise").round().astype("Int64")
        else:
            out[c["name"]] = pd.to_numeric(s, errors="raise").astype("float64")
    return pd.DataFrame(out, columns=[c["name"] for c in meta["columns"]])


def dp_config(epsilon: float, delta: float, share: float, extra: dict) -> dict:
    """The engine's DifferentialPrivacyConfig fields for a total budget ``epsilon``: ``share`` of it on value ranges."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"value_protection_share must be in [0, 1), got {share}")
    return {"max_epsilon": float(epsilon), "delta": float(delta), "value_protection_epsilon": share * float(epsilon),
            **extra}


def privacy_report(progress: pd.DataFrame, max_epsilon: float) -> dict:
    """What the engine's progress messages say it spent.

    ``epsilon_reported``: ε of the checkpoint kept (the last row flagged ``is_checkpoint``);
    ``epsilon_at_last_epoch_kept_under_budget``: the largest epoch-end ε not above the budget
    (the selection among checkpoints looked at every epoch up to it); ``epsilon_max_logged``:
    the largest ε in the log, including an epoch that overshot and was discarded."""
    out: dict = {}
    if progress is None or progress.empty or "dp_eps" not in progress:
        return out
    eps = pd.to_numeric(progress["dp_eps"], errors="coerce")
    epoch = pd.to_numeric(progress.get("epoch"), errors="coerce")
    kept = progress[pd.to_numeric(progress.get("is_checkpoint"), errors="coerce").fillna(0) > 0]
    if not kept.empty:
        out["epsilon_reported"] = float(pd.to_numeric(kept["dp_eps"], errors="coerce").iloc[-1])
        out["epoch_kept"] = float(pd.to_numeric(kept["epoch"], errors="coerce").iloc[-1])
    ends = eps[(epoch % 1 == 0) & (eps <= max_epsilon)]
    if not ends.empty:
        out["epsilon_at_last_epoch_kept_under_budget"] = float(ends.max())
    if eps.notna().any():
        out["epsilon_max_logged"] = float(eps.max())
    if epoch.notna().any():
        out["epochs_trained"] = float(epoch.max())
    if "dp_delta" in progress and pd.to_numeric(progress["dp_delta"], errors="coerce").notna().any():
        out["delta_reported"] = float(pd.to_numeric(progress["dp_delta"], errors="coerce").dropna().iloc[-1])
    return out


class Fitted:
    """The fitted estimator, its workspace and how to sample from it."""

    def __init__(self, estimator, workspace: Path, replacement: str, temperature: float):
        self.estimator, self.workspace = estimator, workspace
        self.replacement, self.temperature = replacement, temperature


def _workspace() -> Path:
    path = Path(tempfile.mkdtemp(prefix="mostlyai-ws-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _progress(workspace: Path) -> pd.DataFrame | None:
    files = sorted(workspace.glob("ModelStore/**/progress-messages.csv"))
    return pd.read_csv(files[0]) if files else None


def _model_id(workspace: Path) -> str | None:
    """The model the engine trained (``model=None`` means its default, MOSTLY_AI/Medium)."""
    files = sorted(workspace.glob("ModelStore/**/model-configs.json"))
    try:
        return json.loads(files[0].read_text()).get("model_id") if files else None
    except (OSError, ValueError):
        return None


def _value_protection_spent(workspace: Path) -> float | None:
    stats = workspace / "ModelStore" / "tgt-stats" / "stats.json"
    try:
        return json.loads(stats.read_text()).get("value_protection_epsilon_spent")
    except (OSError, ValueError):
        return None


def fit(train, meta, synthesizer, epsilon, delta, seed, params):
    if synthesizer not in SYNTHESIZERS:
        raise ValueError(f"mostlyai: unknown synthesizer {synthesizer!r}; known {sorted(SYNTHESIZERS)}")
    dp = SYNTHESIZERS[synthesizer]["dp"]
    if dp and (epsilon is None or not float(epsilon) > 0):
        raise ValueError(f"mostlyai's {synthesizer} is differentially private: --epsilon > 0 is required")
    if not dp and epsilon is not None:
        raise ValueError(f"mostlyai's {synthesizer} is not differentially private: run it without --epsilon")
    params = dict(params or {})
    unknown = [k for k in params if k not in _ESTIMATOR_PARAMS + _DP_PARAMS + _ADAPTER_PARAMS]
    if unknown:
        raise ValueError(f"mostlyai {synthesizer}: unknown hyperparameters {unknown}; it takes "
                         f"{list(_ESTIMATOR_PARAMS)} (+ DP: {list(_DP_PARAMS)}; adapter: {list(_ADAPTER_PARAMS)})")
    if not dp and any(k in params for k in _DP_PARAMS + ("value_protection_share",)):
        raise ValueError(f"mostlyai {synthesizer}: {[k for k in params if k in _DP_PARAMS + ('value_protection_share',)]}"
                         " are DP parameters")
    _one_thread()
    from mostlyai.engine import TabularARGN
    from mostlyai.engine.domain import DifferentialPrivacyConfig

    share = float(params.pop("value_protection_share", VALUE_PROTECTION_SHARE))
    replacement = str(params.pop("rare_category_replacement_method", RARE_REPLACEMENT)).upper()
    temperature = float(params.pop("sampling_temperature", 1.0))
    dp_extra = {k: float(params.pop(k)) for k in _DP_PARAMS if k in params}
    subject_share = params.pop("subject_share", None)
    kwargs = dict(params)
    if kwargs.get("value_protection") is False:
        share = 0.0  # no value-range step: the whole budget goes to training
    if meta.get("patient"):  # a long table: subject model + sequential visit model
        from adapters import mostlyai_long

        return mostlyai_long.fit(train, meta, synthesizer, epsilon, delta, seed, params, dp=dp, share_vp=share,
                                 replacement=replacement, temperature=temperature, dp_extra=dp_extra, kwargs=kwargs,
                                 subject_share=float(subject_share if subject_share is not None
                                                     else mostlyai_long.SUBJECT_SHARE))
    if subject_share is not None:
        raise ValueError("mostlyai: subject_share applies to long tables (a patient column) only")
    privacy = None
    if dp:
        if delta is None:
            raise ValueError("mostlyai: meta.json has no delta for a DP run")
        privacy = DifferentialPrivacyConfig(**dp_config(float(epsilon), float(delta), share, dp_extra))
    workspace = _workspace()
    estimator = TabularARGN(tgt_encoding_types=encoding_types(meta), differential_privacy=privacy, device="cpu",
                            workspace_dir=str(workspace), random_state=int(seed), verbose=0, **kwargs)
    estimator.fit(prepare(train, meta))
    _one_thread()

    effective = {k: v for k, v in estimator.get_params().items()
                 if k not in ("ctx_data", "workspace_dir", "differential_privacy", "device", "verbose")}
    effective["rare_category_replacement_method"] = replacement
    effective["sampling_temperature"] = temperature
    effective["device"] = "cpu"
    effective["torch_threads"] = 1
    protected = bool(estimator.get_params().get("value_protection", True))
    if protected:
        ranges = ("value ranges and categories learnt from the data by its value protection"
                  + (" under DP" if dp else " (rare categories dropped, extremes clipped)"))
    else:
        ranges = ("value protection off: value ranges and categories read from the data as they are"
                  + (", NOT covered by eps" if dp else ""))
    notes = [f"mostlyai: no public bounds or category lists (its API takes none): {ranges}",
             "mostlyai: trains on 80% of the training split, the other 20% is its validation set "
             "(early stopping, checkpoint choice)",
             f"mostlyai: rare categories resampled from frequent ones at sampling "
             f"(rare_category_replacement_method={replacement})"]
    effective["model"] = _model_id(workspace) or effective.get("model")
    progress = _progress(workspace)
    if progress is not None and "epoch" in progress:
        effective["epochs_trained"] = float(pd.to_numeric(progress["epoch"], errors="coerce").max())
    if dp:
        config = privacy.model_dump()
        effective["differential_privacy"] = config
        effective["epsilon"] = float(epsilon)
        effective["delta"] = float(config["delta"])
        effective["value_protection_share"] = share
        effective["value_protection_epsilon_spent"] = _value_protection_spent(workspace)
        report = privacy_report(progress, float(epsilon))
        effective.update(report)
        on_ranges = f"{config['value_protection_epsilon']:g} on value ranges, the rest" if protected else "all"
        notes.append(f"mostlyai: budget eps={float(epsilon):g}: {on_ranges} on DP-SGD (noise "
                     f"{config['noise_multiplier']:g}, clip {config['max_grad_norm']:g}); validation rows (20%) "
                     "choose the checkpoint without noise")
        reported = report.get("epsilon_reported")
        if reported is not None:
            notes.append(f"mostlyai: eps reported (2 decimals) for the kept checkpoint {reported:.4g} (epoch "
                         f"{report.get('epoch_kept', math.nan):g} of {report.get('epochs_trained', math.nan):g})")
            if reported > float(epsilon) * (1 + 1e-6):
                notes.append(f"mostlyai: the kept model's eps {reported:.4g} is ABOVE the budget {float(epsilon):g} "
                             "(its first epoch already overshot and the engine keeps it)")
        else:
            notes.append("mostlyai: no eps in its progress messages")
    effective["_notes"] = notes
    return Fitted(estimator, workspace, replacement, temperature), effective


def sample(model, n, seed):
    if not isinstance(model, Fitted):  # a long table's two models
        from adapters import mostlyai_long

        return mostlyai_long.sample(model, n, seed)
    import torch

    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    out = model.estimator.sample(n_samples=int(n), rare_category_replacement_method=model.replacement,
                                 sampling_temperature=model.temperature, device="cpu")
    return out.reset_index(drop=True)
