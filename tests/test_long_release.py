"""`clinsynth run visits.csv --patient-col … --time-col …`: a long-format table becomes a release of
synthetic patients, split by patient, with a patient-level guarantee under --epsilon (issue 21)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clinsynth.cli import main
from clinsynth.data.long_trial import simulate_long_trial


@pytest.fixture(scope="module")
def visits_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "visits.csv"
    simulate_long_trial(600, seed=2).to_csv(path, index=False)
    return path


def _run(visits_csv: Path, out: Path, *extra: str) -> int:
    return main(["run", str(visits_csv), "--target", "event", "--patient-col", "patient_id", "--time-col", "day",
                 "--out", str(out), "--quiet", "--evaluate", "none", *extra])


def test_long_release_has_patients_split_whole(visits_csv, tmp_path):
    out = tmp_path / "rel"
    assert _run(visits_csv, out) == 0
    manifest = json.loads((out / "steward" / "manifest.json").read_text())
    assert manifest["model"]["choice"]["chosen"] == "visitchain"
    assert manifest["split"]["by"] == "patient"
    assert manifest["split"]["n_train_patients"] + manifest["split"]["n_test_patients"] == 600
    synthetic = pd.read_csv(out / "share" / "synthetic.csv")
    assert synthetic["patient_id"].nunique() == manifest["split"]["n_train_patients"]
    assert synthetic.groupby("patient_id")["day"].apply(lambda d: d.is_monotonic_increasing and d.is_unique).all()
    assert synthetic.groupby("patient_id")["arm"].nunique().max() == 1  # per-patient columns stay per patient


def test_long_release_under_dp_is_per_patient(visits_csv, tmp_path):
    out = tmp_path / "dp"
    assert _run(visits_csv, out, "--epsilon", "1") == 0
    manifest = json.loads((out / "steward" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "dp-visitchain"
    assert manifest["privacy_unit"].startswith("patient (all rows of one patient)")
    assert "Privacy unit: patient (all rows of one patient)" in (out / "share" / "guarantee.html").read_text()


def test_long_options_are_checked(visits_csv, tmp_path, capsys):
    assert main(["run", str(visits_csv), "--patient-col", "patient_id", "--out", str(tmp_path / "x")]) == 1
    assert "needs both --patient-col and --time-col" in capsys.readouterr().err
    assert _run(visits_csv, tmp_path / "y", "--max-visits", "5") == 1
    err = capsys.readouterr().err
    assert "have more than 5 visits" in err and "--truncate-visits" in err
    assert not (tmp_path / "y").exists()
    assert _run(visits_csv, tmp_path / "z", "--max-visits", "5", "--truncate-visits") == 0
    synthetic = pd.read_csv(tmp_path / "z" / "share" / "synthetic.csv")
    assert synthetic.groupby("patient_id").size().max() <= 5


def test_evaluation_of_a_long_table_compares_patients(tmp_path):
    from clinsynth.evaluate.suite import evaluate
    from clinsynth.models.registry import create
    from clinsynth.pipeline import split_patients_holdout
    from clinsynth.schema import Schema

    df = simulate_long_trial(500, seed=3)
    schema = Schema.infer(df, target="event", patient="patient_id", time="day")
    train, test = split_patients_holdout(df, "patient_id", "event", 0.3, seed=0)
    synthetic = create("visitchain", seed=0).fit(train, schema).sample(train["patient_id"].nunique(), seed=0)
    result = evaluate(train, test, synthetic, schema, level="fast", seed=0)
    metrics = result.to_dict()
    patients = metrics["patients"]
    assert patients["unit"] == "patient"
    assert patients["ordering"]["synthetic"]["strictly_increasing"] == 1.0
    assert patients["visits_per_patient"]["ks"] < 0.15
    # every part reads one record per patient: the attacks' training side is the training patients
    n_train = train["patient_id"].nunique()
    assert metrics["dataset"]["n_train"] == n_train and metrics["dataset"]["n_synthetic"] == n_train
    assert metrics["privacy_attacks"]["exact_copies"]["n_holdout"] == test["patient_id"].nunique()
    assert {"n_visits", "follow_up_days", "sbp_first", "sbp_last"} <= set(patients["features"])
    html = result.to_html(tmp_path / "report.html").read_text()
    assert 'id="patients"' in html and "Within-patient correlation" in html


@pytest.mark.parametrize("command", ["fit", "run"])
def test_the_neural_sequence_model_fits_from_the_command_line(visits_csv, tmp_path, command):
    """`fit --model visitrnn` failed with "visitrnn writes no checkpoints yet": the pipeline handed every
    model its checkpoint folder; only a model that writes checkpoints gets it now."""
    extra = ["--target", "event", "--evaluate", "none"] if command == "run" else []
    out = tmp_path / command
    assert main([command, str(visits_csv), "--patient-col", "patient_id", "--time-col", "day", "--model", "visitrnn",
                 "--epochs", "1", "--out", str(out), "--quiet", *extra]) == 0
    model_dir = out / "share" / "model" if command == "run" else out
    assert json.loads((model_dir / "config.json").read_text())["model"] == "visitrnn"
