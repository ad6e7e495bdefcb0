"""The demo end to end, at its default settings: files written and the issue's quality bars.

One full training run (~1 minute on 2 cores) — the bars it checks are the spine's promise:
train-on-synthetic AUROC (logistic regression, arm) ≥ 0.9 × train-on-real, and synthetic per-visit
median SBP within 5 mmHg of the real one on at least 10 of 12 visits in each arm.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

import clinsynth
from clinsynth.pipeline import run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, progress=False)


def test_demo_writes_its_four_outputs(demo):
    out = demo.out_dir
    synth = pd.read_csv(out / "synthetic.csv")
    assert len(synth) == demo.metrics["dataset"]["n_train"] == 5201
    assert (out / "trajectories.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {s["classifier"] for s in metrics["utility"]["scores"]} == {"logistic_regression", "random_forest"}
    assert {s["trained_on"] for s in metrics["utility"]["scores"]} == {"real", "synthetic"}
    model = clinsynth.load(out / "model")
    assert model.name == "acgan" and model.n_train_ == 5201


def test_demo_meets_the_utility_bar(demo):
    ratio = demo.metrics["utility"]["tstr_over_trtr_auroc"]["logistic_regression"]
    assert ratio >= 0.9, demo.metrics["utility"]


def test_demo_meets_the_trajectory_bar(demo):
    gaps = pd.DataFrame(demo.metrics["sbp_median_by_visit"])
    within = (gaps["gap"].abs() <= 5).groupby(gaps["class"]).sum()
    assert (within >= 10).all(), gaps
