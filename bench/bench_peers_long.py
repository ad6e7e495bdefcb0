"""How long would SDV's PARSynthesizer and mostlyai-engine's sequential mode take on compare.py's
long_trial table (4,000 training patients, ~46,000 visits)? Measure a little, extrapolate, record.

As ``bench_mostlyai_ehr.py`` does for the EHR table: rather than let a cell burn hours, each step
fits the tool exactly as ``run_cell.py`` does (same train.csv / meta.json, same adapter, one torch
thread) for a short run and extrapolates the cell's least duration; ``record`` writes the cells
whose estimate exceeds ``--limit-minutes`` into ``compare_cells.jsonl`` as ``timeout`` rows that did
not run (``ran`` false, the estimate in the row and the reason).

``par`` (the sdv venv's python): PAR with ``epochs=1``; PAR trains its default 128 epochs, with no
  early stopping, so a cell takes about 128 such fits (the context model's and the transforms'
  setup, seconds, counted 128 times: a slight overestimate).
``mostlyai`` (the mostlyai venv's python): the two models of ``adapters/mostlyai_long.py`` for one
  epoch without DP and ``--dp-epochs`` with DP at ε = 1, read from the engine's progress messages;
  the fewest epochs as in ``bench_mostlyai_ehr.py`` (5 without DP: its early stopping; with DP also
  the first epoch whose accountant ε exceeds the model's share of the budget). Then, in the same
  run, clinsynth's ``auto`` at ε = 1 (dp-visitchain) through ``run_cell.py`` with clinsynth's python,
  so the DP fit-time ratio is measured in one run under the same load.
``dp-ratio`` (clinsynth's python): whole DP fits, mostlyai-engine's then clinsynth's, through
  ``run_cell.py`` at ε = 1 and 4, one after the other: the fit-time ratio of issue 21, from one run.

    bench/.peers/sdv/bin/python bench/bench_peers_long.py par
    bench/.peers/mostlyai/bin/python bench/bench_peers_long.py mostlyai --clinsynth-python .venv/bin/python
    python bench/bench_peers_long.py dp-ratio    # mostlyai's DP fit, then clinsynth's, at eps = 1 and 4
    python bench/bench_peers_long.py record
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULT = BENCH / "results" / "peers_long.json"
DATA = BENCH / ".compare" / "long_trial"
PAR_EPOCHS = 128  # PARSynthesizer's default
EPSILONS = (1.0, 4.0)


def _load(args):
    sys.path.insert(0, str(BENCH))
    import run_cell

    run_cell.limit_torch_threads(1)
    meta = run_cell.read_meta(str(args.meta))
    return run_cell, meta, run_cell.read_train(str(args.train), meta)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _merge(path: Path, key: str, value: dict) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def measure_par(args: argparse.Namespace) -> None:
    run_cell, meta, train = _load(args)
    from adapters import sdv as adapter

    out = {"tool_version": adapter.version(), "n_train_patients": int(train[meta["patient"]].nunique()),
           "n_train_rows": len(train), "torch_threads": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "load_average_at_start": list(os.getloadavg())}
    run_cell.limit_torch_threads(1)
    cpu, started = _cpu(), time.perf_counter()
    model, _ = adapter.fit(train, meta, "par", None, None, 0, {"epochs": 1})
    wall, cpu = time.perf_counter() - started, _cpu() - cpu
    started = time.perf_counter()
    adapter.sample(model, args.sample_patients, 0)
    sample_s = time.perf_counter() - started
    out.update(epochs=1, fit_wall_seconds=round(wall, 1), fit_cpu_seconds=round(cpu, 1), default_epochs=PAR_EPOCHS,
               sample_patients=args.sample_patients, sample_seconds=round(sample_s, 2),
               cell_seconds_estimate=round(PAR_EPOCHS * wall, 1), cell_cpu_seconds_estimate=round(PAR_EPOCHS * cpu, 1),
               finished=time.strftime("%Y-%m-%dT%H:%M:%S"), load_average_at_end=list(os.getloadavg()))
    _merge(args.out, "par", out)
    print(json.dumps(out), flush=True)


def _progress(adapter, workspace) -> dict:
    progress = adapter._progress(workspace)
    last = progress.iloc[-1]
    return {k: (float(last[k]) if k in last and last[k] == last[k] else None)
            for k in ("epoch", "steps", "samples", "total_time", "dp_eps", "dp_delta")}


def measure_mostlyai(args: argparse.Namespace) -> None:
    run_cell, meta, train = _load(args)
    from adapters import mostlyai as adapter
    from adapters import mostlyai_long
    from bench_mostlyai_ehr import MIN_EPOCHS_EARLY_STOP, accountant_epsilon, epochs_to_budget

    delta = float(meta["delta"])
    out: dict = {"tool_version": adapter.version(), "n_train_patients": int(train[meta["patient"]].nunique()),
                 "n_train_rows": len(train), "torch_threads": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "load_average_at_start": list(os.getloadavg())}
    for label, synthesizer, eps, epochs in (("non_dp", "tabularargn", None, 1.0),
                                            ("dp", "dp-tabularargn", 1.0, args.dp_epochs)):
        started = time.perf_counter()
        fitted, _ = adapter.fit(train, meta, synthesizer, eps, delta if eps else None, 0, {"max_epochs": epochs})
        wall = time.perf_counter() - started
        models = {name: _progress(adapter, part.workspace) for name, part in
                  (("subject", fitted.subjects), ("visits", fitted.visits))}
        trained = sum(m["total_time"] for m in models.values())
        part = {"max_epochs": epochs, "fit_wall_seconds": round(wall, 1), "setup_seconds": round(wall - trained, 1),
                "models": models}
        for m in models.values():
            m["seconds_per_epoch"] = round(m["total_time"] / m["epoch"], 1)
        per_epoch = sum(m["seconds_per_epoch"] for m in models.values())
        if eps is None:
            part["min_epochs"] = MIN_EPOCHS_EARLY_STOP
            part["cell_seconds_lower_bound"] = round(wall - trained + MIN_EPOCHS_EARLY_STOP * per_epoch, 1)
        else:
            from mostlyai.engine.domain import DifferentialPrivacyConfig

            cells = {}
            for e in EPSILONS:
                seconds = wall - trained
                for name, (e_part, d_part) in zip(models, mostlyai_long.budgets(e, delta, mostlyai_long.SUBJECT_SHARE)):
                    config = DifferentialPrivacyConfig(**adapter.dp_config(e_part, d_part, adapter.VALUE_PROTECTION_SHARE, {}))
                    steps = max(1, round(models[name]["steps"] / models[name]["epoch"]))
                    to_budget = epochs_to_budget(config.noise_multiplier, 1.0 / steps, steps, d_part,
                                                 e_part - config.value_protection_epsilon)
                    n_epochs = min(to_budget, MIN_EPOCHS_EARLY_STOP)
                    cells.setdefault(f"{e:g}", {})[name] = {"steps_per_epoch": steps, "epochs_to_exceed_budget": to_budget,
                                                            "min_epochs": n_epochs}
                    seconds += n_epochs * models[name]["seconds_per_epoch"]
                    if e == 1.0:
                        models[name]["epsilon_recomputed"] = round(accountant_epsilon(
                            config.noise_multiplier, 1.0 / steps, int(models[name]["steps"]), d_part)
                            + config.value_protection_epsilon, 3)
                cells[f"{e:g}"]["cell_seconds_lower_bound"] = round(seconds, 1)
            part["cells"] = cells
        out[label] = part
        print(label, json.dumps(part), flush=True)
    if args.clinsynth_python:
        out["clinsynth_dp"] = _clinsynth_dp(args)
        mostly = out["dp"]["cells"]["1"]["cell_seconds_lower_bound"]
        out["dp_fit_ratio_eps1"] = round(mostly / out["clinsynth_dp"]["fit_seconds"], 1)
        print("clinsynth", json.dumps(out["clinsynth_dp"]), "ratio", out["dp_fit_ratio_eps1"], flush=True)
    out.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S"), load_average_at_end=list(os.getloadavg()))
    _merge(args.out, "mostlyai", out)


def _clinsynth_dp(args: argparse.Namespace) -> dict:
    """clinsynth auto at ε = 1 (dp-visitchain) through run_cell.py, right after the engine's DP fit."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [str(args.clinsynth_python), str(BENCH / "run_cell.py"), "--tool", "clinsynth", "--synthesizer", "auto",
               "--train", str(args.train), "--meta", str(args.meta), "--seed", "0", "--epsilon", "1",
               "--speed-rows", "0", "--out", str(Path(tmp) / "synth.csv"), "--result", str(result)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        subprocess.run(cmd, check=True, env=env, cwd=BENCH.parent, capture_output=True)
        r = json.loads(result.read_text())
    return {"fit_seconds": r["fit_seconds"], "model": (r.get("params") or {}).get("model"),
            "epsilon_spent": (r.get("params") or {}).get("epsilon_spent")}


