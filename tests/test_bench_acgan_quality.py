"""bench/bench_acgan_quality.py's diagnosis: where a detector finds synthetic trial rows."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_acgan_quality", REPO / "bench" / "bench_acgan_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_diagnosis_finds_trajectories_broken_apart():
    from clinsynth.data.datasets import simulate_trial

    bench = _load()
    real = simulate_trial(n=400, seed=1).drop(columns=["participant_id"])
    rng = np.random.default_rng(0)
    fake = real.copy()
    meds = [c for c in real.columns if c.startswith("meds_m")]
    for c in meds:  # each visit shuffled on its own: right marginals, no trajectory
        fake[c] = fake[c].to_numpy()[rng.permutation(len(fake))]
    out = bench.diagnose(real, fake)
    assert set(out["group_detection"]) == {"baseline", "sbp", "dbp", "meds"}
    assert out["group_detection"]["meds"] > 0.8 and out["group_detection"]["baseline"] < 0.6
    assert min(out["meds"]["real"]["consecutive_r"]) > 0.8 and max(out["meds"]["synthetic"]["consecutive_r"]) < 0.3
    assert out["meds"]["synthetic"]["decreasing_share"][3] > 3 * out["meds"]["real"]["decreasing_share"][3]
    assert any("meds" in p["pair"] for p in out["invented_correlations"])
