"""bench/compare.py: aggregation, best-per-column marks, resume, failure propagation, meta.json,
and one real end-to-end run of a fast clinsynth cell (no peers, no scikit-survival needed)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(REPO / "bench"))  # bench/compare.py and its modules import each other by name
try:
    import compare
    import compare_datasets
    import compare_grid
    import compare_report
    import compare_runner
    import compare_scoring
    import compare_store
finally:
    sys.path.remove(str(REPO / "bench"))


def _row(seed, status="ok", dataset="d", tool="clinsynth", synth="acgan", eps=None, reason=None, **metrics):
    cell = compare_grid.Cell(dataset, tool, synth, eps, seed)
    return compare_store.base_row(cell, status, reason, **metrics)


# -- aggregation -------------------------------------------------------------------------------
def test_mean_and_sd_over_the_seeds_that_ran():
    rows = [_row(0, tstr_trtr_lr=0.8, fit_seconds=10.0), _row(1, tstr_trtr_lr=0.9, fit_seconds=12.0),
            _row(2, tstr_trtr_lr=1.0, fit_seconds=14.0), _row(3, "failed", reason="MemoryError: boom")]
    (group,) = compare_report.aggregate(rows)
    assert (group.n_seeds, group.n_ok) == (4, 3)
    mean, sd, n = group.stats["tstr_trtr_lr"]
    assert mean == pytest.approx(0.9) and sd == pytest.approx(0.1) and n == 3
    assert group.stats["fit_seconds"][:2] == pytest.approx((12.0, 2.0))
    assert group.reasons == ["failed: MemoryError: boom"]
    assert compare_report.fmt(group.stats["tstr_trtr_lr"], 3) == "0.900 ± 0.100"
    assert compare_report.fmt(compare_report.mean_sd([0.5]), 3) == "0.500"  # one seed: no spread shown
    assert compare_report.fmt(compare_report.mean_sd([]), 3) == "—"


def _group(name, eps=None, **means):
    g = compare_report.Group("d", "t", name, eps, "", n_seeds=1, n_ok=1)
    g.stats = {m.key: (means.get(m.key, math.nan), math.nan, 1 if m.key in means else 0)
               for m in compare_report.METRICS}
    return g


def test_best_per_column_follows_each_metric_direction():
    a = _group("a", tstr_trtr_rf=0.95, detection_auroc=0.9, dcr_share=0.40, mia_auroc=0.52, exact_copy_rate=0.0,
               fit_seconds=30.0, sample_rows_per_second=1000.0, fit_peak_rss_mb=900.0)
    b = _group("b", tstr_trtr_rf=0.90, detection_auroc=0.7, dcr_share=0.55, mia_auroc=0.45, exact_copy_rate=0.1,
               fit_seconds=10.0, sample_rows_per_second=50000.0, fit_peak_rss_mb=1500.0)
    marks = compare_report.best_marks([a, b])
    best = {m: name for (i, m) in marks for name in [("a", "b")[i]]}
    assert best == {"tstr_trtr_rf": "a", "detection_auroc": "b", "dcr_share": "b", "mia_auroc": "a",
                    "exact_copy_rate": "a", "fit_seconds": "b", "sample_rows_per_second": "b", "fit_peak_rss_mb": "a"}


def test_best_is_marked_within_each_epsilon_group_and_not_when_all_tie():
    groups = [_group("a", tstr_trtr_lr=0.9, detection_auroc=1.0), _group("b", tstr_trtr_lr=0.8, detection_auroc=1.0),
              _group("c", 1.0, tstr_trtr_lr=0.5), _group("d", 1.0, tstr_trtr_lr=0.6)]
    marks = compare_report.best_marks(groups)
    assert (0, "tstr_trtr_lr") in marks and (3, "tstr_trtr_lr") in marks
    assert (1, "tstr_trtr_lr") not in marks and (2, "tstr_trtr_lr") not in marks
    assert not any(m == "detection_auroc" for _, m in marks)  # 1.000 and 1.000: nothing to point out


def test_markdown_bolds_the_best_and_lists_cells_that_could_not_run():
    rows = [_row(s, synth="acgan", tstr_trtr_lr=v) for s, v in enumerate([0.8, 0.9, 1.0])]
    rows += [_row(s, synth="vae", tstr_trtr_lr=0.5) for s in range(3)]
    rows += [_row(0, "timeout", tool="sdv", synth="ctgan", reason="timed out after 3600 s")]
    text = compare_report.render_markdown(rows, host={"platform": "p", "cpu": "c", "cores": "2", "ram": "1 GiB"})
    acgan = next(ln for ln in text.splitlines() if ln.startswith("| clinsynth:acgan"))
    assert "**0.900 ± 0.100**" in acgan and "| 3/3 |" in acgan
    vae = next(ln for ln in text.splitlines() if ln.startswith("| clinsynth:vae"))
    assert "| 0.500 ± 0.000 |" in vae and "**" not in vae.split("|")[4]
    ctgan = next(ln for ln in text.splitlines() if ln.startswith("| sdv:ctgan"))
    assert "0/1" in ctgan and "timeout: timed out after 3600 s" in ctgan


# -- resume and failure propagation ----------------------------------------------------------------
class Recorder:
    def __init__(self, fail_seeds=(), status="failed"):
        self.calls, self.fail_seeds, self.status = [], set(fail_seeds), status

    def __call__(self, cell):
        self.calls.append(cell.key)
        if cell.seed in self.fail_seeds:
            return compare_store.base_row(cell, self.status, "ValueError: cannot handle this table")
        return compare_store.base_row(cell, "ok", None, tstr_trtr_lr=0.9)


def _cells(seeds=(0, 1, 2)):
    return compare_grid.build_cells(["breast_cancer"], ["sdv"], ["ctgan"], [None], list(seeds))


def test_finished_cells_are_skipped_on_a_second_run(tmp_path):
    store = compare_store.CellStore(tmp_path / "cells.jsonl")
    first = Recorder()
    compare_runner.run_cells(_cells(), store, first, log=lambda _: None)
    assert len(first.calls) == 3
    again = Recorder()
    added = compare_runner.run_cells(_cells(), compare_store.CellStore(tmp_path / "cells.jsonl"), again,
                                     log=lambda _: None)
    assert again.calls == [] and added == []


def test_not_installed_is_tried_again_and_failures_only_with_retry(tmp_path):
    store = compare_store.CellStore(tmp_path / "cells.jsonl")
    cells = _cells(seeds=(0,))
    store.put(compare_store.base_row(cells[0], "not installed", "no venv"))
    runner = Recorder(fail_seeds={0})
    compare_runner.run_cells(cells, store, runner, log=lambda _: None)
    assert len(runner.calls) == 1 and store.get(cells[0].key)["status"] == "failed"
    compare_runner.run_cells(cells, store, runner, log=lambda _: None)
    assert len(runner.calls) == 1  # a failure is a result
    compare_runner.run_cells(cells, store, Recorder(), retry_failed=True, log=lambda _: None)
    assert store.get(cells[0].key)["status"] == "ok"


@pytest.mark.parametrize("status", ["failed", "timeout"])
def test_a_hopeless_seed_0_spares_the_other_seeds(tmp_path, status):
    store = compare_store.CellStore(tmp_path / "cells.jsonl")
    runner = Recorder(fail_seeds={0}, status=status)
    compare_runner.run_cells(_cells(), store, runner, log=lambda _: None)
    assert len(runner.calls) == 1
    rows = [store.get(c.key) for c in _cells()]
    assert [r["status"] for r in rows] == [status] * 3
    assert {r["reason"] for r in rows} == {"ValueError: cannot handle this table"}
    assert [r["ran"] for r in rows] == [True, False, False]


def test_a_failed_later_seed_does_not_stop_the_others(tmp_path):
    store = compare_store.CellStore(tmp_path / "cells.jsonl")
    runner = Recorder(fail_seeds={1})
    compare_runner.run_cells(_cells(), store, runner, log=lambda _: None)
    assert len(runner.calls) == 3
    (group,) = compare_report.aggregate(store.rows.values())
    assert group.n_ok == 2 and group.reasons == ["failed: ValueError: cannot handle this table"]


def test_a_missing_venv_is_recorded_as_not_installed(tmp_path):
    paths = compare_runner.Paths(tmp_path / "work", tmp_path / "results", tmp_path / "no-peers",
                                 REPO / "bench" / "run_cell.py")
    (cell,) = _cells(seeds=(0,))
    row = compare_runner.run_one(cell, compare_datasets.DatasetFiles("breast_cancer", tmp_path), paths, 10, 100)
    assert row["status"] == "not installed" and "no-peers/sdv/bin/python" in row["reason"]


def test_cells_per_dataset_kind_epsilon_and_seed_order():
    cells = compare_grid.build_cells(["breast_cancer", "ehr"], ["clinsynth"], None, [None, 1.0], [1, 0])
    names = {(c.dataset, c.synthesizer) for c in cells}
    assert ("breast_cancer", "acgan") in names and ("ehr", "acgan") not in names
    assert ("ehr", "medgan") in names and ("breast_cancer", "medgan") not in names
    assert all((c.epsilon is None) != c.synthesizer.startswith("dp-") for c in cells if c.synthesizer != "auto")
    assert {(c.dataset, c.epsilon) for c in cells if c.synthesizer == "auto"} == \
        {("breast_cancer", None), ("breast_cancer", 1.0), ("ehr", None), ("ehr", 1.0)}  # auto: with and without DP
    assert [c.seed for c in cells[:2]] == [0, 1]
    picked = compare_grid.build_cells(["trial"], compare_grid.TOOLS, ["sdv:ctgan", "aim"], [None, 4.0], [0])
    assert {c.synthesizer for c in picked} == {"ctgan", "aim"}


# -- data ------------------------------------------------------------------------------------------
def test_meta_json_from_a_small_frame():
    df = pd.DataFrame({
        "x": [1.5, np.nan, 3.25, 2.0],
        "n": [3, 10, 7, 7],
        "flag": [0, 1, 1, 0],
        "yes": [True, False, True, True],
        "grade": pd.Categorical(["10", "2", "2", "10"], categories=["2", "10", "30"]),
        "city": ["b", "a", None, "a"],
        "y": [0, 1, 0, 1],
    })
    table, meta = compare_datasets.build_meta(df, "toy", "y")
    cols = {c["name"]: c for c in meta["columns"]}
    assert cols["x"] == {"name": "x", "kind": "continuous", "lower": 1.5, "upper": 3.25, "nullable": True}
    assert cols["n"] == {"name": "n", "kind": "integer", "lower": 3, "upper": 10, "nullable": False}
    assert cols["flag"]["kind"] == "binary" and cols["flag"]["categories"] == ["0", "1"]
    assert cols["yes"]["categories"] == ["0", "1"] and list(table["yes"]) == ["1", "0", "1", "1"]
    assert cols["grade"] == {"name": "grade", "kind": "binary", "categories": ["2", "10"], "nullable": False}
    assert cols["city"] == {"name": "city", "kind": "binary", "categories": ["a", "b"], "nullable": True}
    assert cols["y"]["kind"] == "binary" and list(table["y"]) == ["0", "1", "0", "1"]
    assert table["city"].isna().tolist() == [False, False, True, False]


def test_delta_offered_to_every_dp_tool_is_the_ledgers_default(tmp_path):
    """One δ rule: the ledger's. 12,000 training rows is where the benchmark's old rule, min(1e-5, 1/(10 n)),
    gave 8.3e-6 while a clinsynth model on the same rows picks 8e-6 (rounded down to one digit)."""
    from clinsynth.privacy.ledger import default_delta

    rng = np.random.default_rng(0)
    big = compare_datasets.Dataset("big", "y", lambda: pd.DataFrame({"x": rng.normal(size=15_000),
                                                                     "y": rng.integers(0, 2, 15_000)}))
    meta = compare_datasets.prepare_dataset(big, tmp_path).meta
    assert meta["n_train"] == 12_000
    assert meta["delta"] == default_delta(12_000) == 8e-6
    small = compare_datasets.prepare_dataset(compare_datasets.Dataset("small", "diagnosis", _tiny), tmp_path).meta
    assert small["delta"] == default_delta(small["n_train"]) == 1e-5  # every committed dataset: n_train <= 10,000


def test_peer_tables_are_coerced_to_the_schema():
    meta = {"columns": [{"name": "x", "kind": "continuous", "lower": 0, "upper": 1},
                        {"name": "c", "kind": "binary", "categories": ["0", "1"]}]}
    synth = pd.DataFrame({"x": ["0.5", "oops", ""], "c": [1.0, "0", "7"], "extra": [1, 2, 3]})
    out, notes = compare_scoring.coerce_synthetic(synth, meta)
    assert out["x"].tolist()[0] == 0.5 and out["x"].isna().tolist() == [False, True, True]
    assert out["c"].tolist() == ["1", "0", "7"]
    assert any("x: 1 non-numeric" in n for n in notes) and any("c: 1 value(s) outside" in n for n in notes)
    with pytest.raises(ValueError, match="lacks 1 column"):
        compare_scoring.coerce_synthetic(synth.drop(columns=["c"]), meta)


# -- a real run -----------------------------------------------------------------------------------
def _tiny() -> pd.DataFrame:
    from clinsynth.data.datasets import load_breast_cancer

    df = load_breast_cancer()
    return df.groupby("diagnosis").head(60)[["mean_radius", "mean_texture", "mean_area", "worst_smoothness",
                                             "diagnosis"]].reset_index(drop=True)


def test_end_to_end_with_a_fast_clinsynth_cell(tmp_path, monkeypatch):
    monkeypatch.setitem(compare_datasets.DATASETS, "tiny", compare_datasets.Dataset("tiny", "diagnosis", _tiny))
    args = ["--datasets", "tiny", "--tools", "clinsynth", "--synthesizers", "vae", "--seeds", "0",
            "--param", "epochs=2", "--speed-rows", "500", "--work-dir", str(tmp_path / "work"),
            "--results-dir", str(tmp_path / "results")]
    assert compare.main(args) == 0
    meta = json.loads((tmp_path / "work" / "tiny" / "meta.json").read_text())
    assert (meta["n_train"], meta["n_test"], meta["delta"]) == (96, 24, 1e-5)
    frame = pd.read_csv(tmp_path / "results" / "compare.csv")
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["status"] == "ok", row["reason"]
    assert (row["tool"], row["synthesizer"], row["cell_params"], row["n_sampled"]) == ("clinsynth", "vae", "epochs=2", 96)
    for key in ("tstr_trtr_lr", "tstr_trtr_rf", "tstr_trtr_gb"):
        assert 0 < row[key] < 1.5
    for key in ("detection_auroc", "dcr_share", "mia_auroc"):
        assert 0 <= row[key] <= 1
    assert 0 <= row["exact_copy_rate"] <= 1 and row["fit_seconds"] > 0 and row["sample_rows_per_second"] > 0
    assert row["fit_peak_rss_mb"] > row["baseline_rss_mb"] > 0
    assert json.loads(row["params"])["epochs"] == 2
    assert "| clinsynth:vae [epochs=2] | non-DP | 1/1 |" in (tmp_path / "results" / "compare.md").read_text()

    log = tmp_path / "results" / "compare_cells.jsonl"
    assert compare.main(args) == 0  # finished: skipped, nothing appended
    assert len(log.read_text().splitlines()) == 1
    assert compare.main(args + ["--rescore"]) == 0  # scored again from the kept table, same numbers
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    again = json.loads(lines[1])
    assert again["tstr_trtr_rf"] == pytest.approx(row["tstr_trtr_rf"]) and again["mia_auroc"] == pytest.approx(row["mia_auroc"])


def test_speed_pass_times_repeated_draws_without_scoring_and_keeps_scored_cells_apart(tmp_path, monkeypatch):
    monkeypatch.setitem(compare_datasets.DATASETS, "tiny", compare_datasets.Dataset("tiny", "diagnosis", _tiny))
    args = ["--datasets", "tiny", "--tools", "clinsynth", "--synthesizers", "bayesnet", "--seeds", "0",
            "--speed-rows", "2000", "--throughput-seconds", "0.3", "--work-dir", str(tmp_path / "work"),
            "--results-dir", str(tmp_path / "results"), "--speed-pass"]
    assert compare.main(args) == 0
    assert not (tmp_path / "results" / "compare_cells.jsonl").exists()  # the scored grid is untouched
    row = pd.read_csv(tmp_path / "results" / "speed.csv").iloc[0]
    assert row["status"] == "ok", row["reason"]
    assert row["throughput_draws"] > 1 and row["throughput_seconds"] >= 0.3
    assert row["throughput_rows_per_second"] == pytest.approx(
        row["throughput_draws"] * 2000 / row["throughput_seconds"], rel=1e-3)
    cells = [json.loads(x) for x in (tmp_path / "results" / "speed_cells.jsonl").read_text().splitlines()]
    assert "tstr_trtr_lr" not in cells[0]  # not scored
    assert (tmp_path / "work" / "tiny" / "speed_cells").is_dir() and not (tmp_path / "work" / "tiny" / "cells").exists()
    assert "| clinsynth:bayesnet | non-DP | 1/1 |" in (tmp_path / "results" / "speed.md").read_text()


def test_speed_table_divides_each_throughput_by_the_fastest_peers():
    rows = [_row(0, synth="bayesnet", throughput_rows_per_second=6e6, sample_rows_per_second=3e6, throughput_draws=300),
            _row(0, tool="sdv", synth="tvae", throughput_rows_per_second=1.5e5, throughput_draws=8),
            _row(0, tool="smartnoise", synth="mst", eps=1.0, throughput_rows_per_second=1e5, throughput_draws=5),
            _row(0, tool="sdv", synth="ctgan", status="timeout", reason="timed out after 9 s")]
    text = "\n".join(compare_report.speed_table(rows, "d"))
    assert "| clinsynth:bayesnet | non-DP | 1/1 | 3,000,000 | 6,000,000 | 300 | 40.0× |" in text
    assert "| smartnoise:mst | ε = 1 | 1/1 | — | 100,000 | 5 | 0.7× |" in text
    assert "timeout: timed out after 9 s" in text
    assert "Fastest peer: sdv:tvae (non-DP), 150,000 rows/s. Slowest clinsynth model: clinsynth:bayesnet (non-DP), 40.0× it." in text


# -- the clinsynth adapter ---------------------------------------------------------------------------
def _load_adapter():
    spec = importlib.util.spec_from_file_location("bench_adapter_clinsynth", REPO / "bench" / "adapters" / "clinsynth.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_adapter_declares_meta_bounds_and_categories_public():
    adapter = _load_adapter()
    train = pd.DataFrame({"x": [1.0, 2.5, np.nan, 3.0], "n": [1.0, 2.0, 3.0, 4.0], "g": ["a", "a", "a", "a"],
                          "y": ["0", "1", "0", "1"]})
    meta = {"target": "y", "columns": [
        {"name": "x", "kind": "continuous", "lower": 0.0, "upper": 10.0, "nullable": True},
        {"name": "n", "kind": "integer", "lower": 0, "upper": 9, "nullable": False},
        {"name": "g", "kind": "binary", "categories": ["a", "b"], "nullable": False},
        {"name": "y", "kind": "binary", "categories": ["0", "1"], "nullable": False}]}
    schema = adapter.table_schema(train, meta, "y")
    x, n, g = schema.column("x"), schema.column("n"), schema.column("g")
    assert x.public and x.bounds == (0.0, 10.0) and x.missing == "indicator"
    assert (n.kind, n.bounds, n.decimals) == ("integer", (0.0, 9.0), 0)
    assert (g.kind, g.categories, g.public) == ("binary", ["a", "b"], True)  # train holds only "a"
    schema.validate(train)


def test_adapter_wide_codes_round_trip_through_a_code_matrix():
    adapter = _load_adapter()
    wide = pd.DataFrame({"age": [30.0, 40.0, 50.0], "sex": ["F", "M", "F"],
                         "A1": ["1", "0", "0"], "B2": ["0", "0", "0"], "C3": ["1", "1", "0"]})
    codes = ["A1", "B2", "C3"]
    matrix = adapter.to_code_matrix(wide, codes)
    assert matrix.vocabulary == tuple(codes) and matrix.nnz == 3 and list(matrix.static.columns) == ["age", "sex"]
    back = adapter.from_code_matrix(matrix, list(wide.columns), codes)
    assert back.astype(str).equals(wide.astype(str))
    fewer = matrix.subset([0, 1, 2])  # a vocabulary without C3 (DP may drop codes): all "0"
    fewer = type(matrix)(fewer.matrix[:, [0, 1]], ("A1", "B2"), fewer.patient_ids, True, fewer.static)
    assert adapter.from_code_matrix(fewer, list(wide.columns), codes)["C3"].astype(str).tolist() == ["0", "0", "0"]
