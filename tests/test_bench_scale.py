"""bench_scale.py's results file: a run adds its cell and keeps the others (the Spark file held the
10⁵, 10⁶ and 10⁷ cells, and a re-run wrote a single cell over all three)."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import bench_scale  # noqa: E402


def test_a_run_replaces_its_own_cell_and_keeps_the_others():
    old = {"mode": "spark", "note": "ratios, not seconds", "cells": [{"rows": 10**5, "runs": ["a"]}, {"rows": 10**6, "runs": ["b"]}]}
    merged = bench_scale.merge_cell(old, "spark", {"rows": 10**6, "runs": ["new"]})
    assert merged["note"] == "ratios, not seconds"
    assert [(c["rows"], c["runs"]) for c in merged["cells"]] == [(10**5, ["a"]), (10**6, ["new"])]
    merged = bench_scale.merge_cell(merged, "spark", {"rows": 10**7, "runs": ["c"]})
    assert [c["rows"] for c in merged["cells"]] == [10**5, 10**6, 10**7]


def test_a_file_in_the_single_run_format_becomes_the_first_cell():
    single = {"mode": "compare", "dir": "/tmp/x", "runs": [{"model": "bayesnet", "duckdb": {"rows": 2 * 10**6}}], "machine": {"cpus": 2}}
    merged = bench_scale.merge_cell(single, "compare", {"rows": 2 * 10**7, "runs": []})
    assert [c["rows"] for c in merged["cells"]] == [2 * 10**6, 2 * 10**7]
    assert merged["cells"][0]["machine"] == {"cpus": 2} and "runs" not in merged
    assert bench_scale.merge_cell(None, "engine", {"rows": 5, "runs": []}) == {"mode": "engine", "cells": [{"rows": 5, "runs": []}]}
