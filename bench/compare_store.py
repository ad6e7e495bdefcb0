"""The result store: a cell's row (its key, status and the fields taken from run_cell's result.json)
and the append-only JSON-lines record of finished cells that makes a run resumable."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from clinsynth.data.io import jsonable
from compare_grid import Cell

#: statuses of a cell that is done; "not installed" is looked at again on every run
FINISHED = ("ok", "failed", "timeout")
HOPELESS = ("failed", "timeout")  # a seed 0 with one of these spares the other seeds
#: fields of run_cell's result.json copied into a cell's row (and compare.csv's columns, in this order)
RESULT_FIELDS = ("tool_version", "delta", "n_train", "n_sampled", "fit_seconds", "sample_seconds", "speed_rows",
                 "speed_seconds", "sample_rows_per_second", "throughput_draws", "throughput_seconds",
                 "throughput_rows_per_second", "baseline_rss_mb", "fit_peak_rss_mb", "fit_memory_mb", "python",
                 "torch_version")


class CellStore:
    """Rows of finished cells, one JSON line each, appended as each cell ends; the last row of a key wins."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[row["key"]] = row

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def put(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(jsonable(row)) + "\n")
        self.rows[row["key"]] = row


def base_row(cell: Cell, status: str, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    """A cell's row: who and what it is, how it ended (``ran``: a finished status), when; ``extra`` appended."""
    return {"key": cell.key, "dataset": cell.dataset, "tool": cell.tool, "synthesizer": cell.synthesizer,
            "epsilon": cell.epsilon, "seed": cell.seed, "cell_params": cell.params_text, "status": status,
            "reason": reason, "ran": status in FINISHED, "finished_at": dt.datetime.now().isoformat(timespec="seconds"),
            **extra}


def record_not_run(store: CellStore, cells: list[Cell], reason: str, estimated_seconds: float,
                   tool_version: str | None) -> None:
    """Cells a measured estimate puts over the time limit, written as ``timeout`` rows that did not run
    (``ran`` false, the estimate and the reason in the row); a cell that already finished is kept."""
    for cell in cells:
        if (store.get(cell.key) or {}).get("status") == "ok":
            continue
        store.put(base_row(cell, "timeout", reason, ran=False, estimated_seconds=estimated_seconds,
                           tool_version=tool_version))
