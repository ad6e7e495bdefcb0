"""The runner: each cell fitted and sampled by ``bench/run_cell.py`` in a subprocess of its tool's
venv (a crash, timeout or out-of-memory kill costs one cell), then scored here and stored; a
hopeless seed 0 spares the other seeds, and kept tables can be scored again without refitting."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from compare_datasets import DatasetFiles
from compare_grid import Cell
from compare_scoring import coerce_synthetic, score
from compare_store import FINISHED, HOPELESS, RESULT_FIELDS, CellStore, base_row

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Paths:
    """Where the run reads and writes; tests point all of it at a temporary directory."""

    work: Path = BENCH / ".compare"
    results: Path = BENCH / "results"
    peers: Path = BENCH / ".peers"
    run_cell: Path = BENCH / "run_cell.py"

    @property
    def cells(self) -> Path:
        return self.results / "compare_cells.jsonl"

    @property
    def speed_cells(self) -> Path:
        return self.results / "speed_cells.jsonl"

    def python(self, tool: str) -> Path:
        """The interpreter of a tool's venv; clinsynth runs in this one."""
        return Path(sys.executable) if tool == "clinsynth" else self.peers / tool / "bin" / "python"


@dataclass(frozen=True)
class Timing:
    """How a cell times sampling: ``rows`` per timed draw; draws repeated until ``throughput_seconds``."""

    rows: int = 20_000
    throughput_seconds: float = 1.0


Runner = Callable[[Cell], dict[str, Any]]


def run_cells(cells: Sequence[Cell], store: CellStore, runner: Runner, retry_failed: bool = False,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run each cell not yet finished, one at a time; the rows added, in order.

    A cell whose seed 0 failed or timed out is recorded with seed 0's status and reason and not
    run (``ran`` false): a peer that cannot handle a dataset does not burn hours three times."""
    added = []
    for i, cell in enumerate(cells, 1):
        previous = store.get(cell.key)
        if previous and previous["status"] in FINISHED and not (retry_failed and previous["status"] != "ok"):
            log(f"[{i}/{len(cells)}] {cell.key}: done before ({previous['status']}), skipped")
            continue
        first = store.get(cell.with_seed(0).key) if cell.seed != 0 else None
        if first and first["status"] in HOPELESS:
            row = base_row(cell, first["status"], first["reason"], ran=False, propagated_from_seed=0)
        else:
            log(f"[{i}/{len(cells)}] {cell.key}: running")
            row = runner(cell)
        store.put(row)
        added.append(row)
        log(f"[{i}/{len(cells)}] {cell.key}: {row['status']}" + (f" ({row['reason']})" if row.get("reason") else ""))
    return added


def cell_command(cell: Cell, files: DatasetFiles, cell_dir: Path, paths: Paths, timing: Timing) -> list[str]:
    """run_cell's command line. A long table's ``--n`` counts patients, and it has no timed draw of
    ``timing.rows`` *patients* (PAR samples sequence by sequence: 20,000 of them would outlast the fit)."""
    speed_rows = 0 if files.meta.get("patient") else timing.rows
    cmd = [str(paths.python(cell.tool)), str(paths.run_cell), "--tool", cell.tool, "--synthesizer", cell.synthesizer,
           "--train", str(files.train_csv), "--meta", str(files.meta_json), "--seed", str(cell.seed),
           "--n", str(files.n_train), "--speed-rows", str(speed_rows),
           "--throughput-seconds", repr(float(timing.throughput_seconds)),
           "--out", str(cell_dir / "synth.csv"), "--result", str(cell_dir / "result.json")]
    if cell.epsilon is not None:
        cmd += ["--epsilon", repr(float(cell.epsilon))]
    for k, v in cell.params:
        cmd += ["--param", f"{k}={v}"]
    return cmd


def execute(cmd: list[str], log_path: Path, timeout: float, cwd: Path) -> tuple[str, str | None]:
    """Run ``cmd`` in its own process group; ("ok" | "failed" | "timeout", reason)."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the cell's own group: its workers go too
            proc.wait()
            return "timeout", f"timed out after {timeout:g} s"
    if code == 0:
        return "ok", None
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return "failed", f"killed by {name}{hint}"
    return "failed", f"exit code {code}: {_last_line(log_path)}"


def _last_line(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def run_one(cell: Cell, files: DatasetFiles, paths: Paths, timeout: float, timing: Timing,
            scored: bool = True) -> dict[str, Any]:
    """Fit and sample in the tool's venv, then score here (unless not ``scored``); a row whatever happens."""
    python = paths.python(cell.tool)
    if not python.exists():
        return base_row(cell, "not installed", f"{python} missing (make it with bench/peers/setup.sh)")
    cell_dir = files.directory / ("cells" if scored else "speed_cells") / cell.dirname  # never a scored cell's table
    cell_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("synth.csv", "result.json"):
        (cell_dir / stale).unlink(missing_ok=True)
    status, reason = execute(cell_command(cell, files, cell_dir, paths, timing), cell_dir / "log.txt",
                             timeout, paths.run_cell.parent.parent)
    return score_cell(cell, files, cell_dir, status, reason, scored)


def score_cell(cell: Cell, files: DatasetFiles, cell_dir: Path, status: str = "ok",
               reason: str | None = None, scored: bool = True) -> dict[str, Any]:
    """The row of a cell whose subprocess has ended: its result.json, and scores when it sampled."""
    result = _read_json(cell_dir / "result.json")
    extra = {k: result.get(k) for k in RESULT_FIELDS}
    if files.meta.get("patient"):  # a long table counts patients (run_cell's result did not always)
        extra.update(n_train=files.meta["n_train"], n_train_rows=files.meta.get("n_train_rows"))
    extra.update(n_test=files.meta.get("n_test"), n_columns=len(files.meta["columns"]), target=files.meta["target"],
                 params=json.dumps(result.get("params"), sort_keys=True) if result.get("params") is not None else None)
    notes = list(result.get("notes") or [])
    if result.get("error"):
        status, reason = ("failed" if status == "ok" else status), result["error"]
    if status == "ok" and scored:
        try:
            started = time.perf_counter()
            synth = pd.read_csv(cell_dir / "synth.csv", dtype=str, keep_default_na=False, na_values=[""])
            synth, coerced = coerce_synthetic(synth, files.meta)
            extra.update(score(files.train, files.test, synth, files.schema, cell.seed))
            extra["score_seconds"] = round(time.perf_counter() - started, 2)
            notes += coerced
        except Exception as e:  # noqa: BLE001 - an unscorable table is a result, not a crash
            status, reason = "failed", f"scoring: {type(e).__name__}: {e}"
            (cell_dir / "score_error.txt").write_text(traceback.format_exc())
    return base_row(cell, status, reason, notes="; ".join(map(str, notes)) or None, **extra)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def rescore(cells: Sequence[Cell], files: dict[str, DatasetFiles], store: CellStore,
            log: Callable[[str], None] = print) -> int:
    """Score again every selected cell that sampled (its synth.csv is kept), without refitting."""
    n = 0
    for cell in cells:
        previous = store.get(cell.key)
        cell_dir = files[cell.dataset].directory / "cells" / cell.dirname
        if not previous or not previous.get("ran") or not (cell_dir / "synth.csv").is_file():
            continue
        row = score_cell(cell, files[cell.dataset], cell_dir)
        store.put(row)
        n += 1
        log(f"rescored {cell.key}: {row['status']}")
    return n