def dp_ratio(args: argparse.Namespace) -> None:
    """mostlyai-engine's DP fit and clinsynth's (auto: dp-visitchain) on the same table, one after the
    other in one run, each through ``run_cell.py`` in its own venv (same harness, same timer: the fit
    alone, libraries imported before it), at each ε; the ratio of their fit times."""
    out = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_average_at_start": list(os.getloadavg()),
           "epsilons": {}}
    pythons = {"mostlyai": BENCH / ".peers" / "mostlyai" / "bin" / "python", "clinsynth": Path(sys.executable)}
    synthesizers = {"mostlyai": "dp-tabularargn", "clinsynth": "auto"}
    for eps in EPSILONS:
        fits = {}
        for tool in ("mostlyai", "clinsynth"):
            with tempfile.TemporaryDirectory() as tmp:
                result = Path(tmp) / "result.json"
                cmd = [str(pythons[tool]), str(BENCH / "run_cell.py"), "--tool", tool, "--synthesizer",
                       synthesizers[tool], "--train", str(args.train), "--meta", str(args.meta), "--seed", "0",
                       "--epsilon", repr(eps), "--n", "100", "--speed-rows", "0",
                       "--out", str(Path(tmp) / "synth.csv"), "--result", str(result)]
                env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                subprocess.run(cmd, check=False, env=env, cwd=BENCH.parent, capture_output=True)
                r = json.loads(result.read_text())
            if r.get("error"):
                raise RuntimeError(f"{tool} at eps={eps}: {r['error']}")
            params = r.get("params") or {}
            fits[tool] = {"fit_seconds": r["fit_seconds"], "model": params.get("model"),
                          "epsilon_reported": params.get("epsilon_reported", params.get("epsilon_spent"))}
        fits["ratio"] = round(fits["mostlyai"]["fit_seconds"] / fits["clinsynth"]["fit_seconds"], 1)
        out["epsilons"][f"{eps:g}"] = fits
        print(f"eps={eps:g}", json.dumps(fits), flush=True)
    out.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S"), load_average_at_end=list(os.getloadavg()))
    _merge(args.out, "dp_ratio", out)


