#!/usr/bin/env python3
"""One benchmark cell: fit one synthesizer on one training table, sample, measure.

Standalone: at module top it imports only the standard library, numpy and pandas,
so it runs under any of the benchmark's venvs (the peer venvs made by
``bench/peers/setup.sh`` and the clinsynth dev venv). The tool is imported
lazily through its adapter (``bench/adapters/<tool>.py``), whose interface is::

    SYNTHESIZERS: dict[str, dict]             # name -> {"dp": bool, ...}
    def version() -> str
    def fit(train, meta, synthesizer, epsilon, delta, seed, params) -> (model, effective_params)
    def sample(model, n, seed) -> pd.DataFrame

Optional adapter extras used here when present: ``CHECK_PARAMS`` (synthesizer ->
params that make a quick ``--check`` run), ``preload(dp)`` (imports the tool
makes lazily, done before the timer as ``version()``'s are), and the keys ``"delta"`` and
``"_notes"`` in the effective params (the δ the tool really used; notes for
result.json).

    python bench/run_cell.py --tool sdv --synthesizer ctgan --train train.csv --meta meta.json \\
        --seed 0 [--epsilon 1.0] --n 455 --speed-rows 20000 --out synth.csv --result result.json \\
        [--param key=value ...] [--check]

Without ``--check`` every tool runs at its own documented defaults (plus any
``--param``). ``--check`` lays small settings (few epochs, few rounds) under the
given params, for a quick smoke test only: never for benchmark numbers.

Memory: ``baseline_rss_mb`` is the current RSS (VmRSS) after reading the data and
importing the tool (through ``adapter.version()``), just before fitting;
``fit_peak_rss_mb`` is the process's peak RSS (ru_maxrss) after fitting;
``fit_memory_mb`` = peak − baseline.
"""
from __future__ import annotations

import os

# Two cores on the benchmark machine: every math library and PyTorch at two threads, the same for
# every tool; BENCH_THREADS overrides it for all of them at once (bench/bench_demo.py times fits
# on one thread each, so that a loaded machine does not decide which tool thrashes).
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import argparse
import importlib
import json
import math
import platform
import random
import resource
import signal
import sys
import time
import traceback

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

CATEGORICAL_KINDS = ("categorical", "binary")
NUMERIC_KINDS = ("continuous", "integer")
ID_KIND = "id"  # a long table's patient id (text; meta["patient"] names it): no domain, not checked
KINDS = CATEGORICAL_KINDS + NUMERIC_KINDS + (ID_KIND,)


# ---------------------------------------------------------------- small helpers
def parse_param(text: str) -> tuple[str, object]:
    """``key=value``; the value is read as JSON when it parses (numbers, true,
    null, lists), else kept as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise argparse.ArgumentTypeError(f"--param has an empty key: {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def current_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    # ru_maxrss is in KB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    if "torch" in sys.modules or _torch_installed():
        try:
            import torch

            torch.manual_seed(seed)
        except Exception:  # pragma: no cover - torch broken: the adapter will say so
            pass


def _torch_installed() -> bool:
    try:
        from importlib import util

        return util.find_spec("torch") is not None
    except Exception:
        return False


def limit_torch_threads(n: int = THREADS) -> str | None:
    if not _torch_installed():
        return None
    os.environ["CLINSYNTH_THREADS"] = str(n)  # clinsynth gives PyTorch one thread unless told: the same n as every tool
    try:
        import torch

        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:
            pass  # already set / parallel work started
        return torch.__version__
    except Exception:
        return None


def dist_version(name: str) -> str | None:
    try:
        from importlib import metadata

        return metadata.version(name)
    except Exception:
        return None


def jsonable(obj):
    """Best-effort conversion to something json.dump takes."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else repr(x)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    return repr(obj)


def atomic_write_text(path: str, text: str) -> None:
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_csv(path: str, df: pd.DataFrame) -> None:
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    df.to_csv(tmp, index=False, na_rep="")
    os.replace(tmp, path)


