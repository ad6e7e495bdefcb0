"""The evaluation at scale and at its edges, per level (full, fast, none): seconds per step and the
peak memory of each run, each in a fresh process so the peak is that run's own.

Cases (issue 25 point 9, and the earlier scale case):

* ``large`` — 200,000 real training rows (+ a 50,000-row holdout) against 200,000 synthetic rows
  of 30 mixed columns. Bar: ``full`` in at most 120 s on 2 cores.
* ``many_classes`` — 1,000 rows × 3 columns with a 200-class text target (was still in utility
  after 400 s).
* ``wide`` — 200 rows × 10,000 columns (was still running after 500 s).
* ``mixed50`` — 100,000 rows (+ 25,000 holdout) × 50 mixed columns, the earlier scale case
  (bar then: 90 s, 4 GB).

Every table is a seeded draw; "synthetic" is an independent draw of the same process, which is
what a good generator would hand over.

    python bench/bench_evaluate.py [--cases large many_classes wide mixed50] [--levels full fast none]
                                   [--json bench/results/evaluate.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

BARS = {"large": {"full": {"seconds": 120}}, "mixed50": {"full": {"seconds": 90, "peak_rss_gb": 4}}}


def labs_and_counts(rng: np.random.Generator, latent: np.ndarray, labs: int, counts: int) -> dict[str, np.ndarray]:
    """Skewed lab values (log-normal, 10–40 % missing) and Poisson counts, driven by ``latent``'s columns."""
    n = len(latent)
    cols: dict[str, np.ndarray] = {}
    for j in range(labs):
        x = np.exp(0.5 * latent[:, j % 3] + rng.normal(scale=0.6, size=n)) * (10 + j)
        x[rng.random(n) < 0.1 + 0.3 * (j % 4) / 3] = np.nan
        cols[f"lab_{j:02d}"] = np.round(x, 2)
    for j in range(counts):
        cols[f"count_{j}"] = rng.poisson(np.exp(0.3 * latent[:, j % 3] + 1)).astype(np.int64)
    return cols


