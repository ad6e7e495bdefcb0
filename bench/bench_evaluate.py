"""The evaluation at scale: 100,000 synthetic rows against 100,000 real training rows (plus a
25,000-row real holdout) of 50 mixed columns, timed per step, with the process's peak memory.

The issue's bar: under 90 s on 2 cores, peak memory under 4 GB. The table is a seeded mixture:
25 skewed continuous columns with 10–40 % missing, 5 counts, 19 categories of 2–8 levels and a
binary target that depends on several of them; "synthetic" is an independent draw of the same
process, which is what a good generator would hand over.

    python bench/bench_evaluate.py [--rows 100000] [--json bench/results/evaluate.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import clinsynth
from clinsynth.models.base import library_versions


def mixed_table(n: int, seed: int) -> pd.DataFrame:
    """50 columns: 25 continuous (log-normal, partly missing), 5 integer, 19 categorical, 1 target."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    cols: dict[str, np.ndarray] = {}
    for j in range(25):
        x = np.exp(0.5 * latent[:, j % 3] + rng.normal(scale=0.6, size=n)) * (10 + j)
        x[rng.random(n) < 0.1 + 0.3 * (j % 4) / 3] = np.nan
        cols[f"lab_{j:02d}"] = np.round(x, 2)
    for j in range(5):
        cols[f"count_{j}"] = rng.poisson(np.exp(0.3 * latent[:, j % 3] + 1)).astype(np.int64)
    for j in range(19):
        levels = 2 + j % 7
        logits = latent[:, j % 3, None] * np.linspace(-1, 1, levels) + rng.gumbel(size=(n, levels))
        cols[f"cat_{j:02d}"] = np.array([f"c{k}" for k in range(levels)])[logits.argmax(1)]
    risk = latent[:, 0] - 0.7 * latent[:, 1] + rng.logistic(size=n)
    cols["outcome"] = (risk > 0.5).astype(np.int64)
    return pd.DataFrame(cols)


def peak_rss_gb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--holdout", type=int, default=25_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    train, test, synthetic = mixed_table(args.rows, 0), mixed_table(args.holdout, 1), mixed_table(args.rows, 2)
    schema = clinsynth.Schema.infer(train, target="outcome")
    before = peak_rss_gb()
    start = time.perf_counter()
    evaluation = clinsynth.evaluate(real_train=train, real_test=test, synthetic=synthetic, schema=schema)
    metrics = evaluation.to_dict()
    seconds = time.perf_counter() - start
    results = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": library_versions(),
        "rows": {"real_train": len(train), "real_test": len(test), "synthetic": len(synthetic), "columns": train.shape[1]},
        "seconds": round(seconds, 1),
        "seconds_by_step": evaluation.seconds,
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "peak_rss_gb_before_evaluation": round(before, 2),
        "bar": {"seconds": 90, "peak_rss_gb": 4},
        "headline": {"detection_auroc": metrics["fidelity"]["detection_auroc"],
                     "tstr_over_trtr_auroc": metrics["utility"]["tstr_over_trtr_auroc"],
                     "verdicts": [f"{v['section']}: {v['level']}" for v in metrics["verdicts"]]},
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