# ---------------------------------------------------------------- data
def read_meta(path: str) -> dict:
    with open(path) as f:
        meta = json.load(f)
    cols = meta.get("columns")
    if not isinstance(cols, list) or not cols:
        raise ValueError(f"{path}: meta needs a non-empty 'columns' list")
    for c in cols:
        kind = c.get("kind")
        if kind not in KINDS:
            raise ValueError(f"{path}: column {c.get('name')!r} has kind {kind!r}; expected one of {KINDS}")
        if kind == ID_KIND:
            pass
        elif kind in CATEGORICAL_KINDS:
            if not c.get("categories"):
                raise ValueError(f"{path}: column {c['name']!r} ({kind}) needs 'categories'")
            c["categories"] = [str(v) for v in c["categories"]]
        else:
            if c.get("lower") is None or c.get("upper") is None:
                raise ValueError(f"{path}: column {c['name']!r} ({kind}) needs public 'lower' and 'upper'")
            if not float(c["lower"]) < float(c["upper"]):
                raise ValueError(f"{path}: column {c['name']!r}: lower must be < upper")
        c.setdefault("nullable", False)
    return meta


def read_train(path: str, meta: dict) -> pd.DataFrame:
    dtypes = {}
    for c in meta["columns"]:
        dtypes[c["name"]] = str if c["kind"] in CATEGORICAL_KINDS + (ID_KIND,) else "float64"
    df = pd.read_csv(path, dtype=dtypes, keep_default_na=True)
    names = [c["name"] for c in meta["columns"]]
    missing = [n for n in names if n not in df.columns]
    extra = [n for n in df.columns if n not in names]
    if missing or extra:
        raise ValueError(f"{path}: columns do not match meta (missing from csv: {missing}, not in meta: {extra})")
    return df[names]


def coerce_output(synth: pd.DataFrame, meta: dict, columns: list[str]) -> pd.DataFrame:
    """Same columns in the same order as train; categorical as string labels,
    integers as integers, missing as NaN (written empty)."""
    if not isinstance(synth, pd.DataFrame):
        raise TypeError(f"adapter.sample returned {type(synth).__name__}, expected a pandas DataFrame")
    absent = [c for c in columns if c not in synth.columns]
    if absent:
        raise ValueError(f"sampled table lacks columns {absent}")
    out = {}
    for c in meta["columns"]:
        name, kind = c["name"], c["kind"]
        s = synth[name].reset_index(drop=True)
        if kind == ID_KIND:
            out[name] = s.map(lambda x: x if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)).astype(object)
        elif kind in CATEGORICAL_KINDS:
            cats = c["categories"]
            lookup = {v: v for v in cats}
            # tools may hand back numbers for labels like "0"/"1" (0, 0.0, True ...)
            for v in cats:
                try:
                    f = float(v)
                    lookup.setdefault(repr(f), v)
                    if f.is_integer():
                        lookup.setdefault(str(int(f)), v)
                except ValueError:
                    pass

            def label(x, lookup=lookup):
                if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
                    return np.nan
                if isinstance(x, (bool, np.bool_)):
                    x = int(x)
                if isinstance(x, (float, np.floating)):
                    key = repr(float(x))
                    if key in lookup:
                        return lookup[key]
                    if float(x).is_integer():
                        x = int(x)
                k = str(x)
                return lookup.get(k, k)

            out[name] = s.map(label).astype(object)
        else:
            v = pd.to_numeric(s, errors="coerce").astype("float64")
            if kind == "integer":
                out[name] = v.round().astype("Int64")
            else:
                out[name] = v
    return pd.DataFrame(out, columns=columns)


def check_output(df: pd.DataFrame, meta: dict) -> dict:
    """Counts of values outside the public bounds / category lists, and of
    missing values in columns that are not nullable."""
    report = {"out_of_bounds": {}, "unknown_categories": {}, "nulls_in_non_nullable": {}, "missing_fraction": {}}
    for c in meta["columns"]:
        name = c["name"]
        s = df[name]
        if c["kind"] == ID_KIND:
            continue
        miss = s.isna()
        if miss.any():
            report["missing_fraction"][name] = round(float(miss.mean()), 4)
            if not c.get("nullable"):
                report["nulls_in_non_nullable"][name] = int(miss.sum())
        if c["kind"] in CATEGORICAL_KINDS:
            bad = ~s[~miss].isin(c["categories"])
            if bad.any():
                report["unknown_categories"][name] = int(bad.sum())
        else:
            v = s[~miss].astype("float64")
            bad = (v < float(c["lower"])) | (v > float(c["upper"]))
            if bad.any():
                report["out_of_bounds"][name] = int(bad.sum())
    return report


