"""Streamed sampling to partitioned Parquet (issue 24 item 5) against in-memory ``model.sample(n)``.

A ``bayesnet`` is fitted once on a SIMULATED 20-column table (``simulate_trial``'s columns after the
identifier, as in ``bench_scale.py``) and saved. Then, each in a fresh child process (spawn), one
after the other so the shared machine's load moves them alike:

* ``memory``: ``load(bundle).sample(n)`` into one DataFrame (after a small warm-up draw): the
  in-memory rate of one core, the baseline;
* ``stream``: ``sample_to_parquet(bundle, n, folder, processes=k)`` for each ``k``, files written.

Reported: rows/s, rows/s per process, its ratio to the in-memory rate of the same run, and the peak
resident memory of the whole process tree (the child and its workers, summed, polled from /proc
every 50 ms). The bars (issue 24): peak ≤ 1.5 GB at 10⁸ rows, ≥ 0.8 × the in-memory per-core rate.

    OMP_NUM_THREADS=1 python bench/bench_sample_stream.py --rows 10000000 --memory-rows 10000000 \
        --processes 1 2 [--json bench/results/sample_stream.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

COLUMNS = 20
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid and p not in tree]
        tree.update(kids)
        frontier += kids
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def _fit(directory: Path, rows: int) -> Path:
    import clinsynth as cs
    from clinsynth.data.datasets import simulate_trial

    df = simulate_trial(rows, seed=1).iloc[:, 1:1 + COLUMNS]
    model = cs.create("bayesnet", progress=False).fit(df, cs.Schema.infer(df, target="arm"))
    path = directory / "model"
    model.save(path)
    return path


def _child(job: str, bundle: str, rows: int, processes: int, out: str, queue: mp.Queue) -> None:
    os.environ.setdefault("CLINSYNTH_THREADS", "1")
    import clinsynth as cs

    model = cs.load(bundle)
    model.sample(10_000, seed=99)  # warm-up: compiled loops, first touches
    start = time.perf_counter()
    if job == "memory":
        frame = model.sample(rows, seed=1)
        assert len(frame) == rows
    else:
        cs.sample_to_parquet(bundle, rows, out, seed=1, processes=processes)
    queue.put(time.perf_counter() - start)


def _measure(job: str, bundle: Path, rows: int, processes: int, scratch: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    out = scratch / f"out-{job}-{processes}"
    shutil.rmtree(out, ignore_errors=True)
    proc = ctx.Process(target=_child, args=(job, str(bundle), rows, processes, str(out), queue))
    proc.start()
    peak = [0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    seconds = queue.get()
    proc.join()
    stop.set()
    watcher.join()
    size = sum(p.stat().st_size for p in out.glob("*.parquet")) if out.exists() else 0
    shutil.rmtree(out, ignore_errors=True)
    return {"job": job, "rows": rows, "processes": processes, "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds), "rows_per_s_per_process": round(rows / seconds / processes),
            "peak_tree_rss_gb": round(peak[0] / 2**30, 3), "parquet_mb": round(size / 2**20, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000])
    parser.add_argument("--memory-rows", type=int, default=10_000_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--fit-rows", type=int, default=50_000)
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench-stream-", dir=args.scratch))
    try:
        bundle = _fit(scratch, args.fit_rows)
        memory = _measure("memory", bundle, args.memory_rows, 1, scratch)
        print(json.dumps(memory), flush=True)
        runs = []
        for rows in args.rows:
            for k in args.processes:
                run = _measure("stream", bundle, rows, k, scratch)
                run["ratio_per_process_vs_memory"] = round(run["rows_per_s_per_process"] / memory["rows_per_s"], 3)
                print(json.dumps(run), flush=True)
                runs.append(run)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"model": "bayesnet", "columns": COLUMNS, "memory": memory, "stream": runs,
              "load_average_at_end": os.getloadavg(), "cpus": os.cpu_count(), "machine": platform.platform(),
              "note": "ratios within one run; each job a fresh spawned process, run one after the other; "
                      "the machine is shared (2 cores, other work running), so absolute rows/s move"}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
