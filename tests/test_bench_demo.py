"""bench/bench_demo.py: the acgan-vs-TVAE fit timing runs every tool's cell on the same thread count
and reports wall and CPU seconds (one real fast cell; no peer venv needed)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


demo = _load("bench_demo")


def _tiny():
    from clinsynth.data.datasets import load_breast_cancer

    df = load_breast_cancer()
    return df.groupby("diagnosis").head(40)[["mean_radius", "mean_area", "diagnosis"]].reset_index(drop=True)


def test_fits_run_on_the_asked_threads_and_report_cpu_seconds(tmp_path, monkeypatch):
    import compare_datasets

    monkeypatch.setitem(demo.DATASETS, "tiny", compare_datasets.Dataset("tiny", "diagnosis", _tiny))
    monkeypatch.delenv("BENCH_THREADS", raising=False)
    rows = demo.time_fits(tmp_path, ["tiny"], [("clinsynth", "bayesnet"), ("sdv", "tvae")], 120,
                          peers=tmp_path / "no-peers", threads=1)
    ours, peer = rows
    assert ours["status"] == "ok", ours["reason"]
    assert ours["threads"] == 1 and ours["fit_cpu_seconds"] > 0 and ours["fit_seconds"] > 0
    cell = json.loads(next((tmp_path / "compare").rglob("result.json")).read_text())
    assert cell["threads"] == 1  # what the cell's process ran with (bench/run_cell.py reads BENCH_THREADS)
    assert peer["status"] == "not installed" and peer["fit_cpu_seconds"] is None


def test_ratio_of_acgan_to_tvae_in_wall_and_cpu_seconds():
    rows = [{"dataset": "t", "synthesizer": "clinsynth:acgan", "status": "ok", "fit_seconds": 30.0, "fit_cpu_seconds": 12.0},
            {"dataset": "t", "synthesizer": "sdv:tvae", "status": "ok", "fit_seconds": 20.0, "fit_cpu_seconds": 16.0}]
    (r,) = demo.fit_ratios(rows)
    assert (r["ratio"], r["cpu_ratio"], r["met"]) == (1.5, 0.75, True)
    assert demo.fit_ratios(rows[:1])[0]["ratio"] is None