def record(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH))
    from compare_grid import Cell
    from compare_runner import Paths
    from compare_store import CellStore, record_not_run

    est = json.loads(args.out.read_text())
    limit = args.limit_minutes * 60
    store = CellStore(args.cells or Paths().cells)
    plans = []
    if "par" in est:
        p = est["par"]
        plans.append(("sdv", "par", None, p["cell_seconds_estimate"], p, "about",
                      f"one epoch's fit {p['fit_wall_seconds']:.0f} s ({p['fit_cpu_seconds']:.0f} s CPU), "
                      f"x {p['default_epochs']} epochs (its default, no early stopping)"))
    if "mostlyai" in est:
        m = est["mostlyai"]
        nd = m["non_dp"]
        plans.append(("mostlyai", "tabularargn", None, nd["cell_seconds_lower_bound"], m, "at least",
                      f"one epoch {sum(x['seconds_per_epoch'] for x in nd['models'].values()):.0f} s (subject + visit "
                      f"model), at least {nd['min_epochs']} epochs"))
        for eps, cell in m["dp"]["cells"].items():
            epochs = ", ".join(f"{k} {v['min_epochs']}" for k, v in cell.items() if isinstance(v, dict))
            plans.append(("mostlyai", "dp-tabularargn", float(eps), cell["cell_seconds_lower_bound"], m, "at least",
                          f"one DP epoch {sum(x['seconds_per_epoch'] for x in m['dp']['models'].values()):.0f} s "
                          f"(measured over {m['dp']['max_epochs']:g} epoch), at least {epochs} epochs"))
    for tool, synthesizer, eps, seconds, source, how, why in plans:
        if seconds <= limit:
            print(f"long_trial {tool}:{synthesizer} eps={eps}: ~{seconds / 60:.0f} min, under the limit: run it")
            continue
        loads = (source.get("load_average_at_start") or [])[:1] + (source.get("load_average_at_end") or [])[:1]
        at = f" under a load of {min(loads):.0f}-{max(loads):.0f}" if loads else ""
        reason = (f"not run: estimated {how} {seconds / 60:.0f} min on this 2-core machine{at} ({why}; sampling "
                  f"on top; bench/results/peers_long.json), over the {args.limit_minutes:g}-min limit")
        record_not_run(store, [Cell("long_trial", tool, synthesizer, eps, seed) for seed in args.seeds], reason,
                       seconds, source.get("tool_version"))
        print(f"long_trial {tool}:{synthesizer} eps={eps}: {reason}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("step", choices=["par", "mostlyai", "dp-ratio", "record"])
    p.add_argument("--train", type=Path, default=DATA / "train.csv")
    p.add_argument("--meta", type=Path, default=DATA / "meta.json")
    p.add_argument("--dp-epochs", type=float, default=0.25, help="epochs (a fraction) of the DP fits measured")
    p.add_argument("--sample-patients", type=int, default=50, help="patients of the timed sample (par)")
    p.add_argument("--clinsynth-python", type=Path, default=None, help="mostlyai: also time clinsynth's DP fit")
    p.add_argument("--limit-minutes", type=float, default=30.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=RESULT)
    p.add_argument("--cells", type=Path, default=None)
    args = p.parse_args(argv)
    {"par": measure_par, "mostlyai": measure_mostlyai, "dp-ratio": dp_ratio, "record": record}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
