"""AC-GAN quality and fit time on the tables of ``bench/compare.py``, fast: no peer venvs, no subprocesses.

For each dataset (breast cancer, WHAS500, FLCHAIN, the simulated trial; compare.py's loaders and
its stratified 80/20 split) and each configuration, fit ``acgan`` (or ``dp-acgan``) through the
benchmark's own clinsynth adapter, sample as many rows as it trained on and report

* the detection AUROC (random forest, real training rows vs synthetic; ↓ better, 0.5 ideal),
* the TSTR/TRTR AUROC ratio of logistic regression, random forest and gradient boosting and their mean,
* the mean and largest gap between real and synthetic correlations of numeric column pairs,
* the fit seconds (wall clock, and the process's CPU seconds, steadier on a shared machine), and
  the wall-clock ratio to the first configuration's fit in the same run.

Fit times on a shared machine move by 2× from minute to minute; the first configuration is the
baseline measured in the same process, so the ratio is what to read. The TVAE fit seconds recorded
by compare.py (``bench/results/compare_cells.jsonl``) are printed as the reference of the issue's
bar (fit within 2× TVAE's).

    python bench/bench_acgan_quality.py --config old '{"epochs": 150, ...}' --config new '{}'
    python bench/bench_acgan_quality.py --seeds 0 1 2 --json bench/results/acgan_quality.json

``--diagnose`` adds, on tables with visit groups (the trial), where the detection comes from
(``diagnose``): the detection AUROC of each column group alone, the largest invented
correlations, and how trajectories move from visit to visit, real next to synthetic.

``bench/results/acgan_quality.json`` holds the runs behind the README's acgan figures (old → current
defaults, and ``dp-acgan`` at ε = 1). ``--config NAME JSON`` adds a configuration (acgan hyperparameters; ``"model": "dp-acgan"`` and
``"epsilon": 1`` for the DP model); without any, the registry defaults run as ``default``.
WHAS500 and FLCHAIN need scikit-survival (the ``bench`` extra).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from compare_datasets import DATASETS, NUMERIC, DatasetFiles, prepare_dataset  # noqa: E402  (bench/compare.py's)
from compare_scoring import TSTR_CLASSIFIERS, coerce_synthetic  # noqa: E402
from adapters import clinsynth as adapter  # noqa: E402

TABLES = ("breast_cancer", "whas500", "flchain", "trial")
#: the acgan defaults before issue 22 (bench/results/compare.md's acgan rows), kept as a baseline
OLD_ACGAN = {"epochs": 150, "batch_size": 256, "noise_dim": 32, "hidden": 128, "disc_hidden": 256,
             "conv_channels": 8, "lr_g": 2e-4, "lr_d": 2e-4, "select": "last", "weight_average": 0.0,
             "numeric_transform": "standard", "conditional_critic": False}


def tvae_seconds(results: Path = BENCH / "results" / "compare_cells.jsonl") -> dict[str, float]:
    """Mean recorded TVAE fit seconds per dataset (compare.py's quiet-machine runs)."""
    times: dict[str, list[float]] = {}
    if results.is_file():
        for line in results.read_text().splitlines():
            cell = json.loads(line)
            if cell.get("synthesizer") == "tvae" and cell.get("status") == "ok":
                times.setdefault(cell["dataset"], []).append(float(cell["fit_seconds"]))
    return {k: float(np.mean(v)) for k, v in times.items()}


def correlation_gap(real, synth, meta: dict[str, Any]) -> tuple[float, float, str]:
    """Mean and largest |real − synthetic| Pearson correlation over the numeric column pairs, and
    the worst pair: the "invented association" the detection AUROC picks up."""
    names = [c["name"] for c in meta["columns"] if c["kind"] in NUMERIC]
    if len(names) < 2:
        return 0.0, 0.0, ""
    gap = (real[names].corr() - synth[names].corr()).abs().to_numpy()
    upper = np.triu_indices(len(names), 1)
    values = np.nan_to_num(gap[upper])
    worst = int(np.argmax(values))
    return float(values.mean()), float(values[worst]), f"{names[upper[0][worst]]}×{names[upper[1][worst]]}"


def _visit_groups(columns: list[str]) -> dict[str, list[str]]:
    """Wide visit columns by their prefix (``sbp_m01`` … → ``sbp``), the rest as ``baseline``."""
    import re

    groups: dict[str, list[str]] = {}
    for c in columns:
        m = re.fullmatch(r"(.+)_m\d+", c)
        groups.setdefault(m.group(1) if m else "baseline", []).append(c)
    return groups


def diagnose(real, synth, seed: int = 0) -> dict[str, Any]:
    """Where a detector finds the synthetic rows: per column group (a forest on that group alone),
    the five largest |real − synthetic| Spearman correlations, and per visit group the correlation
    of consecutive visits and the share of visit-to-visit decreases, real and synthetic."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score

    import pandas as pd

    both = list(real.columns)
    frame = pd.concat([real, synth], ignore_index=True)
    is_number = {c: pd.api.types.is_numeric_dtype(real[c]) and pd.api.types.is_numeric_dtype(synth[c]) for c in both}
    X = {c: (frame[c].astype(float).fillna(-999) if is_number[c] else frame[c].astype("string").factorize()[0])
         for c in both}
    y = np.r_[np.zeros(len(real)), np.ones(len(synth))]
    groups = _visit_groups(both)
    out: dict[str, Any] = {"group_detection": {}}
    for name, cols in groups.items():
        forest = RandomForestClassifier(100, n_jobs=1, random_state=seed)
        data = np.column_stack([X[c] for c in cols])
        out["group_detection"][name] = round(float(cross_val_score(forest, data, y, cv=3, scoring="roc_auc").mean()), 3)
    numeric = [c for c in both if is_number[c]]
    rc, sc = real[numeric].corr("spearman"), synth[numeric].corr("spearman")
    upper = np.triu_indices(len(numeric), 1)
    gaps = sorted(((abs(rc.values[i, j] - sc.values[i, j]), numeric[i], numeric[j], rc.values[i, j], sc.values[i, j])
                   for i, j in zip(*upper) if np.isfinite(sc.values[i, j])), reverse=True)[:5]
    out["invented_correlations"] = [{"pair": f"{a}×{b}", "real": round(r, 2), "synthetic": round(s_, 2)}
                                    for _, a, b, r, s_ in gaps]
    for name, cols in groups.items():
        if name == "baseline" or len(cols) < 2:
            continue
        pairs = list(zip(cols, cols[1:]))
        out[name] = {side: {"consecutive_r": [round(float(df[a].corr(df[b])), 2) for a, b in pairs],
                            "decreasing_share": [round(float((df[b] < df[a]).mean()), 3) for a, b in pairs]}
                     for side, df in (("real", real), ("synthetic", synth))}
    return out


def run_one(files: DatasetFiles, params: dict[str, Any], seed: int, diagnosed: bool = False) -> dict[str, float]:
    """Fit, sample n_train rows, score: detection AUROC, TSTR/TRTR ratios, fit seconds."""
    from threadpoolctl import threadpool_limits

    from clinsynth.evaluate.fidelity import detection_auroc
    from clinsynth.evaluate.utility import tstr

    params = dict(params)
    model = params.pop("model", "acgan")
    epsilon = params.pop("epsilon", None)
    meta = files.meta
    train = files.train
    started, cpu = time.perf_counter(), time.process_time()
    fitted, _ = adapter.fit(train, meta, model, epsilon, meta["delta"] if epsilon else None, seed,
                            {k: json.dumps(v) for k, v in params.items()})
    fit_s, fit_cpu = time.perf_counter() - started, time.process_time() - cpu
    synth, _ = coerce_synthetic(adapter.sample(fitted, len(train), seed), meta)
    with threadpool_limits(limits=1):
        utility = tstr(train, files.test, synth, files.schema, seed=seed, n_bootstrap=0, importance=False)
        ratios = {short: utility.ratio(clf) for short, clf in TSTR_CLASSIFIERS.items()}
        detection = detection_auroc(train, synth, files.schema, seed=seed)
    row = {"fit_s": fit_s, "fit_cpu_s": fit_cpu, "detection": detection, **{f"tstr_{k}": v for k, v in ratios.items()},
           "tstr_mean": float(np.mean(list(ratios.values())))}
    row["corr_gap_mean"], row["corr_gap_max"], row["corr_gap_pair"] = correlation_gap(train, synth, meta)
    if diagnosed and len(_visit_groups(list(train.columns))) > 1:
        with threadpool_limits(limits=1):
            row["diagnosis"] = diagnose(train, synth, seed)
    ledger = getattr(fitted.model, "ledger_", None)
    if ledger is not None:
        row["epsilon_spent"] = float(ledger.spent())
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs=2, action="append", metavar=("NAME", "JSON"), default=None)
    parser.add_argument("--old", action="store_true", help="add the pre-issue-22 acgan defaults as 'old', first")
    parser.add_argument("--datasets", nargs="+", default=list(TABLES), choices=TABLES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--diagnose", action="store_true", help="on tables with visit groups: where the detection comes from")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    configs: list[tuple[str, dict[str, Any]]] = [("old", OLD_ACGAN)] if args.old else []
    configs += [(name, json.loads(text)) for name, text in (args.config or [])] or ([] if args.old else [("default", {})])
    tvae = tvae_seconds()
    work = BENCH / ".compare"
    out: dict[str, Any] = {"configs": dict(configs), "tvae_fit_s": tvae, "rows": []}
    for name in args.datasets:
        files = prepare_dataset(DATASETS[name], work)
        base_fit: dict[int, float] = {}
        for config, params in configs:
            for seed in args.seeds:
                row = run_one(files, params, seed, args.diagnose)
                base_fit.setdefault(seed, row["fit_s"])
                row.update(dataset=name, config=config, seed=seed, fit_vs_first=row["fit_s"] / base_fit[seed])
                out["rows"].append(row)
                ref = tvae.get(name)
                print(f"{name:14s} {config:14s} seed {seed}  detection {row['detection']:.3f}  "
                      f"TSTR/TRTR {row['tstr_lr']:.3f}/{row['tstr_rf']:.3f}/{row['tstr_gb']:.3f} "
                      f"[{row['tstr_mean']:.3f}]  fit {row['fit_s']:6.1f} s, cpu {row['fit_cpu_s']:6.1f} s (×{row['fit_vs_first']:.2f} first"
                      + (f", TVAE recorded {ref:.1f} s" if ref else "") + ")"
                      + f"  corr gap {row['corr_gap_mean']:.3f} max {row['corr_gap_max']:.2f} {row['corr_gap_pair']}"
                      + (f"  ε {row['epsilon_spent']:.3f}" if "epsilon_spent" in row else ""), flush=True)
                if "diagnosis" in row:
                    print(json.dumps(row["diagnosis"]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
