"""The newcomer's path, timed: `clinsynth demo` end to end, and the AC-GAN's fit against TVAE's.

    python bench/bench_demo.py [--runs 3] [--datasets trial breast_cancer whas500 flchain]
                               [--json bench/results/demo.json]

Issue 22's bars: the demo in at most 60 s on 2 cores, and the AC-GAN's fit within 2× TVAE's on
every table. The demo runs as a user runs it (a fresh process, default options, ``--quiet``);
the fits run through ``bench/compare.py``'s cells (each tool in its own venv, the same training
split, one seed, sampling not scored), all in this one run so the two figures share the machine's
load, and every tool with the same thread count (``--threads``, default 1: PyTorch and the math
libraries of each cell's process, through ``BENCH_THREADS``; two threads per tool on a loaded 2-core
machine made both thrash). Each fit reports wall and CPU seconds; the ratio is given for both, the
CPU one being the steadier on a shared machine. TVAE needs the SDV venv (``bash bench/peers/setup.sh
sdv``; ``--peers-dir`` points at another checkout's); without it only the clinsynth figures are reported.

    python bench/bench_demo.py --no-demo --datasets trial breast_cancer --json bench/results/acgan_vs_tvae.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_datasets import DATASETS, prepare_dataset  # noqa: E402  (bench/compare.py's datasets)
from compare_grid import Cell  # noqa: E402
from compare_report import machine  # noqa: E402
from compare_runner import Paths, Timing, run_one  # noqa: E402  (each tool in its own venv)

from clinsynth.data.io import jsonable, write_text_atomic  # noqa: E402


def time_demo(work: Path, runs: int) -> dict[str, Any]:
    """Wall seconds of ``clinsynth demo`` in a fresh process, and the manifest's split of the last run."""
    seconds = []
    manifest: dict[str, Any] = {}
    for i in range(runs):
        out = work / f"demo-{i}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "clinsynth.cli", "demo", "--quiet", "--out", str(out)], check=True,
                       capture_output=True)
        seconds.append(time.perf_counter() - start)
        manifest = json.loads((out / "steward" / "manifest.json").read_text())
    return {"runs": runs, "seconds": [round(s, 1) for s in seconds], "median_seconds": round(statistics.median(seconds), 1),
            "model": manifest["model"]["name"], "timings_seconds": manifest["timings_seconds"],
            "threads": manifest.get("threads"), "bar_seconds": 60.0,
            "met": statistics.median(seconds) <= 60.0}


def time_fits(work: Path, datasets: list[str], synthesizers: list[tuple[str, str]], timeout: float,
              peers: Path = Paths.peers, threads: int = 1) -> list[dict[str, Any]]:
    """Fit seconds (wall and CPU) of each synthesizer on each dataset (seed 0, non-DP), through
    compare.py's cells, every cell's process on ``threads`` threads."""
    os.environ["BENCH_THREADS"] = str(threads)  # read by bench/run_cell.py in each cell's process
    paths = Paths(work=work / "compare", results=work / "results", peers=peers)
    rows = []
    for name in datasets:
        files = prepare_dataset(DATASETS[name], paths.work)
        for tool, synthesizer in synthesizers:
            cell = Cell(name, tool, synthesizer, None, 0)
            row = run_one(cell, files, paths, timeout, Timing(rows=1000, throughput_seconds=0.0),
                                  scored=False)
            result = files.directory / "speed_cells" / cell.dirname / "result.json"
            cpu = json.loads(result.read_text()).get("fit_cpu_seconds") if result.is_file() else None
            rows.append({"dataset": name, "synthesizer": f"{tool}:{synthesizer}", "status": row["status"],
                         "reason": row.get("reason"), "fit_seconds": row.get("fit_seconds"),
                         "fit_cpu_seconds": cpu, "threads": threads})
            print(f"{name}: {tool}:{synthesizer} {row['status']} fit {row.get('fit_seconds')} s (cpu {cpu} s)", flush=True)
    return rows


def fit_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """acgan's fit seconds over TVAE's, per dataset, where both ran."""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        ok = [r for r in rows if r["dataset"] == name and r["status"] == "ok"]
        fit = {r["synthesizer"]: r["fit_seconds"] for r in ok}
        cpu = {r["synthesizer"]: r.get("fit_cpu_seconds") for r in ok}
        acgan, tvae = fit.get("clinsynth:acgan"), fit.get("sdv:tvae")
        ratio = round(acgan / tvae, 2) if acgan and tvae else None
        a_cpu, t_cpu = cpu.get("clinsynth:acgan"), cpu.get("sdv:tvae")
        cpu_ratio = round(a_cpu / t_cpu, 2) if a_cpu and t_cpu else None
        out.append({"dataset": name, "acgan_fit_seconds": acgan, "tvae_fit_seconds": tvae, "ratio": ratio,
                    "acgan_fit_cpu_seconds": a_cpu, "tvae_fit_cpu_seconds": t_cpu, "cpu_ratio": cpu_ratio,
                    "bar": 2.0, "met": None if ratio is None else ratio <= 2.0})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--runs", type=int, default=3, help="demo runs (the median is reported)")
    p.add_argument("--datasets", nargs="+", default=["trial", "breast_cancer", "whas500", "flchain"],
                   choices=list(DATASETS))
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per fit")
    p.add_argument("--no-fits", action="store_true", help="time the demo only")
    p.add_argument("--no-demo", action="store_true", help="time the fits only")
    p.add_argument("--threads", type=int, default=1, help="threads of every tool's fit (the same for all)")
    p.add_argument("--peers-dir", type=Path, default=Paths.peers, help="the peers' venvs (bench/.peers)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clinsynth-bench-demo-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"machine": machine()}
        if not args.no_demo:
            result["demo"] = time_demo(work, args.runs)
            print(f"demo: median {result['demo']['median_seconds']} s over {args.runs} run(s) "
                  f"({result['demo']['model']}; bar 60 s)", flush=True)
        if not args.no_fits:
            synths = [("clinsynth", "acgan"), ("clinsynth", "auto"), ("sdv", "tvae")]
            rows = time_fits(work, args.datasets, synths, args.timeout, args.peers_dir, args.threads)
            result["fits"] = rows
            result["acgan_over_tvae"] = fit_ratios(rows)
            for r in result["acgan_over_tvae"]:
                print(f"{r['dataset']}: acgan {r['acgan_fit_seconds']} s, TVAE {r['tvae_fit_seconds']} s, "
                      f"ratio {r['ratio']} (cpu {r['cpu_ratio']}; bar 2)", flush=True)
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(jsonable(result), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
