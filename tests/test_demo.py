"""The demo end to end, at its default settings: the release files and the issue's quality bars.

One full run of the default model (auto: the Bayesian network; ~1 minute on 2 cores, most of it evaluation), shared with the browser test through the
``demo_release`` fixture. The bars are the spine's promise: train-on-synthetic AUROC (logistic
regression, arm) ≥ 0.9 × train-on-real, and synthetic per-visit median SBP within 5 mmHg of the
real one on at least 10 of 12 visits in each arm.
"""
from __future__ import annotations

import json

import pandas as pd

import clinsynth
from clinsynth.pipeline import table_hash


def test_demo_writes_the_release_files(demo_release):
    out = demo_release.out_dir
    assert {p.name for p in out.iterdir()} == {"share", "steward", ".clinsynth.json"}
    assert {p.name for p in (out / "share").iterdir()} == {"synthetic.csv", "model", "guarantee.html"}
    assert {p.name for p in (out / "steward").iterdir()} == {"report.html", "metrics.json", "manifest.json"}
    synth = pd.read_csv(out / "share" / "synthetic.csv")
    assert len(synth) == demo_release.metrics["dataset"]["n_train"] == 5201
    metrics = json.loads((out / "steward" / "metrics.json").read_text())
    assert {s["classifier"] for s in metrics["utility"]["scores"]} == {"logistic_regression", "random_forest", "gradient_boosting"}
    assert [v["section"] for v in metrics["verdicts"]] == ["privacy guarantee", "fidelity", "utility", "privacy attacks"]
    model = clinsynth.load(out / "share" / "model")
    assert model.name == "bayesnet" and model.n_train_ == 5201  # auto's choice for a table without DP
    html = (out / "steward" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "no formal privacy guarantee" in html
    page = (out / "share" / "guarantee.html").read_text()
    assert "no formal privacy guarantee" in page and "data:image" not in page


def test_manifest_says_what_made_the_release(demo_release):
    from clinsynth.data.datasets import simulate_trial

    manifest = json.loads((demo_release.out_dir / "steward" / "manifest.json").read_text())
    assert manifest["input"]["table_sha256"] == table_hash(simulate_trial(n=6502, seed=0))
    assert manifest["seeds"] == {"split": 0, "model": 0, "sample": 0, "evaluation": 0}
    assert manifest["model"]["name"] == "bayesnet"
    choice = manifest["model"]["choice"]
    assert choice["by"] == "auto" and choice["chosen"] == "bayesnet" and "5,201 rows × 50 columns" in choice["reason"]
    assert choice["facts"] == {"kind": "table", "n_records": 5201, "n_columns": 50, "n_visit_groups": 3, "epsilon": None}
    assert "auto chose bayesnet" in (demo_release.out_dir / "steward" / "report.html").read_text()
    assert {"torch", "numpy", "pandas", "scikit-learn", "python"} <= set(manifest["versions"])
    assert {"fit", "sample", "evaluate", "report", "total"} <= set(manifest["timings_seconds"])
    assert manifest["split"] == {"n_train": 5201, "n_test": 1301, "stratified_by": "arm"}
    assert set(manifest["files"]) == {"synthetic", "model", "guarantee", "metrics", "report"}
    assert manifest["files"]["synthetic"]["path"] == "share/synthetic.csv"


def test_demo_meets_the_utility_bar(demo_release):
    ratio = demo_release.metrics["utility"]["tstr_over_trtr_auroc"]["logistic_regression"]
    assert ratio >= 0.9, demo_release.metrics["utility"]["tstr_over_trtr_auroc"]


def test_demo_meets_the_trajectory_bar(demo_release):
    sbp = next(s for s in demo_release.metrics["fidelity"]["longitudinal"] if s["group"] == "sbp")
    rows = pd.DataFrame(sbp["rows"]).pivot_table(index=["class", "visit"], columns="source", values="median")
    within = ((rows["synthetic"] - rows["real"]).abs() <= 5).groupby(level="class").sum()
    assert len(within) == 2 and (within >= 10).all(), rows
