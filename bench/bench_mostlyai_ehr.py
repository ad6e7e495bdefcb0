"""How long would mostlyai-engine take on compare.py's EHR table? Measure a little, extrapolate, record.

The EHR table of ``bench/compare.py`` has 1,002 columns (age, sex, 1,000 codes); TabularARGN fits
one sub-model per column, so an epoch there costs minutes where a table's costs seconds. Rather
than let each cell burn its hour-long timeout, this script

``measure`` (run by the mostlyai venv's python): fits the adapter exactly as ``run_cell.py`` does
  (same train.csv / meta.json, one torch thread) but stops after ``--epochs`` epochs without DP and
  ``--dp-epochs`` (a fraction) with DP at ε = 1, reads the engine's own progress messages (training
  seconds, steps, the accountant's ε), times a small sample, and extrapolates each cell's least
  duration: setup + the fewest epochs the engine can train (sampling, the rows compare.py asks for
  plus the 20,000-row speed draw, comes on top; it is estimated from the small sample, per row, but
  left out of the bound since a large draw may cost less per row). The fewest epochs: without DP its early stopping waits 4 epochs without
  improvement, so at least 5; with DP it also stops at the first epoch whose ε exceeds the budget,
  found here by running Opacus' RDP accountant (the engine's) forward epoch by epoch.

``record`` (run by clinsynth's python): writes the cells whose lower-bound estimate exceeds
  ``--limit-minutes`` into ``compare_cells.jsonl`` as ``timeout`` rows that did not run
  (``ran`` false, the reason and the estimate in the row), so ``compare.py`` skips them and the
  tables say why; cells under the limit are left for ``compare.py`` to run.

    bench/.peers/mostlyai/bin/python bench/bench_mostlyai_ehr.py measure
    python bench/bench_mostlyai_ehr.py record
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULT = BENCH / "results" / "mostlyai_ehr.json"
EPSILONS = (1.0, 4.0)
MIN_EPOCHS_EARLY_STOP = 5  # the engine's EarlyStopper(val_loss_patience=4): 4 epochs without improvement after the best
SPEED_ROWS = 20_000  # compare.py's timed draw (Timing.rows)


def _progress_row(adapter, fitted) -> dict:
    progress = adapter._progress(fitted.workspace)
    if progress is None or progress.empty:
        raise RuntimeError("the engine wrote no progress messages")
    last = progress.iloc[-1]
    return {k: (None if last.get(k) is None or (isinstance(last.get(k), float) and math.isnan(last.get(k)))
                else float(last.get(k))) for k in ("epoch", "steps", "samples", "total_time", "dp_eps", "dp_delta")}


def _fit(adapter, train, meta, synthesizer, epsilon, delta, epochs) -> tuple[object, dict, float]:
    started = time.perf_counter()
    fitted, _ = adapter.fit(train, meta, synthesizer, epsilon, delta, 0, {"max_epochs": epochs})
    wall = time.perf_counter() - started
    return fitted, _progress_row(adapter, fitted), wall


def accountant_epsilon(noise: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε of Opacus' RDP accountant (the engine's) after ``steps`` Poisson-sampled steps."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history.append((noise, sample_rate, int(steps)))
    return float(accountant.get_epsilon(delta))


def epochs_to_budget(noise: float, sample_rate: float, steps_per_epoch: int, delta: float, budget: float,
                     limit: int = 500) -> int:
    """The first epoch whose end-of-epoch ε exceeds ``budget``: the engine trains it, finds it over budget
    and stops (keeping an earlier checkpoint)."""
    for epoch in range(1, limit + 1):
        if accountant_epsilon(noise, sample_rate, epoch * steps_per_epoch, delta) > budget:
            return epoch
    return limit


def measure(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH))
    import run_cell
    from adapters import mostlyai as adapter

    run_cell.limit_torch_threads(1)
    meta = run_cell.read_meta(args.meta)
    train = run_cell.read_train(args.train, meta)
    delta = float(meta["delta"])
    n_sample = int(meta["n_train"])
    out: dict = {"dataset": meta.get("dataset"), "n_train": len(train), "n_columns": len(train.columns),
                 "tool_version": adapter.version(), "host": platform.node(), "cores": os.cpu_count(),
                 "torch_threads": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "load_average_at_start": list(os.getloadavg())}

    # without DP: a whole epoch, then a small timed sample from that model
    fitted, prog, wall = _fit(adapter, train, meta, "tabularargn", None, None, args.epochs)
    started = time.perf_counter()
    adapter.sample(fitted, args.sample_rows, 0)
    sample_s = time.perf_counter() - started
    epoch_s = prog["total_time"] / prog["epoch"]
    setup_s = wall - prog["total_time"]
    per_row = sample_s / args.sample_rows
    sampling_s = per_row * (n_sample + SPEED_ROWS)
    out["non_dp"] = {"max_epochs": args.epochs, "progress": prog, "fit_wall_seconds": round(wall, 1),
                     "setup_seconds": round(setup_s, 1), "seconds_per_epoch": round(epoch_s, 1),
                     "sample_rows": args.sample_rows, "sample_seconds": round(sample_s, 2),
                     "min_epochs": MIN_EPOCHS_EARLY_STOP,
                     "sampling_seconds_estimate": round(sampling_s, 1),
                     "cell_seconds_lower_bound": round(setup_s + MIN_EPOCHS_EARLY_STOP * epoch_s, 1)}
    print(json.dumps(out["non_dp"]), flush=True)

    # with DP at eps = 1: a fraction of an epoch (per-sample gradients through 1,002 sub-models)
    fitted, prog, wall = _fit(adapter, train, meta, "dp-tabularargn", 1.0, delta, args.dp_epochs)
    epoch_s = prog["total_time"] / prog["epoch"]
    setup_s = wall - prog["total_time"]
    steps_per_epoch = round(prog["steps"] / prog["epoch"])
    from mostlyai.engine.domain import DifferentialPrivacyConfig

    noise = float(DifferentialPrivacyConfig(**adapter.dp_config(1.0, delta, adapter.VALUE_PROTECTION_SHARE, {}))
                  .noise_multiplier)
    # the engine's data loader samples each record with rate 1 / (batches per epoch); check against its own ε
    check = accountant_epsilon(noise, 1.0 / steps_per_epoch, int(prog["steps"]), delta) + adapter.VALUE_PROTECTION_SHARE
    cells = {}
    for eps in EPSILONS:
        config = adapter.dp_config(eps, delta, adapter.VALUE_PROTECTION_SHARE, {})
        to_budget = epochs_to_budget(noise, 1.0 / steps_per_epoch, steps_per_epoch, delta,
                                     eps - config["value_protection_epsilon"])
        epochs = min(to_budget, MIN_EPOCHS_EARLY_STOP)
        cells[f"{eps:g}"] = {"epochs_to_exceed_budget": to_budget, "min_epochs": epochs,
                             "cell_seconds_lower_bound": round(setup_s + epochs * epoch_s, 1)}
    out["dp"] = {"max_epochs": args.dp_epochs, "progress": prog, "fit_wall_seconds": round(wall, 1),
                 "setup_seconds": round(setup_s, 1), "seconds_per_epoch": round(epoch_s, 1),
                 "steps_per_epoch": steps_per_epoch, "noise_multiplier": noise,
                 "epsilon_engine_reported": prog["dp_eps"], "epsilon_recomputed": round(check, 3),
                 "sampling_seconds_estimate": round(sampling_s, 1), "cells": cells}
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    out["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["dp"]), flush=True)


def record(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH))
    from compare_grid import Cell
    from compare_runner import Paths
    from compare_store import CellStore, record_not_run

    est = json.loads(args.out.read_text())
    limit = args.limit_minutes * 60
    nd, dp = est["non_dp"], est["dp"]
    nd["cell_seconds_lower_bound"] = nd["setup_seconds"] + nd["min_epochs"] * nd["seconds_per_epoch"]
    for cell in dp["cells"].values():  # the bound from the measured figures (sampling not included)
        cell["cell_seconds_lower_bound"] = dp["setup_seconds"] + cell["min_epochs"] * dp["seconds_per_epoch"]
    loads = [x for x in (est.get("load_average_at_start") or [])[:1] + (est.get("load_average_at_end") or [])[::2]]
    store = CellStore(args.cells or Paths().cells)
    plans = [(None, "tabularargn", est["non_dp"]["cell_seconds_lower_bound"],
              f"one epoch {est['non_dp']['seconds_per_epoch']:.0f} s, at least {est['non_dp']['min_epochs']} epochs")]
    for eps, cell in est["dp"]["cells"].items():
        plans.append((float(eps), "dp-tabularargn", cell["cell_seconds_lower_bound"],
                      f"one DP epoch {est['dp']['seconds_per_epoch']:.0f} s (measured over "
                      f"{est['dp']['progress']['epoch']:.2g} epoch), at least {cell['min_epochs']} epochs"))
    for eps, synthesizer, seconds, why in plans:
        if seconds <= limit:
            print(f"ehr mostlyai:{synthesizer} eps={eps}: ~{seconds / 60:.0f} min, under the limit: run it with compare.py")
            continue
        at = f" under a load of {min(loads):.0f}-{max(loads):.0f}" if loads else ""
        reason = (f"not run: estimated at least {seconds / 60:.0f} min on this 2-core machine{at} ({why}, plus setup; "
                  f"sampling on top; bench/results/mostlyai_ehr.json), over the {args.limit_minutes:g}-min limit")
        record_not_run(store, [Cell("ehr", "mostlyai", synthesizer, eps, seed) for seed in args.seeds], reason,
                       seconds, est.get("tool_version"))
        print(f"ehr mostlyai:{synthesizer} eps={eps}: {reason}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("step", choices=["measure", "record"])
    p.add_argument("--train", type=Path, default=BENCH / ".compare" / "ehr" / "train.csv")
    p.add_argument("--meta", type=Path, default=BENCH / ".compare" / "ehr" / "meta.json")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs of the non-DP fit measured")
    p.add_argument("--dp-epochs", type=float, default=0.25, help="epochs (a fraction) of the DP fit measured")
    p.add_argument("--sample-rows", type=int, default=200, help="rows of the timed sample")
    p.add_argument("--limit-minutes", type=float, default=30.0, help="record cells estimated above this (record)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=RESULT, help="the estimate (measure writes it, record reads it)")
    p.add_argument("--cells", type=Path, default=None, help="record into this cell store (default compare.py's)")
    args = p.parse_args(argv)
    (measure if args.step == "measure" else record)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
