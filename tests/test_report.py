"""The evaluation suite, the report and the release commands.

The issue's done-when in tests: a copy of the training data handed over as "synthetic" is
flagged (exact copies 1, membership inference AUROC near 1, distance-to-closest share near 1)
and independent noise reports utility near chance — so each metric can fail. Then the report
is rebuilt from metrics.json alone, and `clinsynth run` / `evaluate` / `report` write what
DESIGN.md promises, with the privacy ledger on the page when the model is DP.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import clinsynth as cs
from clinsynth.cli import main
from clinsynth.data.datasets import simulate_trial
from clinsynth.data.io import write_table
from clinsynth.pipeline import split_holdout
from clinsynth.report.html import render

SECTION_IDS = ("summary", "guarantee", "fidelity", "longitudinal", "utility", "attacks", "about")


@pytest.fixture(scope="module")
def split():
    train, test = split_holdout(simulate_trial(n=1500, seed=3), "arm", seed=0)
    return train, test, cs.Schema.infer(train, target="arm")


@pytest.fixture(scope="module")
def copied(split):
    train, test, schema = split
    return cs.evaluate(real_train=train, real_test=test, synthetic=train.copy(), schema=schema).to_dict()


@pytest.fixture(scope="module")
def noise(split):
    """Every column drawn independently from its own real marginal: right marginals, no signal."""
    train, test, schema = split
    rng = np.random.default_rng(0)
    fake = pd.DataFrame({c: rng.permutation(train[c].to_numpy()) for c in train.columns})
    return cs.evaluate(real_train=train, real_test=test, synthetic=fake, schema=schema).to_dict()


def _verdict(metrics, section):
    return next(v for v in metrics["verdicts"] if v["section"] == section)


def test_a_copy_of_the_training_data_is_flagged(copied):
    attacks = copied["privacy_attacks"]
    assert attacks["exact_copies"]["synthetic_rate"] == 1.0 and attacks["exact_copies"]["holdout_rate"] == 0.0
    assert attacks["membership_inference"]["auroc"] > 0.95
    assert attacks["distance_to_closest"]["share_closer_to_train"] > 0.95
    assert _verdict(copied, "privacy attacks")["level"] == "fail"
    assert _verdict(copied, "utility")["level"] == "pass"  # a copy is perfectly useful: only the attacks catch it
    assert copied["fidelity"]["detection_auroc"] < 0.6


def test_independent_noise_has_no_utility(split, noise):
    """A model fitted to noise is a random direction in the real feature space, so one noise table's
    TSTR AUROC swings around 0.5 (the trial's predictors are strong and correlated): the bar is on
    the mean over noise tables, and on the verdict of one."""
    from clinsynth.evaluate.utility import tstr

    train, test, schema = split
    aurocs = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        fake = pd.DataFrame({c: rng.permutation(train[c].to_numpy()) for c in train.columns})
        result = tstr(train, test, fake, schema, classifiers=("logistic_regression",), importance=False, n_bootstrap=0)
        aurocs.append(result.get("logistic_regression", "synthetic").auroc)
        assert result.get("logistic_regression", "real").auroc > 0.85
    assert abs(np.mean(aurocs) - 0.5) < 0.08, aurocs
    real = {s["classifier"]: s["auroc"] for s in noise["utility"]["scores"] if s["trained_on"] == "real"}
    synthetic = {s["classifier"]: s["auroc"] for s in noise["utility"]["scores"] if s["trained_on"] == "synthetic"}
    assert min(real.values()) > 0.85 and abs(np.mean(list(synthetic.values())) - 0.5) < 0.2
    assert _verdict(noise, "utility")["level"] != "pass"
    assert noise["fidelity"]["detection_auroc"] > 0.8  # right marginals, broken records: detected
    assert noise["privacy_attacks"]["membership_inference"]["auroc"] == pytest.approx(0.5, abs=0.08)


def test_the_page_is_drawn_from_the_metrics_alone(copied):
    html = render(json.loads(json.dumps(copied)))  # through JSON: nothing but metrics.json
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in html
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', html)) >= 5
    assert "no formal privacy guarantee" in html and "steward" in html
    assert "http://" not in html and "https://" not in html  # opens offline
    assert render(json.loads(json.dumps(copied))) == html  # the same metrics, the same page


def test_report_without_a_target_or_longitudinal_groups_still_renders(split):
    train, test, _ = split
    cols = ["age", "female", "race", "bmi", "glucose"]
    schema = cs.Schema.infer(train[cols])
    metrics = cs.evaluate(real_train=train[cols], real_test=test[cols], synthetic=test[cols], schema=schema).to_dict()
    assert metrics["utility"] is None and _verdict(metrics, "utility")["level"] == "info"
    html = render(metrics)
    assert "No target column" in html and "no longitudinal groups" in html


def test_evaluate_refuses_a_table_that_does_not_fit_the_schema(split):
    train, test, schema = split
    with pytest.raises(cs.InputError, match="synthetic table lacks schema column.*glucose"):
        cs.evaluate(real_train=train, real_test=test, synthetic=train.drop(columns=["glucose"]), schema=schema)


# --- the commands -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dp_release(tmp_path_factory):
    """`clinsynth run --epsilon 1` on a small trial, 2 epochs: a DP release end to end."""
    root = tmp_path_factory.mktemp("dp")
    data = root / "trial.csv"
    write_table(simulate_trial(n=3000, seed=2), data)
    out = root / "release"
    code = main(["run", str(data), "--target", "arm", "--model", "acgan", "--epsilon", "1", "--epochs", "2", "--select", "last",
                 "--quiet", "--out", str(out)])
    assert code == 0
    return data, out


def test_run_writes_a_dp_release_with_its_ledger_on_the_page(dp_release):
    data, out = dp_release
    assert {p.name for p in out.iterdir()} == {"share", "steward", ".clinsynth.json"}
    assert {p.name for p in (out / "share").iterdir()} == {"synthetic.csv", "model", "guarantee.html"}
    assert {p.name for p in (out / "steward").iterdir()} == {"report.html", "metrics.json", "manifest.json"}
    metrics = json.loads((out / "steward" / "metrics.json").read_text())
    guarantee = metrics["guarantee"]
    assert guarantee["differentially_private"] and guarantee["model"] == "dp-acgan"
    assert guarantee["spent"] <= guarantee["epsilon"] == 1.0 and len(guarantee["charges"]) >= 2
    assert _verdict(metrics, "privacy guarantee")["level"] == "pass"
    html = (out / "steward" / "report.html").read_text()
    assert "differentially private</strong>" in html and "dp-sgd" in html and "no formal privacy guarantee" not in html
    page = (out / "share" / "guarantee.html").read_text()  # the shareable page: the ledger, no real-data figure
    assert "differentially private</strong>" in page and "dp-sgd" in page and "data:image" not in page
    manifest = json.loads((out / "steward" / "manifest.json").read_text())
    assert manifest["config"]["epsilon"] == 1.0 and manifest["model"]["name"] == "dp-acgan"
    assert manifest["model"]["params"]["privacy"]["delta"] is None  # the budget the model was given
    assert manifest["model"]["resolved_params"]["privacy"]["delta"] == guarantee["delta"] > 0   # δ as the ledger chose it
    assert manifest["input"]["file_sha256"] == __import__("hashlib").sha256(data.read_bytes()).hexdigest()
    assert manifest["files"]["synthetic"]["sha256"] == __import__("hashlib").sha256((out / "share" / "synthetic.csv").read_bytes()).hexdigest()


def test_evaluate_and_report_commands_rebuild_the_same_numbers(dp_release, tmp_path):
    data, out = dp_release
    from clinsynth.data.io import read_table

    train, test = split_holdout(read_table(data), "arm", seed=0)
    write_table(train, tmp_path / "train.csv")
    write_table(test, tmp_path / "test.csv")
    code = main(["evaluate", "--real-train", str(tmp_path / "train.csv"), "--real-test", str(tmp_path / "test.csv"),
                 "--synthetic", str(out / "share" / "synthetic.csv"), "--model", str(out / "share" / "model"), "--quiet",
                 "--out", str(tmp_path / "metrics.json"), "--report", str(tmp_path / "report.html")])
    assert code == 0
    again = json.loads((tmp_path / "metrics.json").read_text())
    first = json.loads((out / "steward" / "metrics.json").read_text())
    assert again["guarantee"]["spent"] == pytest.approx(first["guarantee"]["spent"])
    assert again["privacy_attacks"]["membership_inference"]["auroc"] == pytest.approx(
        first["privacy_attacks"]["membership_inference"]["auroc"], abs=1e-9)
    assert main(["report", str(out / "steward" / "metrics.json"), "--out", str(tmp_path / "rebuilt.html")]) == 0
    assert (tmp_path / "rebuilt.html").read_text() == (out / "steward" / "report.html").read_text()


def test_report_command_refuses_a_file_that_is_not_metrics(tmp_path, capsys):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    assert main(["report", str(bad), "--out", str(tmp_path / "r.html")]) == 1
    assert "is not valid JSON" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "absent.json")]) == 1
    assert "does not exist" in capsys.readouterr().err
    bad.write_text('{"dataset": {}}')
    assert main(["report", str(bad), "--out", str(tmp_path / "r.html")]) == 1
    assert "not a clinsynth metrics file: it lacks clinsynth_version" in capsys.readouterr().err


def test_run_refuses_bad_options_before_training(tmp_path, capsys):
    data = tmp_path / "trial.csv"
    write_table(simulate_trial(n=200, seed=1), data)
    (tmp_path / "taken").write_text("a file")
    assert main(["run", str(data), "--target", "arm", "--out", str(tmp_path / "taken"), "--quiet"]) == 1
    assert "is a file" in capsys.readouterr().err
    assert main(["run", str(data), "--target", "arm", "--format", "xlsx", "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "csv or parquet" in capsys.readouterr().err
    assert main(["run", str(data), "--target", "arm", "--param", "wings=2", "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "has no hyperparameter wings" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken", "trial.csv"]  # no release, staging or lock left