def unit(meta: dict) -> str:
    """What ``--n`` counts: rows, or the patients of a long table (each with its visits)."""
    return "patients" if meta.get("patient") else "rows"


def n_units(df: pd.DataFrame, meta: dict) -> int:
    patient = meta.get("patient")
    return int(df[patient].nunique()) if patient and patient in df.columns else int(len(df))


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tool", required=True, help="sdv | smartnoise | mostlyai | clinsynth")
    p.add_argument("--synthesizer", required=True)
    p.add_argument("--train", required=True, help="training table (CSV)")
    p.add_argument("--meta", required=True, help="meta.json: kinds, public bounds and categories, delta")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epsilon", type=float, default=None, help="privacy budget (DP synthesizers only)")
    p.add_argument("--n", type=int, default=None,
                   help="rows (patients of a long table) to sample into --out (default: as many as train)")
    p.add_argument("--speed-rows", type=int, default=20000, help="rows of the timed second draw (0: skip)")
    p.add_argument("--throughput-seconds", type=float, default=0.0,
                   help="after the timed draw, draw --speed-rows again until this long has passed in all (0: skip)")
    p.add_argument("--out", required=True, help="synthetic table (CSV)")
    p.add_argument("--result", required=True, help="result.json")
    p.add_argument("--param", action="append", default=[], type=parse_param, metavar="KEY=VALUE",
                   help="hyperparameter passed to the tool (repeatable; value read as JSON if it parses)")
    p.add_argument("--check", action="store_true",
                   help="quick smoke test: the adapter's small settings (few epochs/rounds) under --param")
    return p


def run(args: argparse.Namespace, result: dict) -> None:
    notes = result["notes"]
    limit_torch_threads()
    meta = read_meta(args.meta)
    delta = meta.get("delta")
    train = read_train(args.train, meta)
    columns = list(train.columns)
    n = int(args.n) if args.n is not None else n_units(train, meta)
    result.update(n_train=n_units(train, meta), delta=delta)  # patients of a long table
    if meta.get("patient"):
        result["n_train_rows"] = int(len(train))

    from adapters import load_adapter

    adapter = load_adapter(args.tool)
    synths = getattr(adapter, "SYNTHESIZERS", {})
    if args.synthesizer not in synths:
        raise ValueError(f"tool {args.tool!r} has no synthesizer {args.synthesizer!r}; it has {sorted(synths)}")
    is_dp = synths[args.synthesizer].get("dp")
    if is_dp is None:  # runs with and without DP (clinsynth's auto)
        is_dp = args.epsilon is not None
    if is_dp and args.epsilon is None:
        raise ValueError(f"{args.tool} {args.synthesizer} is differentially private: --epsilon is required")
    if not is_dp and args.epsilon is not None:
        raise ValueError(f"{args.tool} {args.synthesizer} is not differentially private: run it without --epsilon")
    if not is_dp:
        delta = None
        result["delta"] = None

    params = dict(args.param)
    if args.check:
        check = dict(getattr(adapter, "CHECK_PARAMS", {}).get(args.synthesizer, {}))
        check.update(params)
        params = check
        notes.append(f"--check: quick settings {json.dumps(jsonable(check))}; not the tool's defaults, not for benchmark numbers")
    result["check"] = bool(args.check)

    # importing the tool happens here (version() imports it), before the baseline; an adapter whose
    # tool imports part of itself lazily (clinsynth: its DP accountant) loads it here, so no tool's
    # fit time includes importing its libraries
    result["tool_version"] = adapter.version()
    if hasattr(adapter, "preload"):
        adapter.preload(is_dp)
    limit_torch_threads()  # torch may only now be imported by the adapter
    result["torch_version"] = dist_version("torch")
    result["threads"] = THREADS

    seed_everything(args.seed)
    baseline = current_rss_mb()
    result["baseline_rss_mb"] = round(baseline, 1) if baseline is not None else None
    t0, cpu0 = time.perf_counter(), time.process_time()
    model, effective = adapter.fit(train, meta, args.synthesizer, args.epsilon, delta, args.seed, params)
    result["fit_seconds"] = round(time.perf_counter() - t0, 3)
    result["fit_cpu_seconds"] = round(time.process_time() - cpu0, 3)  # steadier than wall time on a shared machine
    peak = peak_rss_mb()
    result["fit_peak_rss_mb"] = round(peak, 1)
    result["fit_memory_mb"] = round(peak - baseline, 1) if baseline is not None else None

    effective = dict(effective or {})
    notes.extend(str(x) for x in effective.pop("_notes", []) or [])
    if "delta" in effective:
        result["delta"] = effective["delta"]
    result["params"] = jsonable(effective)

    seed_everything(args.seed)
    t0 = time.perf_counter()
    synth = adapter.sample(model, n, args.seed)
    result["sample_seconds"] = round(time.perf_counter() - t0, 3)
    synth = coerce_output(synth, meta, columns)
    result["n_sampled"] = n_units(synth, meta)
    if result["n_sampled"] != n:
        notes.append(f"asked for {n} {unit(meta)}, the tool returned {result['n_sampled']}")
    if meta.get("patient"):
        result["n_sampled_rows"] = int(len(synth))
    checks = check_output(synth, meta)
    result["output_checks"] = checks
    for key in ("out_of_bounds", "unknown_categories", "nulls_in_non_nullable"):
        if checks[key]:
            notes.append(f"output check: {key} {checks[key]}")
    atomic_write_csv(args.out, synth)

    speed_rows = int(args.speed_rows or 0)
    result["speed_rows"] = speed_rows
    if speed_rows > 0:
        seed_everything(args.seed + 1)
        t0 = time.perf_counter()
        draw = adapter.sample(model, speed_rows, args.seed + 1)
        dt = time.perf_counter() - t0
        result["speed_seconds"] = round(dt, 3)
        result["sample_rows_per_second"] = round(len(draw) / dt, 1) if dt > 0 else None
        if n_units(draw, meta) != speed_rows:
            notes.append(f"speed draw: asked for {speed_rows} {unit(meta)}, got {n_units(draw, meta)}")
        del draw
        if args.throughput_seconds > 0:
            measure_throughput(adapter, model, speed_rows, args.seed + 2, args.throughput_seconds, dt, result)


