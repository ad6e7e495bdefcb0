"""Reading a model bundle's files, each failure one ``BundleError`` naming the bundle, the file and
the problem.

A bundle on disk can be truncated by a full disk, mixed up by hand or planted by someone else;
loading it must say which file is wrong and never run code from it (weights are read with
``weights_only=True``, tables with ``allow_pickle=False``).
"""
from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clinsynth.errors import BundleError

#: What a user can do about a damaged bundle.
FIX = "refit the model, or restore the bundle from a copy"


def bundle_error(directory: Path, name: str, problem: str, fix: str = FIX) -> BundleError:
    """``model bundle '<dir>': <file> <problem>; <fix>`` — the one shape every load error takes."""
    return BundleError(f"model bundle '{directory}': {name} {problem}; {fix}")


def first_line(error: BaseException) -> str:
    """An exception as one short line (torch and numpy messages run to many)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "…"


def read_json(directory: Path, name: str, kind: type = dict) -> Any:
    """A JSON file of the bundle holding a ``kind`` (an object by default)."""
    path = directory / name
    if not path.is_file():
        raise bundle_error(directory, name, "is missing")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bundle_error(directory, name, f"is damaged: not valid JSON ({first_line(e)}), perhaps truncated") from None
    if not isinstance(value, kind):
        raise bundle_error(directory, name, f"is damaged: it holds a JSON {_json_type(value)} where "
                                            f"{'an object' if kind is dict else 'a ' + _json_type(kind())} belongs")
    return value


def entry(directory: Path, name: str, document: Mapping[str, Any], key: str, kind: type = dict) -> Any:
    """``document[key]``, which must be a ``kind``; else the file is named as damaged."""
    if key not in document:
        raise bundle_error(directory, name, f"is damaged: it has no '{key}' entry")
    value = document[key]
    if not isinstance(value, kind):
        raise bundle_error(directory, name, f"is damaged: its '{key}' entry is a JSON {_json_type(value)}, "
                                            f"not {'an object' if kind is dict else 'a ' + _json_type(kind())}")
    return value


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "true/false", type(None): "null"}.get(
        type(value), "number")


def load_torch(directory: Path, device: Any = "cpu", name: str = "weights.pt") -> dict[str, Any]:
    """A ``torch.save``-d dict of tensors, loaded without running any code from the file."""
    import torch

    path = directory / name
    if not path.is_file():
        raise bundle_error(directory, name, "is missing")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused an object: the file would run code
        raise bundle_error(directory, name, "holds pickled Python objects, not only tensors; clinsynth refuses to "
                                            "load it (unpickling can run code)",
                           "use only bundles that clinsynth wrote") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise bundle_error(directory, name, f"is damaged: not a readable PyTorch file, perhaps truncated "
                                            f"({first_line(e)})") from None
    if not isinstance(state, dict):
        raise bundle_error(directory, name, f"is damaged: it holds a {type(state).__name__}, not named weights")
    return state


def restore_module(directory: Path, module: Any, state: Mapping[str, Any], key: str, name: str = "weights.pt") -> None:
    """Load ``state[key]`` into ``module``, naming the file when it is absent or of another shape."""
    if key not in state or not isinstance(state[key], Mapping):
        raise bundle_error(directory, name, f"is damaged: it has no weights for the {key}")
    try:
        module.load_state_dict(state[key])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise bundle_error(directory, name, f"does not fit the {key} that config.json and schema.json describe "
                                            f"({first_line(e)}): the files come from different models") from None


def load_arrays(directory: Path, name: str, keys: list[str]) -> list[np.ndarray]:
    """Named arrays from an ``np.savez`` file, read without pickles."""
    path = directory / name
    if not path.is_file():
        raise bundle_error(directory, name, "is missing")
    try:
        with np.load(path, allow_pickle=False) as saved:
            absent = [k for k in keys if k not in saved.files]
            if absent:
                raise bundle_error(directory, name, f"is damaged: it has no array {', '.join(absent[:3])}")
            return [saved[k] for k in keys]
    except BundleError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise bundle_error(directory, name, "holds pickled Python objects, not only arrays; clinsynth refuses to "
                                                "load it (unpickling can run code)",
                               "use only bundles that clinsynth wrote") from None
        raise bundle_error(directory, name, f"is damaged: not a readable array file ({first_line(e)})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise bundle_error(directory, name, f"is damaged: not a readable array file, perhaps truncated "
                                            f"({first_line(e)})") from None
