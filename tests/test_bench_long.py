"""bench/compare.py on a long table of visits: the long_trial dataset (split by patient, meta.json with
the patient id and column levels), the data shaping of the sequence peers' adapters (SDV's PAR,
mostlyai-engine's subject + visit tables) and the patient-level scoring. No peer venv needed: the
adapters' shaping is plain pandas, and the end-to-end cell is clinsynth's."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinsynth.data.long_trial import simulate_long_trial

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO / "bench"))  # bench's modules import each other by name
try:
    import compare
    import compare_datasets
    import compare_grid
    import compare_report
    import compare_scoring
    import run_cell
    from adapters import mostlyai_long, sdv_par
    from adapters import sdv as sdv_adapter
finally:
    sys.path.remove(str(REPO / "bench"))

N_PATIENTS = 120


def _small() -> pd.DataFrame:
    return simulate_long_trial(N_PATIENTS, seed=3)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data = compare_datasets.Dataset("tiny_long", "event", _small, patient="patient_id", time="day")
    return compare_datasets.prepare_dataset(data, tmp_path_factory.mktemp("work"))


def test_long_trial_meets_the_sequence_models_only():
    assert compare_datasets.DATASETS["long_trial"].kind == "long"
    cells = compare_grid.build_cells(["long_trial", "trial"], list(compare_grid.TOOLS), None, [None, 1.0, 4.0], [0])
    long = {(c.tool, c.synthesizer, c.epsilon) for c in cells if c.dataset == "long_trial"}
    assert long == {("clinsynth", "auto", None), ("clinsynth", "auto", 1.0), ("clinsynth", "auto", 4.0),
                    ("sdv", "par", None), ("mostlyai", "tabularargn", None), ("mostlyai", "dp-tabularargn", 1.0),
                    ("mostlyai", "dp-tabularargn", 4.0)}
    assert not any(c.synthesizer == "par" for c in cells if c.dataset == "trial")


def test_meta_names_the_patient_and_levels_and_the_split_keeps_patients_whole(prepared):
    meta = prepared.meta
    assert (meta["patient"], meta["time"], meta["target"]) == ("patient_id", "day", "event")
    by = {c["name"]: c for c in meta["columns"]}
    assert by["patient_id"]["kind"] == "id" and "level" not in by["day"]
    assert {n for n, c in by.items() if c.get("level") == "patient"} == {"arm", "sex", "age", "race", "diabetes", "event"}
    assert {n for n, c in by.items() if c.get("level") == "visit"} == {"sbp", "dbp", "egfr", "glucose", "meds"}
    train, test = prepared.train, prepared.test
    assert not set(train["patient_id"]) & set(test["patient_id"])
    assert meta["n_train"] + meta["n_test"] == N_PATIENTS == train["patient_id"].nunique() + test["patient_id"].nunique()
    assert meta["n_train_rows"] == len(train) and meta["n_train"] == train["patient_id"].nunique()
    schema = prepared.schema
    assert schema.is_long and (schema.patient, schema.time) == ("patient_id", "day")
    schema.validate(train)


def test_run_cell_reads_ids_as_text_and_counts_patients(prepared):
    meta = run_cell.read_meta(str(prepared.meta_json))
    train = run_cell.read_train(str(prepared.train_csv), meta)
    assert train["patient_id"].map(type).eq(str).all()
    assert run_cell.n_units(train, meta) == prepared.meta["n_train"] and run_cell.unit(meta) == "patients"
    out = run_cell.coerce_output(train.assign(patient_id=np.arange(len(train)) // 3), meta, list(train.columns))
    assert out["patient_id"].iloc[:4].tolist() == ["0", "0", "0", "1"]
    assert run_cell.check_output(out, meta)["unknown_categories"] == {}


def test_mostlyai_subject_and_visit_tables_join_back_to_the_visits(prepared):
    train = prepared.train
    meta = prepared.meta
    subjects, visits = mostlyai_long.subject_table(train, meta), mostlyai_long.visit_table(train, meta)
    assert list(subjects.columns) == ["patient_id", "arm", "sex", "age", "race", "diabetes", "event"]
    assert len(subjects) == train["patient_id"].nunique() and subjects["patient_id"].is_unique
    assert list(visits.columns) == ["patient_id", "day", "sbp", "dbp", "egfr", "glucose", "meds"]
    assert len(visits) == len(train) and str(visits["day"].dtype) == "Int64"
    joined = mostlyai_long.join(subjects, visits, meta)
    assert list(joined.columns) == list(train.columns)
    key = ["patient_id", "day"]
    a = joined.sort_values(key).reset_index(drop=True)
    b = train.sort_values(key).reset_index(drop=True)
    kinds = {c["name"]: c["kind"] for c in meta["columns"]}
    for col in train.columns:
        if kinds[col] in ("integer", "continuous"):
            np.testing.assert_array_equal(a[col].astype("float64").to_numpy(), b[col].to_numpy(float), err_msg=col)
        else:
            assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), col
    assert mostlyai_long.synthetic_ids(3) == ["M000001", "M000002", "M000003"]


def test_mostlyai_dp_budget_is_split_over_the_two_models_and_adds_up():
    (e1, d1), (e2, d2) = mostlyai_long.budgets(4.0, 1e-5, 0.25)
    assert (e1, e2) == (1.0, 3.0) and e1 + e2 == 4.0 and d1 + d2 == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="subject_share"):
        mostlyai_long.budgets(1.0, 1e-5, 1.0)


def test_par_metadata_names_the_sequence_and_its_context(prepared):
    meta = prepared.meta
    md = sdv_par.metadata_dict(meta, sdv_adapter._metadata_dict(meta))
    table = md["tables"][sdv_par.TABLE]
    assert (table["sequence_key"], table["sequence_index"]) == ("patient_id", "day")
    assert list(table["columns"]) == [c["name"] for c in meta["columns"]]  # the data's order: no SDV warning
    assert table["columns"]["patient_id"] == {"sdtype": "id"}
    assert table["columns"]["day"]["sdtype"] == "numerical" and table["columns"]["race"]["sdtype"] == "categorical"
    assert sdv_par.context_columns(meta) == ["arm", "sex", "age", "race", "diabetes", "event"]
    shaped = sdv_par.prepare(prepared.train, meta, sdv_adapter._prepare(prepared.train, meta))
    assert shaped["patient_id"].is_monotonic_increasing
    assert (shaped.groupby("patient_id")["day"].diff().dropna() > 0).all()


def test_long_scores_are_per_patient_and_catch_times_that_run_backwards(prepared):
    train, test = prepared.train, prepared.test
    good = compare_scoring.score(train, test, test.copy(), prepared.schema, 0)
    assert good["strictly_increasing"] == 1.0 and good["n_synthetic_patients"] == prepared.meta["n_test"]
    assert good["visits_ks"] < 0.25 and 0 <= good["detection_auroc"] <= 1
    backwards = test.copy()
    backwards["day"] = -backwards["day"]  # rows as given, times falling within every patient of 2+ visits
    bad = compare_scoring.score(train, test, backwards, prepared.schema, 0)
    multi = (test.groupby("patient_id").size() > 1).mean()
    assert bad["strictly_increasing"] == pytest.approx(1 - multi)


def test_the_long_table_shows_patient_shape_columns():
    assert [m.key for m in compare_report.metrics_for("long_trial")][7:10] == ["visits_ks", "gaps_ks",
                                                                                 "strictly_increasing"]
    assert compare_report.metrics_for("trial") == compare_report.METRICS


def test_end_to_end_clinsynth_auto_on_a_small_long_table(tmp_path, monkeypatch):
    data = compare_datasets.Dataset("tiny_long", "event", _small, patient="patient_id", time="day")
    monkeypatch.setitem(compare_datasets.DATASETS, "tiny_long", data)
    args = ["--datasets", "tiny_long", "--tools", "clinsynth", "--synthesizers", "auto", "--seeds", "0",
            "--epsilons", "none", "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")]
    assert compare.main(args) == 0
    row = pd.read_csv(tmp_path / "results" / "compare.csv").iloc[0]
    assert row["status"] == "ok", row["reason"]
    meta = json.loads((tmp_path / "work" / "tiny_long" / "meta.json").read_text())
    assert row["n_sampled"] == row["n_train"] == meta["n_train"]  # patients, not rows
    assert row["n_train_rows"] == meta["n_train_rows"] > meta["n_train"]
    assert json.loads(row["params"])["model"] == "visitchain"
    assert row["strictly_increasing"] == 1.0 and 0 <= row["visits_ks"] <= 1 and 0 < row["tstr_trtr_lr"] < 1.5
    assert "visits/patient KS" in (tmp_path / "results" / "compare.md").read_text()


def test_record_writes_over_limit_peer_cells_as_not_run(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import bench_peers_long
        import compare_store
    finally:
        sys.path.remove(str(REPO / "bench"))
    models = {"subject": {"seconds_per_epoch": 10.0}, "visits": {"seconds_per_epoch": 150.0}}
    est = {"par": {"tool_version": "2.0.0", "fit_wall_seconds": 240.0, "fit_cpu_seconds": 30.0, "default_epochs": 128,
                   "cell_seconds_estimate": 30720.0, "load_average_at_start": [5.0], "load_average_at_end": [6.0]},
           "mostlyai": {"tool_version": "2.7.3", "non_dp": {"models": models, "min_epochs": 5,
                                                            "cell_seconds_lower_bound": 880.0},
                        "dp": {"models": models, "max_epochs": 0.25,
                               "cells": {"1": {"subject": {"min_epochs": 1}, "cell_seconds_lower_bound": 40.0},
                                         "4": {"subject": {"min_epochs": 5}, "cell_seconds_lower_bound": 2000.0}}}}}
    out, cells = tmp_path / "peers_long.json", tmp_path / "cells.jsonl"
    out.write_text(json.dumps(est))
    bench_peers_long.main(["record", "--out", str(out), "--cells", str(cells), "--seeds", "0", "1"])
    rows = compare_store.CellStore(cells).rows
    assert set(rows) == {"long_trial|sdv:par|non-DP|0|", "long_trial|sdv:par|non-DP|1|",
                         "long_trial|mostlyai:dp-tabularargn|4|0|", "long_trial|mostlyai:dp-tabularargn|4|1|"}
    par = rows["long_trial|sdv:par|non-DP|0|"]
    assert par["status"] == "timeout" and par["ran"] is False and par["estimated_seconds"] == 30720.0
    assert "about 512 min" in par["reason"] and "128 epochs" in par["reason"]
    assert "at least 33 min" in rows["long_trial|mostlyai:dp-tabularargn|4|0|"]["reason"]