def mixed_table(n: int, seed: int) -> pd.DataFrame:
    """50 columns: 25 continuous (log-normal, partly missing), 5 integer, 19 categorical, 1 target."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    cols = labs_and_counts(rng, latent, labs=25, counts=5)
    for j in range(19):
        levels = 2 + j % 7
        logits = latent[:, j % 3, None] * np.linspace(-1, 1, levels) + rng.gumbel(size=(n, levels))
        cols[f"cat_{j:02d}"] = np.array([f"c{k}" for k in range(levels)])[logits.argmax(1)]
    risk = latent[:, 0] - 0.7 * latent[:, 1] + rng.logistic(size=n)
    cols["outcome"] = (risk > 0.5).astype(np.int64)
    return pd.DataFrame(cols)


def mixed30(n: int, seed: int) -> pd.DataFrame:
    """30 columns: 13 continuous (log-normal, 10–40 % missing), 4 counts, 1 admission date,
    11 categorical (2–8 levels, one of 60) and a binary target that depends on several."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    cols = labs_and_counts(rng, latent, labs=13, counts=4)
    days = np.clip(np.round(1000 + 300 * latent[:, 2] + rng.normal(scale=100, size=n)), 0, 3000).astype(int)
    cols["admitted"] = (pd.Timestamp("2015-01-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d").to_numpy()
    for j in range(11):
        levels = 60 if j == 10 else 2 + j % 7
        logits = latent[:, j % 3, None] * np.linspace(-1, 1, levels) + rng.gumbel(size=(n, levels))
        cols[f"cat_{j:02d}"] = np.array([f"c{k}" for k in range(levels)])[logits.argmax(1)]
    risk = latent[:, 0] - 0.7 * latent[:, 1] + rng.logistic(size=n)
    cols["outcome"] = (risk > 0.5).astype(np.int64)
    return pd.DataFrame(cols)


def many_classes(n: int, seed: int, classes: int = 200) -> pd.DataFrame:
    """Age, sex and a text diagnosis of ``classes`` classes (half uniform, half by age)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    by_age = np.clip(((latent + 3) / 6 * classes).astype(int), 0, classes - 1)
    k = np.where(rng.random(n) < 0.5, rng.integers(0, classes, n), by_age)
    k[:classes] = np.arange(classes)
    return pd.DataFrame({"age": np.round(50 + 10 * latent + rng.normal(size=n), 1), "sex": rng.choice(["F", "M"], n),
                         "diagnosis": np.array([f"dx_{i:03d}" for i in range(classes)])[k]})


def wide(n: int, seed: int, columns: int = 10_000) -> pd.DataFrame:
    """``columns`` columns: numbers and 3-level categories alternating, and a binary outcome."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    out: dict[str, np.ndarray] = {}
    for j in range(columns - 1):
        noisy = latent[:, j % 3] + rng.normal(size=n)
        out[f"x{j:05d}"] = np.round(noisy, 3) if j % 2 == 0 else np.array(["a", "b", "c"])[np.digitize(noisy, [-0.5, 0.5])]
    out["outcome"] = (latent[:, 0] + rng.logistic(size=n) > 0).astype(np.int64)
    return pd.DataFrame(out)


CASES = {  # name → (table maker, training rows, holdout rows, synthetic rows, target)
    "large": (mixed30, 200_000, 50_000, 200_000, "outcome"),
    "many_classes": (many_classes, 1_000, 250, 1_000, "diagnosis"),
    "wide": (wide, 200, 100, 200, "outcome"),
    "mixed50": (mixed_table, 100_000, 25_000, 100_000, "outcome"),
}


def peak_rss_gb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def run_one(case: str, level: str) -> dict:
    """One evaluation in this process: the numbers the table of results holds."""
    import clinsynth

    make, n_train, n_test, n_synthetic, target = CASES[case]
    train, test, synthetic = make(n_train, 0), make(n_test, 1), make(n_synthetic, 2)
    schema = clinsynth.Schema.infer(train, target=target)
    before = peak_rss_gb()
    start = time.perf_counter()
    evaluation = clinsynth.evaluate(real_train=train, real_test=test, synthetic=synthetic, schema=schema, level=level)
    metrics = evaluation.to_dict()
    seconds = time.perf_counter() - start
    utility = metrics.get("utility") or {}
    return {
        "rows": {"real_train": len(train), "real_test": len(test), "synthetic": len(synthetic), "columns": train.shape[1]},
        "seconds": round(seconds, 1),
        "seconds_by_step": evaluation.seconds,
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "peak_rss_gb_before_evaluation": round(before, 2),
        "capped": [{k: v for k, v in c.items() if k != "other"} for c in metrics["evaluation"]["capped"]],
        "headline": {"detection_auroc": (metrics.get("fidelity") or {}).get("detection_auroc"),
                     "utility_classes_scored": len(utility.get("classes") or []) or None,
                     "tstr_over_trtr_auroc": utility.get("tstr_over_trtr_auroc"),
                     "verdicts": [f"{v['section']}: {v['level']}" for v in metrics["verdicts"]]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["large", "many_classes", "wide", "mixed50"], choices=list(CASES))
    parser.add_argument("--levels", nargs="+", default=["full", "fast", "none"], choices=["full", "fast", "none"])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=1800, help="Seconds before a run is stopped and reported as such.")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "LEVEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(*args.child)))
        return

    from clinsynth.models.base import library_versions

    load = os.getloadavg()
    results: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                 "load_average_at_start": [round(x, 2) for x in load]},
                     "versions": library_versions(), "bars": BARS, "cases": {}}
    for case in args.cases:
        results["cases"][case] = {}
        for level in args.levels:
            start = time.perf_counter()
            try:
                done = subprocess.run([sys.executable, __file__, "--child", case, level], capture_output=True, text=True,
                                      timeout=args.timeout, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                row = {"seconds": None, "stopped_after_seconds": args.timeout}
            except subprocess.CalledProcessError as e:
                row = {"seconds": None, "error": (e.stderr or "").strip().splitlines()[-1:]}
            row["wall_seconds_with_data_generation"] = round(time.perf_counter() - start, 1)
            row["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            bar = BARS.get(case, {}).get(level)
            if bar and row.get("seconds") is not None:
                row["meets_bar"] = row["seconds"] <= bar["seconds"] and row["peak_rss_gb"] <= bar.get("peak_rss_gb", 1e9)
            results["cases"][case][level] = row
            print(f"{case:>13} {level:>4}: {row.get('seconds')} s, peak {row.get('peak_rss_gb')} GB "
                  f"{row.get('seconds_by_step', '')}", file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
