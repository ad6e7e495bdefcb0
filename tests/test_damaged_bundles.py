"""Damaged model bundles (issue 25, point 10): `clinsynth sample` and `clinsynth.load` on a truncated,
mixed-up or planted bundle say in one line which bundle, which file and what is wrong."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import clinsynth
from clinsynth.cli import main
from clinsynth.data.datasets import simulate_trial
from clinsynth.data.ehr import attach_static
from clinsynth.data.ehr_simulator import simulate_ehr
from clinsynth.errors import BundleError
from clinsynth.models.registry import create

WEIGHTS = {"acgan": "weights.pt", "bayesnet": "tables.npz", "vae": "weights.pt"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """One small fitted bundle per family: a GAN, the Bayesian network, a code model."""
    root = tmp_path_factory.mktemp("bundles")
    trial = simulate_trial(120, seed=1)
    codes, demographics = simulate_ehr(150, 25, seed=3)
    create("acgan", epochs=1, progress=False).fit(trial).save(root / "acgan")
    create("bayesnet", progress=False).fit(trial).save(root / "bayesnet")
    create("vae", epochs=1, progress=False).fit(attach_static(codes, demographics)).save(root / "vae")
    return {name: root / name for name in WEIGHTS}


class Planted:
    """A pickle payload: unpickling it would run a shell command."""

    def __reduce__(self):
        return os.system, ("echo planted > /dev/null",)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_json(path: Path, change: Callable[[dict], object]) -> None:
    """Rewrite a JSON file after ``change`` edited its document in place."""
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _drop_schema_column(bundle: Path) -> None:
    def drop(schema: dict) -> None:
        grouped = {c for g in schema["longitudinal"] for c in g["columns"]}
        victim = next(c for c in schema["columns"] if c["name"] not in grouped and c["name"] != schema["target"]
                      and c["kind"] != "id")
        schema["columns"].remove(victim)
    _edit_json(bundle / "schema.json", drop)


def _plant_pickle(bundle: Path, weights: str) -> None:
    if weights.endswith(".pt"):
        torch.save({"generator": Planted()}, bundle / weights)
    else:  # every table there, the first an object array (np.savez pickles it)
        with np.load(bundle / weights) as saved:
            tables = {k: saved[k] for k in saved.files}
        tables["t0"] = np.array([Planted()], dtype=object)
        np.savez(bundle / weights, **tables)


DAMAGES: dict[str, tuple[Callable[[Path, str], None], str, str]] = {
    # name: (damage, file named, phrase)
    "truncated encoder": (lambda b, w: _truncate(b / "encoder.json"), "encoder.json", "not valid JSON"),
    "truncated weights": (lambda b, w: _truncate(b / w), "{weights}", "perhaps truncated"),
    "truncated config": (lambda b, w: _truncate(b / "config.json"), "config.json", "not valid JSON"),
    "config is a list": (lambda b, w: (b / "config.json").write_text("[1, 2]"), "config.json",
                         "holds a JSON list where an object belongs"),
    "config without fitted state": (lambda b, w: _edit_json(b / "config.json", lambda c: c.pop("fitted")),
                                    "config.json", "has no 'fitted' entry"),
    "config without params": (lambda b, w: _edit_json(b / "config.json", lambda c: c.pop("params")),
                              "config.json", "has no 'params' entry"),
    "config with unknown params": (lambda b, w: _edit_json(b / "config.json", lambda c: c["params"].update(bogus=1)),
                                   "config.json", "parameters do not fit"),
    "config fitted state emptied": (lambda b, w: _edit_json(b / "config.json", lambda c: c.update(fitted={})),
                                    "config.json", "does not restore"),
    "schema column dropped": (lambda b, w: _drop_schema_column(b), "schema.json", "does not fit"),
    "truncated schema": (lambda b, w: _truncate(b / "schema.json"), "schema.json", "is damaged"),
    "encoder is a list": (lambda b, w: (b / "encoder.json").write_text("[]"), "encoder.json", "holds a JSON list"),
    "encoder scale not finite": (lambda b, w: _edit_json(b / "encoder.json", _break_scale), "encoder.json",
                                 "does not fit schema.json"),
    "pickle payload": (lambda b, w: _plant_pickle(b, w), "{weights}", "holds pickled Python objects"),
    "weights missing": (lambda b, w: (b / w).unlink(), "{weights}", "is missing"),
    "weights of another shape": (lambda b, w: _other_weights(b, w), "{weights}", "does not fit"),
}


def _break_scale(state: dict) -> None:
    """A scaled column's scale, or a quantile column's first knot, made NaN (json writes and reads it back)."""
    columns = state["columns"] if "columns" in state else state["table"]["columns"]
    column = next(c for c in columns.values() if isinstance(c, dict) and ("scale" in c or "knots" in c))
    if "scale" in column:
        column["scale"] = float("nan")
    else:
        column["knots"][0] = float("nan")


def _other_weights(bundle: Path, weights: str) -> None:
    if weights.endswith(".pt"):
        state = torch.load(bundle / weights, weights_only=True)
        key = next(iter(state))
        name = next(k for k, v in state[key].items() if v.ndim == 2)
        state[key][name] = torch.zeros(3, 3)
        torch.save(state, bundle / weights)
    else:
        with np.load(bundle / weights) as saved:
            tables = {k: saved[k] for k in saved.files}
        tables["t0"] = np.zeros((1, 2))
        np.savez(bundle / weights, **tables)


def _damaged(bundles: dict[str, Path], model: str, damage: str, tmp_path: Path) -> tuple[Path, str, str]:
    bundle = tmp_path / f"{model}-bundle"
    shutil.copytree(bundles[model], bundle)
    act, file, phrase = DAMAGES[damage]
    act(bundle, WEIGHTS[model])
    return bundle, file.format(weights=WEIGHTS[model]), phrase


@pytest.mark.parametrize("model", list(WEIGHTS))
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_bundle_is_one_line(bundles, model, damage, tmp_path, capsys):
    bundle, file, phrase = _damaged(bundles, model, damage, tmp_path)
    out = tmp_path / "s.csv"
    code = main(["sample", str(bundle), "-n", "5", "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 1, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in stdout + err
    assert f"'{bundle}'" in err, err
    assert file in err and phrase in err, err
    assert not out.exists()
    with pytest.raises(BundleError):
        clinsynth.load(bundle)


def test_pickle_payload_never_runs(bundles, tmp_path, monkeypatch):
    planted = [_damaged(bundles, model, "pickle payload", tmp_path / model)[0] for model in ("acgan", "bayesnet")]
    ran = []
    monkeypatch.setattr(os, "system", lambda command: ran.append(command))
    for bundle in planted:
        with pytest.raises(BundleError, match="refuses to load it"):
            clinsynth.load(bundle)
    assert ran == []


@pytest.mark.parametrize("model", list(WEIGHTS))
def test_intact_bundles_still_load_and_sample(bundles, model, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["sample", str(bundles[model]), "-n", "20", "--out", str(out)]) == 0, capsys.readouterr().err
    assert out.stat().st_size > 0
