"""The end-to-end jobs the CLI exposes, as plain functions: the CLI only parses and prints.

``run_demo`` is the first thing a newcomer runs: the AC-GAN of the SPRINT work on the bundled
simulated trial, from holdout split to synthetic table, model bundle, utility metrics and the
per-visit SBP figure.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from clinsynth.data.io import jsonable, write_table, write_text_atomic
from clinsynth.errors import ConfigError
from clinsynth.schema import Schema


def split_holdout(df: pd.DataFrame, target: str | None, test_size: float = 0.2,
                  seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/holdout split; the holdout never reaches the model."""
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must be between 0 and 1, got {test_size}")
    stratify = df[target].astype(str) if target is not None else None
    train, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=stratify)
    return train.reset_index(drop=True), test.reset_index(drop=True)


@dataclass
class DemoResult:
    out_dir: Path
    files: dict[str, Path]
    metrics: dict[str, Any]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def run_demo(out_dir: str | Path = "clinsynth-demo", n: int = 6502, epochs: int = 150, seed: int = 0,
             progress: bool = True) -> DemoResult:
    """Simulate the trial, train the AC-GAN, sample, score and plot; write it all to ``out_dir``."""
    from clinsynth.data.datasets import simulate_trial
    from clinsynth.evaluate.longitudinal import group_by_name, median_gap
    from clinsynth.evaluate.utility import tstr
    from clinsynth.models.registry import create
    from clinsynth.report.plots import trajectory_plot

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = simulate_trial(n=n, seed=seed)
    train, test = split_holdout(df, "arm", seed=seed)
    schema = Schema.infer(train, target="arm")
    model = create("acgan", epochs=epochs, seed=seed, progress=progress).fit(train, schema)
    synthetic = model.sample(len(train), seed=seed)

    files = {
        "synthetic": write_table(synthetic, out / "synthetic.csv"),
        "model": model.save(out / "model"),
    }
    utility = tstr(train, test, synthetic, schema, seed=seed)
    sbp = group_by_name(schema, "sbp")
    gaps = median_gap(train, synthetic, sbp, by="arm")
    files["trajectories"] = trajectory_plot(train, synthetic, sbp, "arm", out / "trajectories.png", unit="mmHg")
    metrics = {
        "dataset": {"name": "simulated SPRINT-structured trial", "n": n, "seed": seed,
                    "n_train": len(train), "n_test": len(test), "n_synthetic": len(synthetic)},
        "model": {"name": model.name, "params": model.get_params()},
        "utility": utility.to_dict(),
        "sbp_median_by_visit": gaps.to_dict(orient="records"),
        "sbp_visits_within_5mmHg": int((gaps["gap"].abs() <= 5).sum()),
        "sbp_visit_cells": len(gaps),
        "seconds": round(time.perf_counter() - start, 1),
    }
    files["metrics"] = out / "metrics.json"
    write_text_atomic(files["metrics"], json.dumps(jsonable(metrics), indent=2) + "\n")
    return DemoResult(out, files, metrics, seconds=time.perf_counter() - start)
