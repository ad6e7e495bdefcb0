"""bench/bench_mostlyai_ehr.py: mostlyai-engine's EHR cells, estimated from a short measurement and
recorded as not run when they would exceed the time limit (the arithmetic and the record; the
measurement itself needs the peer venv and minutes, and is not run here)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


est_mod = _load("bench_mostlyai_ehr_for_test", REPO / "bench" / "bench_mostlyai_ehr.py")
sys.path.insert(0, str(REPO / "bench"))  # bench/compare.py's modules import each other by name
try:
    import compare_grid
    import compare_report
    import compare_runner
    import compare_store
finally:
    sys.path.remove(str(REPO / "bench"))


def test_epochs_to_budget_is_the_first_epoch_over_the_budget():
    pytest.importorskip("opacus")
    noise, q, steps, delta = 1.5, 1 / 25, 25, 1e-5
    for budget in (0.9, 3.6):
        e = est_mod.epochs_to_budget(noise, q, steps, delta, budget)
        assert est_mod.accountant_epsilon(noise, q, e * steps, delta) > budget
        assert e == 1 or est_mod.accountant_epsilon(noise, q, (e - 1) * steps, delta) <= budget
    assert est_mod.epochs_to_budget(noise, q, steps, delta, 3.6) > est_mod.epochs_to_budget(noise, q, steps, delta, 0.9)


def _estimate(setup_s: float, epoch_s: float, dp_epoch_s: float) -> dict:
    """Measured figures; the bound is setup + the fewest epochs × one epoch."""
    return {"tool_version": "2.7.3", "load_average_at_start": [1.0, 1.0, 1.0],
            "non_dp": {"setup_seconds": setup_s, "seconds_per_epoch": epoch_s, "min_epochs": 5},
            "dp": {"setup_seconds": setup_s, "seconds_per_epoch": dp_epoch_s, "progress": {"epoch": 0.25},
                   "cells": {"1": {"min_epochs": 2}, "4": {"min_epochs": 5}}}}


def test_record_marks_only_cells_over_the_limit_and_compare_then_skips_them(tmp_path):
    estimate, cells = tmp_path / "est.json", tmp_path / "compare_cells.jsonl"
    estimate.write_text(json.dumps(_estimate(60, 228, 1470)))  # 20, 50 and 124 min
    kept = compare_store.base_row(compare_grid.Cell("ehr", "mostlyai", "dp-tabularargn", 4.0, 2), "ok")
    compare_store.CellStore(cells).put(kept)  # a cell that did run is never overwritten by an estimate
    est_mod.main(["record", "--out", str(estimate), "--cells", str(cells), "--limit-minutes", "30"])

    store = compare_store.CellStore(cells)
    marked = {k: r for k, r in store.rows.items() if r["status"] == "timeout"}
    assert sorted(marked) == sorted([f"ehr|mostlyai:dp-tabularargn|1|{s}|" for s in range(3)]
                                    + [f"ehr|mostlyai:dp-tabularargn|4|{s}|" for s in range(2)])
    assert all(not r["ran"] and r["reason"].startswith("not run: estimated at least") for r in marked.values())
    assert "at least 50 min" in marked["ehr|mostlyai:dp-tabularargn|1|0|"]["reason"]
    assert store.get("ehr|mostlyai:dp-tabularargn|4|2|")["status"] == "ok"
    assert store.get("ehr|mostlyai:tabularargn|non-DP|0|") is None  # 20 min: left for compare.py to run

    ran = []
    todo = compare_grid.build_cells(["ehr"], ["mostlyai"], None, [None, 1.0, 4.0], [0, 1, 2])
    compare_runner.run_cells(todo, store, lambda c: ran.append(c.key) or compare_store.base_row(c, "ok"), log=lambda _: None)
    assert sorted(ran) == [f"ehr|mostlyai:tabularargn|non-DP|{s}|" for s in range(3)]
    assert "not run: estimated at least 50 min" in compare_report.render_markdown(list(store.rows.values()),
                                                                       host={"cpu": "x", "cores": "2", "ram": "1",
                                                                             "platform": "p"})
