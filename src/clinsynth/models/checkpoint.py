"""Per-epoch checkpoints of a neural model's fit, so that a killed fit continues where it stopped.

``model.fit(data, schema, checkpoint_dir=d)`` writes, after the epochs of every training phase
(a medGAN's autoencoder pretraining too), one file ``d/checkpoint.pt``, replaced atomically, that
holds everything the next epoch needs:

* the networks, optimisers, weight averages and LR schedulers (their ``state_dict``);
* every random generator: the model's ``torch.Generator`` and ``numpy`` generators and the global
  torch RNG (Gumbel-softmax and a VAE's reparameterisation draw from it);
* the loss history, the fitted schema and encoder state, and what the model computed before
  training (a class × dropout table);
* under DP, the ledger so far, the released public facts and vocabulary, and the calibrated noise
  multiplier — a resumed fit restores them, so nothing is drawn or charged twice and nothing is
  forgotten; the DP-SGD engine's state is its noise generator (our ledger is the accountant).

Epoch snapshots kept for selection are written once each beside it (``snapshots_0001.pt``, …;
``snapshots="disk"`` files stay where they are and are only listed). A resumed fit loads all of
this and runs the remaining epochs; on CPU it ends with the same model and samples as a fit that
was never interrupted.

A checkpoint costs 15-20 ms to write (a few MB: networks and optimiser moments). It is written
after an epoch when :attr:`Checkpoint.min_interval` (1 s) has passed since the last one, and
always after the last epoch of each phase: with epochs of a second or more that is every epoch;
with 0.1-s epochs on a small table the cost stays near 2 % instead of 15-20 %, and a kill loses at
most about a second of training.

A checkpoint belongs to one fit: its fingerprint is the model's name, its parameters (the seed
among them; ``progress`` is display only), the schema and a SHA-256 of the training data. A
directory holding another fit's checkpoint is refused with one line. Everything is written with
``torch.save`` as tensors and plain data and read with ``torch.load(weights_only=True)``: reading a
checkpoint never runs code. The checkpoint sees the training data through the networks and a
hash: it is the steward's, never part of a shared release.

Models say only what state they have: ``Checkpoint.resume`` before a phase and
``Checkpoint.epoch_done`` after each epoch, with the phase's objects by name. The Bayesian
networks fit in seconds and write no checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from clinsynth.data.digest import codes_hash, table_hash
from clinsynth.data.io import jsonable, write_with
from clinsynth.errors import CheckpointError
from clinsynth.models.training import Snapshots

if TYPE_CHECKING:
    from clinsynth.models.base import SynthModel
    from clinsynth.schema import Schema

CHECKPOINT_FORMAT = 1
CHECKPOINT_FILE = "checkpoint.pt"
#: parameters that change what is displayed, not what is learned
DISPLAY_PARAMS = ("progress",)
_KEYS = ("format", "fingerprint", "phase", "epoch", "epochs", "prepared", "model", "objects", "snapshots", "rng",
         "history")


# -- the fingerprint -----------------------------------------------------------------------------
def data_digest(data: Any) -> str:
    """SHA-256 of the training data as given: a table or a ``CodeMatrix`` (the manifest's hashes;
    dtypes and the code block's kind are in the fingerprint's schema)."""
    return table_hash(data) if isinstance(data, pd.DataFrame) else codes_hash(data)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(model: SynthModel, schema: Schema, data: Any) -> dict[str, str]:
    """What makes a fit this fit: model name, parameters (seed included), schema and data."""
    params = {k: v for k, v in model.get_params().items() if k not in DISPLAY_PARAMS}
    return {"model": model.name,
            "parameters": _sha(json.dumps(jsonable(params), sort_keys=True, default=str)),
            "schema": _sha(schema.to_json()),
            "data": data_digest(data)}


# -- plain data and object states ------------------------------------------------------------------
def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not plain data")


def to_json(obj: Any) -> str:
    """Plain data as JSON text (NaN kept), the form model-level state takes in a checkpoint."""
    return json.dumps(obj, default=_plain)


def capture(objects: Mapping[str, Any]) -> dict[str, Any]:
    """The state of each object: ``state_dict()`` of modules, optimisers, schedulers and weight
    averages, the state of torch and numpy generators. ``None`` entries are skipped."""
    out: dict[str, Any] = {}
    for name, obj in objects.items():
        if obj is None:
            continue
        if isinstance(obj, torch.Generator):
            out[name] = obj.get_state()
        elif isinstance(obj, np.random.Generator):
            out[name] = obj.bit_generator.state
        elif hasattr(obj, "state_dict"):
            out[name] = obj.state_dict()
        else:
            raise TypeError(f"checkpoint: no way to save the state of '{name}' ({type(obj).__name__})")
    return out


def restore(objects: Mapping[str, Any], states: Mapping[str, Any]) -> None:
    """Load what :func:`capture` saved back into the same objects."""
    for name, obj in objects.items():
        if obj is None:
            continue
        state = states[name]
        if isinstance(obj, torch.Generator):
            obj.set_state(state)
        elif isinstance(obj, np.random.Generator):
            obj.bit_generator.state = state
        else:
            obj.load_state_dict(state)


def global_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_global_rng_state(state: Mapping[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# -- the directory ---------------------------------------------------------------------------------
def _read(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or a pickle payload: torch raises many types
        raise CheckpointError(f"checkpoint '{path}' is damaged ({type(e).__name__}); delete it to start this fit "
                              "afresh") from None
    if not isinstance(state, dict) or any(k not in state for k in _KEYS):
        raise CheckpointError(f"checkpoint '{path}' is damaged (parts missing); delete it to start this fit afresh")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint '{path}' has format {state['format']}, this clinsynth reads "
                              f"{CHECKPOINT_FORMAT}; delete it to start this fit afresh")
    return state


def _mismatch(saved: Mapping[str, str], key: Mapping[str, str]) -> list[str]:
    out = []
    if saved.get("model") != key["model"]:
        out.append(f"model ({saved.get('model')} there, {key['model']} here)")
    out += [part for part in ("parameters", "schema", "data") if saved.get(part) != key[part]]
    return out


class Checkpoint:
    """One fit's checkpoint directory: where a resumed fit starts, and the writer of each epoch.

    A model's training loop calls :meth:`resume` before each phase (it returns the first epoch to
    run and loads the phase's objects when the fit continues inside that phase) and
    :meth:`epoch_done` after each epoch, both with the phase's objects by name: modules,
    optimisers, schedulers, weight averages, torch/numpy generators and ``Snapshots``. Without a
    directory (``Checkpoint.disabled``) both are free and nothing is written.
    """

    #: seconds that must pass after a checkpoint before the next epoch writes one (a phase's last
    #: epoch always does): bounds the cost of checkpoints on fast epochs
    min_interval: float = 1.0

    def __init__(self, directory: Path | None, model: SynthModel, key: dict[str, str] | None,
                 phases: Sequence[str], saved: dict[str, Any] | None = None):
        self.directory = directory
        self.model = model
        self.key = key
        self.phases = list(phases)
        self._saved = saved
        self._prepared: dict[str, str] | None = None
        self._totals: dict[str, int] = {}
        self._snapshots_written: dict[str, int] = {}
        self._written_at = time.monotonic()
        self.resumed: dict[str, Any] | None = None
        if saved is not None:
            if saved["phase"] not in self.phases:
                raise CheckpointError(f"checkpoint in '{directory}' is damaged (unknown phase {saved['phase']!r}); "
                                      "delete it to start this fit afresh")
            self.resumed = {"schema": saved["prepared"]["schema"], "encoder": json.loads(saved["prepared"]["encoder"]),
                            "model": json.loads(saved["model"])}

    @classmethod
    def disabled(cls, model: SynthModel, phases: Sequence[str]) -> Checkpoint:
        """No directory: a fit that writes no checkpoint."""
        return cls(None, model, None, phases)

    @classmethod
    def open(cls, directory: str | Path, model: SynthModel, schema: Schema, data: Any,
             phases: Sequence[str]) -> Checkpoint:
        """The checkpoint of this fit in ``directory`` (created if absent): continued if it holds
        one of the same fit, refused (``CheckpointError``, a ``ConfigError``) if another's."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise CheckpointError(f"checkpoint_dir '{directory}' is not a directory; give a directory (it is created "
                                  "if absent)")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create checkpoint_dir '{directory}' ({e.strerror or e}); choose a "
                                  "writable place") from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise CheckpointError(f"checkpoint_dir '{directory}' is not writable; choose a writable place")
        key = fingerprint(model, schema, data)
        saved = _read(directory / CHECKPOINT_FILE)
        if saved is not None:
            differ = _mismatch(saved["fingerprint"], key)
            if differ:
                raise CheckpointError(f"checkpoint_dir '{directory}' holds a checkpoint of another fit (its "
                                      f"{', '.join(differ)} differ); resume with the same model, parameters, seed, "
                                      "schema and data, or use an empty directory")
        return cls(directory, model, key, phases, saved)

    # -- what the model calls ----------------------------------------------------------------------
    def prepared(self, schema: Schema, encoder: Any) -> None:
        """The fitted schema and encoder (restored, not refitted, when the fit resumes)."""
        if self.directory is not None:
            self._prepared = {"schema": schema.to_json(), "encoder": to_json(encoder.state_dict())}

    def resume(self, phase: str, epochs: int, objects: Mapping[str, Any]) -> int:
        """The first epoch of ``phase`` to train: 0 on a fresh fit and in phases after the
        checkpoint's, ``epochs`` (none) in phases before it, and in the checkpoint's phase the
        epoch after the saved one — then ``objects``, the history and the global RNG are loaded."""
        self._totals[phase] = epochs
        if self._saved is None:
            return 0
        here, there = self.phases.index(phase), self.phases.index(self._saved["phase"])
        if here != there:
            return epochs if here < there else 0
        saved = self._saved
        snapshots = {n: o for n, o in objects.items() if isinstance(o, Snapshots)}
        others = {n: o for n, o in objects.items() if not isinstance(o, Snapshots)}
        expected = {n for n, o in others.items() if o is not None}
        if expected != set(saved["objects"]) or set(snapshots) != set(saved["snapshots"]):
            raise CheckpointError(f"checkpoint in '{self.directory}' does not fit this model's {phase} phase (it holds "
                                  f"{', '.join(sorted(saved['objects']))}); delete it to start this fit afresh")
        restore(others, saved["objects"])
        for name, snaps in snapshots.items():
            self._restore_snapshots(name, snaps, saved["snapshots"][name])
        self.model.history_ = list(saved["history"])
        set_global_rng_state(saved["rng"], self.model.device_)
        self._saved = None  # loaded once: later phases start fresh
        return int(saved["epoch"]) + 1

    def epoch_done(self, phase: str, epoch: int, objects: Mapping[str, Any]) -> None:
        """Write the state after ``epoch`` (0-based) of ``phase`` — when ``min_interval`` has passed
        since the last checkpoint or the phase ends: snapshot files first, then the checkpoint
        itself, atomically, so a kill at any moment leaves the last whole checkpoint."""
        if self.directory is None:
            return
        last = epoch + 1 >= self._totals.get(phase, epoch + 1)
        if not last and time.monotonic() - self._written_at < self.min_interval:
            return
        try:
            snapshots = {n: self._write_snapshots(n, o) for n, o in objects.items() if isinstance(o, Snapshots)}
            state = {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": self.key,
                "phase": phase,
                "epoch": int(epoch),
                "epochs": int(self._totals.get(phase, epoch + 1)),
                "prepared": self._prepared,
                "model": to_json(self.model._checkpoint_state()),
                "objects": capture({n: o for n, o in objects.items() if not isinstance(o, Snapshots)}),
                "snapshots": snapshots,
                "rng": global_rng_state(self.model.device_),
                "history": list(getattr(self.model, "history_", [])),
            }
            write_with(self.directory / CHECKPOINT_FILE, lambda tmp: torch.save(state, tmp))
            self._written_at = time.monotonic()
        except OSError as e:
            raise CheckpointError(f"could not write the checkpoint in '{self.directory}' ({e.strerror or e}); the "
                                  "previous checkpoint is kept: free space or choose another checkpoint_dir") from None

    # -- snapshots ---------------------------------------------------------------------------------
    def _snapshot_path(self, name: str, index: int) -> Path:
        assert self.directory is not None
        return self.directory / f"{name}_{index + 1:04d}.pt"

    def _write_snapshots(self, name: str, snapshots: Snapshots) -> dict[str, Any]:
        if snapshots.mode == "disk":
            return {"mode": "disk", "files": [str(p) for p in snapshots.paths()]}
        for i in range(self._snapshots_written.get(name, 0), len(snapshots)):
            weights = snapshots[i]
            write_with(self._snapshot_path(name, i), lambda tmp: torch.save(weights, tmp))
        self._snapshots_written[name] = len(snapshots)
        return {"mode": snapshots.mode, "count": len(snapshots)}

    def _restore_snapshots(self, name: str, snapshots: Snapshots, saved: Mapping[str, Any]) -> None:
        if saved["mode"] != snapshots.mode:
            raise CheckpointError(f"checkpoint in '{self.directory}' holds {saved['mode']} snapshots, this fit keeps "
                                  f"{snapshots.mode} ones; delete it to start this fit afresh")
        if saved["mode"] == "disk":
            files = [Path(f) for f in saved["files"]]
            absent = [str(f) for f in files if not f.is_file()]
            if absent:
                raise CheckpointError(f"the epoch snapshots a resumed fit needs are gone ({absent[0]}); keep "
                                      "snapshot_dir with the checkpoint, or delete the checkpoint to start afresh")
            snapshots.restore(files)
            return
        items = []
        for i in range(int(saved["count"])):
            path = self._snapshot_path(name, i)
            try:
                items.append(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as e:
                raise CheckpointError(f"checkpoint snapshot '{path}' is missing or damaged ({type(e).__name__}); "
                                      "delete the checkpoint to start this fit afresh") from None
        snapshots.restore(items)
        self._snapshots_written[name] = len(items)


# -- for the command line ------------------------------------------------------------------------
def latest(directory: str | Path) -> dict[str, Any] | None:
    """What a checkpoint directory holds, for a message such as "resuming acgan: gan epoch 13 of
    40": ``{"model", "phase", "epoch" (epochs of that phase done), "epochs"}``, or None when empty."""
    saved = _read(Path(directory) / CHECKPOINT_FILE)
    if saved is None:
        return None
    return {"model": saved["fingerprint"].get("model"), "phase": saved["phase"], "epoch": int(saved["epoch"]) + 1,
            "epochs": int(saved["epochs"])}


def remove(directory: str | Path) -> None:
    """Delete the files a checkpoint wrote (``checkpoint.pt``, memory snapshots, and the temporary
    files of a write cut short by a kill), and the directory if that leaves it empty; anything
    else in it is left alone."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    ours = [CHECKPOINT_FILE, "snapshots_[0-9][0-9][0-9][0-9].pt", f".{CHECKPOINT_FILE}.*.tmp",
            ".snapshots_[0-9][0-9][0-9][0-9].pt.*.tmp"]
    for path in [p for pattern in ours for p in directory.glob(pattern)]:
        path.unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        pass
