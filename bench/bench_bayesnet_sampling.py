"""The Bayesian network's sampling speed: the compiled draw against the numpy passes, same process.

Fits ``bayesnet`` on the simulated trial (49 columns with dropout and missingness), the
scikit-learn breast cancer table (31 numeric columns) and, with scikit-survival, WHAS500 and
FLCHAIN (as ``compare.py`` prepares them), then times, for each, the network draw
alone and the whole ``sample`` (draw, decode, DataFrame) with numba's loops and with numpy's
passes — the baseline, run in the same process on the same fitted tables, so the ratio does not
depend on the machine's load. Every timing is the best of ``--repeats`` warm draws (CPU time of
this thread); the two paths are checked to draw the same numbers.

    python bench/bench_bayesnet_sampling.py [--rows 20000] [--repeats 30] [--json bench/results/bayesnet_sampling.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

import clinsynth
from clinsynth.data.datasets import simulate_trial
from clinsynth.models.base import library_versions
from clinsynth.schema import Schema


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: compiled code loaded, buffers made
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return min(times)


def tables() -> dict[str, tuple[pd.DataFrame, str]]:
    """The trial and breast cancer; WHAS500 and FLCHAIN too with the bench extra (scikit-survival),
    prepared as ``compare.py`` prepares them."""
    from sklearn.datasets import load_breast_cancer

    bc = load_breast_cancer(as_frame=True).frame
    bc["target"] = bc["target"].astype(str)
    out = {"trial": (simulate_trial(n=5000, seed=0), "arm"), "breast_cancer": (bc, "target")}
    if importlib.util.find_spec("sksurv") is not None:
        from compare_datasets import DATASETS, build_meta  # this directory: bench/compare.py's datasets

        for name in ("whas500", "flchain"):
            dataset = DATASETS[name]
            out[name] = (build_meta(dataset.load(), name, dataset.target)[0], dataset.target)
    return out


def measure(df: pd.DataFrame, target: str, rows: int, repeats: int) -> dict[str, float]:
    model = clinsynth.create("bayesnet", progress=False).fit(df, Schema.infer(df, target=target))
    network = model._network
    if network.flat is None:
        raise SystemExit("numba is not installed (pip install -e '.[fast]'): nothing to compare")
    labels = np.random.default_rng(0).integers(0, 2, rows)
    compiled = network.flat
    fused = network.sample(labels, rows, np.random.default_rng(1))
    out: dict[str, float] = {}
    for path in ("numba", "numpy"):
        network.flat = compiled if path == "numba" else None
        out[f"draw_{path}_s"] = best_seconds(lambda: network.sample(labels, rows, np.random.default_rng(1)), repeats)
        out[f"sample_{path}_s"] = best_seconds(lambda: model.sample(rows, seed=1), repeats)
    passes = network.sample(labels, rows, np.random.default_rng(1))
    network.flat = compiled
    same = all(np.array_equal(a, b) for a, b in zip(fused, passes))
    if not same:
        raise SystemExit("the compiled draw and the numpy passes drew different numbers")
    out.update({
        "draw_speedup": out["draw_numpy_s"] / out["draw_numba_s"],
        "sample_speedup": out["sample_numpy_s"] / out["sample_numba_s"],
        "sample_rows_per_second": rows / out["sample_numba_s"],
        "columns": float(df.shape[1]),
    })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = {name: measure(df, target, args.rows, args.repeats) for name, (df, target) in tables().items()}
    for name, r in results.items():
        print(f"{name} ({r['columns']:.0f} columns, {args.rows:,} rows): draw {r['draw_numba_s'] * 1e3:.2f} ms "
              f"vs numpy {r['draw_numpy_s'] * 1e3:.2f} ms ({r['draw_speedup']:.1f}x); whole sample "
              f"{r['sample_numba_s'] * 1e3:.2f} ms vs {r['sample_numpy_s'] * 1e3:.2f} ms "
              f"({r['sample_speedup']:.1f}x), {r['sample_rows_per_second'] / 1e6:.1f} M rows/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": args.rows, "repeats": args.repeats, "results": results,
                                         "machine": platform.platform(), "versions": library_versions()},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
