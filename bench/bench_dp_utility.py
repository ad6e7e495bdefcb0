"""Utility of the DP AC-GAN across privacy budgets on the simulated trial.

For each ε (and ∞: the non-private AC-GAN with the same top-5 selection) and seed: stratified
80/20 split, fit on the training part, sample as many records, and score train-on-synthetic /
train-on-real AUROC for predicting the arm (logistic regression, random forest) on the holdout.
The issue's bar: at ε = 1, logistic regression's ratio ≥ 0.85.

    python bench/bench_dp_utility.py [--epsilons 0.5 1 2 4 inf] [--seeds 0 1 2] [--json bench/results/dp_utility.json]
"""
from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np

import clinsynth
from clinsynth.data.datasets import simulate_trial
from clinsynth.evaluate.utility import tstr
from clinsynth.models.base import library_versions
from clinsynth.pipeline import split_holdout


def run(epsilon: float, seed: int) -> dict:
    df = simulate_trial(seed=seed)
    train, test = split_holdout(df, "arm", seed=seed)
    schema = clinsynth.Schema.infer(train, target="arm")
    start = time.perf_counter()
    if math.isinf(epsilon):
        model = clinsynth.create("acgan", select="top5", seed=seed, progress=False)
    else:
        model = clinsynth.create("dp-acgan", epsilon=epsilon, seed=seed, progress=False)
    model.fit(train, schema)
    seconds = time.perf_counter() - start
    ratios = tstr(train, test, model.sample(len(train), seed=seed), schema, seed=seed).to_dict()["tstr_over_trtr_auroc"]
    ledger = getattr(model, "ledger_", None)
    return {"epsilon": epsilon, "seed": seed, "lr_ratio": ratios["logistic_regression"], "rf_ratio": ratios["random_forest"],
            "spent": ledger.spent() if ledger else math.inf, "delta": ledger.delta if ledger else 0.0,
            "noise_multiplier": getattr(model, "noise_multiplier_", 0.0), "fit_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1, 2, 4, math.inf])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    for epsilon in args.epsilons:
        for seed in args.seeds:
            rows.append(run(epsilon, seed))
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for epsilon in args.epsilons:
        lr = [r["lr_ratio"] for r in rows if r["epsilon"] == epsilon]
        rf = [r["rf_ratio"] for r in rows if r["epsilon"] == epsilon]
        summary[str(epsilon)] = {"lr_ratio_mean": float(np.mean(lr)), "lr_ratio_sd": float(np.std(lr)),
                                 "rf_ratio_mean": float(np.mean(rf)), "rf_ratio_sd": float(np.std(rf)), "runs": len(lr)}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"versions": library_versions(), "summary": summary, "runs": rows}, indent=2,
                                        default=str) + "\n")


if __name__ == "__main__":
    main()
