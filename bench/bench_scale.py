"""Out-of-core fitting of the counting models through DuckDB (issue 24), against the pandas path.

``make``: a SIMULATED table of ``--rows`` rows × 20 columns (``simulate_trial``'s columns after the
identifier: arm, demographics, labs and six blood-pressure visits with dropout) written as Parquet
parts of ``--chunk`` rows (each chunk simulated with its own seed, so memory stays at one chunk).

``replicate``: a larger table from ``make``'s parts, each linked ``--copies`` times (every row
appears that many times; no new simulation, so a 20 M-row table costs no CPU to make).

``compare``: for each model, a fresh child process (spawn) fits it on the same parts twice — the
pandas path (``pd.read_parquet`` of the folder, then ``fit(frame)``) and the DuckDB engine
(``fit(DuckDBTable(glob))``, memory limit 1 GB, spilling to a temporary folder) — with the same
schema (inferred once from the engine's sample and completed from the whole table). Each child
reports read and fit seconds and its peak resident memory (``ru_maxrss``, data included); ratios
DuckDB / pandas are computed between the two children of the same model, run one after the other,
which moves less with the shared machine's load than the seconds do. ``engine``: the DuckDB child
alone (for tables the pandas path cannot hold).

``spark``: for each model, the DuckDB child and a Spark child (``SparkTable`` on ``--spark-master``,
``local[2]`` by default: the same statements in Spark SQL) on the same parts and schema; the
ratio Spark / DuckDB of the fit seconds is taken between the two children of the same model, run
one after the other. The Spark child's read seconds include the JVM's start; its peak RSS is the
Python driver's alone (the JVM is another process: its heap is bounded by ``spark.driver.memory``).
Under DP the tables are DuckDB's exactly (``same_tables``); without DP the held-out folds follow
each engine's row order, which for a folder of parts may differ.

    python bench/bench_scale.py make --rows 2000000 --dir /tmp/scale-2m
    python bench/bench_scale.py compare --dir /tmp/scale-2m --models bayesnet dp-bayesnet \
        [--json bench/results/scale_duckdb.json]
    python bench/bench_scale.py replicate --source /tmp/scale-2m --copies 10 --dir /tmp/scale-20m
    python bench/bench_scale.py engine --dir /tmp/scale-20m --models bayesnet dp-bayesnet [--json ...]
    python bench/bench_scale.py spark --dir /tmp/scale-10m [--spark-master local[2]] \
        [--json bench/results/scale_spark.json]
    python bench/bench_scale.py torchrun --dir /tmp/scale-torchrun --rows 20000 --models dp-acgan vae \
        [--json bench/results/scale_torchrun.json]

``torchrun``: a simulated trial of ``--rows`` rows (all 50 columns) as CSV, and for each model
``clinsynth fit`` in one process, then ``torchrun --standalone --nproc_per_node 2 -m clinsynth fit``
with the same global configuration (same seed, epochs and batch: the two processes split each
global batch), one thread per process, one after the other. The figures: the ratio of the whole
commands' wall seconds (start-up and reading included), and of the training alone (a fit of
``--epochs`` less a fit of 1 epoch, same launcher); the bundles' ledgers are compared.

Run it with one thread per library (``OMP_NUM_THREADS=1``); DuckDB gets ``CLINSYNTH_THREADS`` or
the cores this process may use (``clinsynth.threads``).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

TARGET = "arm"
COLUMNS = 20


def _peak_rss_gb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def make(rows: int, directory: Path, chunk: int) -> dict:
    from clinsynth.data.datasets import simulate_trial

    directory.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for i, start in enumerate(range(0, rows, chunk)):
        part = simulate_trial(min(chunk, rows - start), seed=1000 + i)
        part = part.iloc[:, 1:1 + COLUMNS]  # no identifier: the rows are distinct simulated people
        part.to_parquet(directory / f"part-{i:05d}.parquet")
    return {"rows": rows, "columns": COLUMNS, "chunk": chunk, "seconds": round(time.perf_counter() - t, 1)}


def replicate(source: Path, directory: Path, copies: int) -> dict:
    """``copies`` links to each Parquet part of ``source``: a table ``copies`` times larger whose
    every simulated row appears ``copies`` times (its counts are exactly ``copies`` × the source's),
    made without simulating again."""
    directory.mkdir(parents=True, exist_ok=True)
    parts = sorted(source.glob("part-*.parquet"))
    for k in range(copies):
        for i, part in enumerate(parts):
            target = directory / f"part-{k * len(parts) + i:05d}.parquet"
            if not target.exists():
                os.link(part, target)
    return {"from": str(source), "copies": copies, "parts": copies * len(parts)}


def _child(path: str, engine: str, model: str, schema_json: str, out: mp.Queue, master: str = "local[2]") -> None:
    import numpy as np
    import pandas as pd

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore")
    from clinsynth.models.registry import create
    from clinsynth.privacy.budget import Privacy
    from clinsynth.schema import Schema

    schema = Schema.from_json(schema_json)
    privacy = Privacy(epsilon=1.0) if model.startswith("dp-") else None
    fitted = create(model.removeprefix("dp-"), privacy=privacy, seed=0, progress=False)
    t = time.perf_counter()
    if engine == "pandas":
        data = pd.read_parquet(path)
        rows = len(data)
    elif engine == "spark":
        from clinsynth.engines.source import TableSource
        from clinsynth.engines.spark_engine import SparkTable

        data = SparkTable(TableSource(str(Path(path) / "part-*.parquet")), master=master)
        rows = data.n
    else:
        from clinsynth.engines.duckdb_engine import DuckDBTable
        from clinsynth.engines.source import TableSource

        data = DuckDBTable(TableSource(str(Path(path) / "part-*.parquet")), memory_limit="1GB")
        rows = data.n
    read = time.perf_counter() - t
    rss_read = _peak_rss_gb()
    t = time.perf_counter()
    fitted.fit(data, schema)
    fit = time.perf_counter() - t
    import hashlib

    digest = hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() for x in fitted.tables_)).hexdigest()[:16]
    out.put({"engine": engine, "model": fitted.name, "rows": rows, "read_seconds": round(read, 2),
             "fit_seconds": round(fit, 2), "peak_rss_gb_after_read": round(rss_read, 3),
             "peak_rss_gb": round(_peak_rss_gb(), 3), "tables_sha256": digest,
             "ledger_epsilon": (round(fitted.ledger_.spent(), 6)
                                if getattr(fitted, "ledger_", None) is not None
                                else None),
             "load_average": os.getloadavg()})


def _run(path: Path, engine: str, model: str, schema_json: str, master: str = "local[2]") -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_child, args=(str(path), engine, model, schema_json, out, master))
    p.start()
    result = out.get()
    p.join()
    print(json.dumps(result), flush=True)
    return result


def _schema(path: Path) -> str:
    from clinsynth.engines.duckdb_engine import DuckDBTable
    from clinsynth.engines.source import TableSource

    table = DuckDBTable(TableSource(str(path / "part-*.parquet")))
    try:
        return table.infer_schema(target=TARGET, seed=0).to_json()
    finally:
        table.close()


def _timed_fit(command: list[str], env: dict[str, str]) -> float:
    import subprocess

    t = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return round(time.perf_counter() - t, 2)


def torchrun_cells(directory: Path, rows: int, models: list[str], epochs: int) -> list[dict]:
    """One process against two torchrun processes, per model, on the same simulated trial: each
    fitted for 1 and for ``epochs`` epochs, so that the difference is the training of the extra
    epochs without start-up, reading and the public facts."""
    import clinsynth
    from clinsynth.data.datasets import simulate_trial

    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "trial.csv"
    if not data.exists():
        simulate_trial(n=rows, seed=7).to_csv(data, index=False)
    src = str(Path(clinsynth.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CLINSYNTH_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    launchers = {1: [sys.executable, "-m", "clinsynth"],
                 2: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                     "-m", "clinsynth"]}
    cells = []
    for model in models:
        seconds: dict[tuple[int, int], float] = {}
        for n_epochs in (1, epochs):
            args = ["fit", str(data), "--target", TARGET, "--model", model, "--epochs", str(n_epochs), "--quiet",
                    "--overwrite"]
            if model.startswith("dp-"):
                args += ["--epsilon", "1", "--select", "last"]
            for processes, launcher in launchers.items():
                out = directory / f"{model}-{processes}"
                seconds[processes, n_epochs] = _timed_fit([*launcher, *args, "--out", str(out)], env)
        ledgers = [getattr(clinsynth.load(directory / f"{model}-{k}"), "ledger_", None) for k in (1, 2)]
        same = None if ledgers[0] is None else ledgers[0].state_dict() == ledgers[1].state_dict()
        training = {k: round(seconds[k, epochs] - seconds[k, 1], 2) for k in (1, 2)}
        cells.append({"model": model, "rows": rows, "epochs": epochs,
                      "one_process_seconds": seconds[1, epochs], "two_processes_seconds": seconds[2, epochs],
                      "ratio_two_over_one": round(seconds[2, epochs] / seconds[1, epochs], 3),
                      "one_epoch_seconds": {"one_process": seconds[1, 1], "two_processes": seconds[2, 1]},
                      f"training_seconds_of_epochs_2_to_{epochs}": {"one_process": training[1], "two_processes": training[2]},
                      "training_ratio_two_over_one": round(training[2] / training[1], 3) if training[1] > 0 else None,
                      "same_ledger": same,
                      "epsilon_spent": None if ledgers[1] is None else round(ledgers[1].spent(), 4)})
        print(json.dumps(cells[-1]), flush=True)
    return cells


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("make", "replicate", "compare", "engine", "spark", "torchrun"))
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--source", type=Path, help="replicate: the folder of parts to link")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--chunk", type=int, default=500_000)
    parser.add_argument("--models", nargs="+", default=["bayesnet", "dp-bayesnet"])
    parser.add_argument("--epochs", type=int, default=5, help="torchrun: training epochs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.mode == "torchrun":
        runs = torchrun_cells(args.dir, args.rows, args.models, args.epochs)
        result = {"mode": "torchrun", "runs": runs, "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(), "load_average_1min": os.getloadavg()[0]}}
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1) + "\n")
        return
    if args.mode == "make":
        print(json.dumps(make(args.rows, args.dir, args.chunk)))
        return
    if args.mode == "replicate":
        print(json.dumps(replicate(args.source, args.dir, args.copies)))
        return
    schema_json = _schema(args.dir)
    runs = []
    for model in args.models:
        engines = {"compare": ("pandas", "duckdb"), "spark": ("duckdb", "spark")}.get(args.mode, ("duckdb",))
        pair = {e: _run(args.dir, e, model, schema_json, args.spark_master) for e in engines}
        row = {"model": model, **{e: r for e, r in pair.items()}}
        if "spark" in pair:
            row["ratio_fit_seconds_spark_over_duckdb"] = round(pair["spark"]["fit_seconds"] / pair["duckdb"]["fit_seconds"], 3)
            row["ratio_total_seconds_spark_over_duckdb"] = round(
                (pair["spark"]["fit_seconds"] + pair["spark"]["read_seconds"])
                / (pair["duckdb"]["fit_seconds"] + pair["duckdb"]["read_seconds"]), 3)
            row["same_tables"] = pair["spark"]["tables_sha256"] == pair["duckdb"]["tables_sha256"]
        if "pandas" in pair:
            row["ratio_fit_seconds_duckdb_over_pandas"] = round(pair["duckdb"]["fit_seconds"] / pair["pandas"]["fit_seconds"], 3)
            row["ratio_peak_rss_duckdb_over_pandas"] = round(pair["duckdb"]["peak_rss_gb"] / pair["pandas"]["peak_rss_gb"], 3)
            row["same_tables"] = pair["duckdb"]["tables_sha256"] == pair["pandas"]["tables_sha256"]
        runs.append(row)
    cell = {"rows": _rows_of(runs), "dir": str(args.dir), "runs": runs, "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "threads": os.environ.get("CLINSYNTH_THREADS"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **({"spark_master": args.spark_master} if args.mode == "spark" else {})}}
    print(json.dumps(cell, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        merged = merge_cell(json.loads(args.json.read_text()) if args.json.exists() else None, args.mode, cell)
        args.json.write_text(json.dumps(merged, indent=1) + "\n")


def _rows_of(runs: list[dict]) -> int | None:
    """The table's row count, as the engines' children reported it."""
    return next((r[e]["rows"] for r in runs for e in ("duckdb", "spark", "pandas") if "rows" in r.get(e, {})), None)


def merge_cell(existing: dict | None, mode: str, cell: dict) -> dict:
    """The results file with ``cell`` in it: it replaces the cell of the same row count and keeps
    the others (a file written before cells existed becomes the first one)."""
    if existing is None:
        return {"mode": mode, "cells": [cell]}
    cells = existing.get("cells")
    if cells is None:  # the single-run format
        cells = [{"rows": _rows_of(existing.get("runs", [])), **{k: v for k, v in existing.items() if k != "mode"}}]
    kept = [c for c in cells if c.get("rows") != cell["rows"]]
    return {**{k: v for k, v in existing.items() if k not in ("runs", "dir", "machine")}, "mode": mode,
            "cells": sorted(kept + [cell], key=lambda c: c.get("rows") or 0)}


if __name__ == "__main__":
    main()
