"""bench/adapters/mostlyai.py: mostlyai-engine as a peer of bench/compare.py.

The adapter's own logic (encoding types from the public kinds, the budget split, what the engine's
progress log says was spent) runs anywhere; one real DP cell runs in the peer venv
(``bash bench/peers/setup.sh mostlyai``) and is skipped where that venv is absent."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / "bench" / ".peers" / "mostlyai" / "bin" / "python"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(REPO / "bench"))  # bench/compare.py's modules import each other by name
try:
    import compare_datasets
    import compare_grid
finally:
    sys.path.remove(str(REPO / "bench"))
adapter = _load("bench_adapter_mostlyai", REPO / "bench" / "adapters" / "mostlyai.py")

META = {"target": "y", "delta": 1e-5, "columns": [
    {"name": "x", "kind": "continuous", "lower": 0.0, "upper": 10.0, "nullable": True},
    {"name": "n", "kind": "integer", "lower": 0, "upper": 9, "nullable": False},
    {"name": "g", "kind": "categorical", "categories": ["a", "b", "c"], "nullable": True},
    {"name": "y", "kind": "binary", "categories": ["0", "1"], "nullable": False}]}


def test_mostlyai_runs_on_every_dataset_without_dp_and_at_each_epsilon():
    cells = compare_grid.build_cells(list(compare_datasets.DATASETS), ["mostlyai"], None, [None, 1.0, 4.0], [0])
    got = {(c.dataset, c.synthesizer, c.epsilon) for c in cells}
    want = {(d, s, e) for d in compare_datasets.DATASETS for s, e in
            [("tabularargn", None), ("dp-tabularargn", 1.0), ("dp-tabularargn", 4.0)]}
    assert got == want
    assert "mostlyai" in compare_grid.TOOLS
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from adapters import TOOLS as ADAPTERS
    finally:
        sys.path.remove(str(REPO / "bench"))
    assert ADAPTERS["mostlyai"] == "adapters.mostlyai"
    assert {k: v["dp"] for k, v in adapter.SYNTHESIZERS.items()} == {"tabularargn": False, "dp-tabularargn": True}


def test_mostlyai_gets_the_public_kinds_and_a_tenth_of_epsilon_for_value_ranges():
    assert adapter.encoding_types(META) == {"x": "TABULAR_NUMERIC_AUTO", "n": "TABULAR_NUMERIC_AUTO",
                                            "g": "TABULAR_CATEGORICAL", "y": "TABULAR_CATEGORICAL"}
    train = pd.DataFrame({"x": [1.5, np.nan, 3.0], "n": [2.0, 7.0, 9.0], "g": ["a", np.nan, "c"], "y": ["0", "1", "1"]})
    frame = adapter.prepare(train, META)
    assert str(frame["n"].dtype) == "Int64" and frame["n"].tolist() == [2, 7, 9]  # whole numbers stay whole
    assert frame["g"].tolist()[::2] == ["a", "c"] and frame["g"].isna().tolist() == [False, True, False] and frame["x"].isna().tolist() == [False, True, False]
    config = adapter.dp_config(1.0, 1e-5, adapter.VALUE_PROTECTION_SHARE, {})
    assert config == {"max_epsilon": 1.0, "delta": 1e-5, "value_protection_epsilon": pytest.approx(0.1)}
    assert adapter.dp_config(4.0, 1e-6, 0.25, {"noise_multiplier": 1.0})["value_protection_epsilon"] == 1.0
    with pytest.raises(ValueError, match="value_protection_share"):
        adapter.dp_config(1.0, 1e-5, 1.0, {})


def _progress(rows):
    return pd.DataFrame(rows, columns=["epoch", "is_checkpoint", "dp_eps", "dp_delta"])


def test_mostlyai_reported_epsilon_is_the_kept_checkpoints_and_the_overshoot_is_kept_apart():
    # epochs 1-3 under the budget (best validation loss at 3), epoch 4 overshoots and is discarded
    log = _progress([(0.25, 0, 0.31, 1e-5), (1.0, 1, 0.52, 1e-5), (2.0, 1, 0.71, 1e-5), (3.0, 1, 0.97, 1e-5),
                     (4.0, 0, 1.11, 1e-5)])
    report = adapter.privacy_report(log, 1.0)
    assert report == {"epsilon_reported": 0.97, "epoch_kept": 3.0, "epsilon_at_last_epoch_kept_under_budget": 0.97,
                      "epsilon_max_logged": 1.11, "epochs_trained": 4.0, "delta_reported": 1e-5}
    # best validation loss at epoch 1, but the choice looked at epoch 2 too: that is what the release cost
    later = adapter.privacy_report(_progress([(1.0, 1, 0.6, 1e-5), (2.0, 0, 0.9, 1e-5), (3.0, 0, 1.2, 1e-5)]), 1.0)
    assert (later["epsilon_reported"], later["epsilon_at_last_epoch_kept_under_budget"]) == (0.6, 0.9)
    # the first epoch already over the budget: the engine keeps it anyway, and the report shows it
    over = adapter.privacy_report(_progress([(1.0, 1, 1.3, 1e-5)]), 1.0)
    assert over["epsilon_reported"] == 1.3 and "epsilon_at_last_epoch_kept_under_budget" not in over
    assert adapter.privacy_report(None, 1.0) == {}


@pytest.mark.skipif(not VENV_PYTHON.exists(), reason="no mostlyai venv (bash bench/peers/setup.sh mostlyai)")
def test_a_dp_cell_runs_in_the_mostlyai_venv_and_records_what_it_spent(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 2, n)
    train = pd.DataFrame({"x": np.round(rng.uniform(0, 10, n) + y, 2).clip(0, 10), "n": rng.integers(0, 10, n),
                          "g": rng.choice(["a", "b", "c"], n), "y": y.astype(str)})
    train.loc[:20, "x"] = np.nan
    train.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "meta.json").write_text(json.dumps(META))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([str(VENV_PYTHON), str(REPO / "bench" / "run_cell.py"), "--tool", "mostlyai",
                           "--synthesizer", "dp-tabularargn", "--epsilon", "4", "--train", str(tmp_path / "train.csv"),
                           "--meta", str(tmp_path / "meta.json"), "--seed", "0", "--speed-rows", "100",
                           "--out", str(tmp_path / "synth.csv"), "--result", str(tmp_path / "result.json"), "--check"],
                          capture_output=True, text=True, env=env, timeout=600)
    result = json.loads((tmp_path / "result.json").read_text())
    assert done.returncode == 0 and result["error"] is None, done.stdout[-2000:] + done.stderr[-2000:]
    params = result["params"]
    assert (result["n_sampled"], result["delta"], result["tool_version"]) == (n, 1e-5, "2.7.3")
    assert params["differential_privacy"]["max_epsilon"] == 4.0
    assert params["value_protection_epsilon_spent"] == pytest.approx(0.4)  # a tenth of ε on value ranges
    assert params["epochs_trained"] == 1.0 and params["model"] == "MOSTLY_AI/Medium" and params["torch_threads"] == 1
    assert 0.4 < params["epsilon_reported"] <= 4.0  # one epoch of DP-SGD on top of the value ranges
    synth = pd.read_csv(tmp_path / "synth.csv", dtype=str, keep_default_na=False, na_values=[""])
    assert list(synth.columns) == ["x", "n", "g", "y"]
    assert set(synth["y"].dropna()) <= {"0", "1"} and set(synth["g"].dropna()) <= {"a", "b", "c"}  # no _RARE_
    assert any("eps reported" in note for note in result["notes"])