def measure_throughput(adapter, model, rows: int, seed: int, seconds: float, first: float, result: dict) -> None:
    """Sampling throughput: the timed draw and more of the same size (seeds ``seed``, ``seed`` + 1, …)
    until ``seconds`` have passed in all; rows drawn over the time they took, first draw included.

    Why: one draw of a fast sampler lasts a few milliseconds, which a page fault storm or a stolen
    time slice can double; a slow sampler's single draw is long enough already and is not repeated."""
    draws, total = 1, first
    while total < seconds:
        seed_everything(seed)
        t0 = time.perf_counter()
        draw = adapter.sample(model, rows, seed)
        total += time.perf_counter() - t0
        del draw
        draws, seed = draws + 1, seed + 1
    result.update(throughput_draws=draws, throughput_seconds=round(total, 4),
                  throughput_rows_per_second=round(draws * rows / total, 1))


class Terminated(Exception):
    """The process got SIGTERM (e.g. an orchestrator's timeout)."""


def _on_sigterm(signum, frame):
    raise Terminated(f"signal {signum} (SIGTERM) received: the cell was stopped before it finished")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # a timeout that sends SIGTERM still gets a result.json saying so
    signal.signal(signal.SIGTERM, _on_sigterm)
    result = {
        "tool": args.tool, "synthesizer": args.synthesizer, "tool_version": None,
        "epsilon": args.epsilon, "delta": None, "seed": args.seed, "params": dict(args.param),
        "n_train": None, "n_sampled": None, "fit_seconds": None, "sample_seconds": None,
        "speed_rows": args.speed_rows, "speed_seconds": None, "sample_rows_per_second": None,
        "throughput_draws": None, "throughput_seconds": None, "throughput_rows_per_second": None,
        "baseline_rss_mb": None, "fit_peak_rss_mb": None, "fit_memory_mb": None,
        "python": platform.python_version(), "python_executable": sys.executable,
        "torch_version": dist_version("torch"), "train": os.path.abspath(args.train),
        "meta": os.path.abspath(args.meta), "error": None, "notes": [],
    }
    t_start = time.perf_counter()
    code = 0
    try:
        run(args, result)
    except BaseException as exc:  # noqa: BLE001 - every failure goes into result.json
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        print(result["traceback"], file=sys.stderr)
        code = 1
    result["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    atomic_write_text(args.result, json.dumps(jsonable(result), indent=1) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
